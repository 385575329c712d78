#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A real QEMU (qemu-system-x86_64, started paused: no guest runs) with its
# guest RAM from a view, in both ways doc/snapfs.8 gives for QEMU 7.2:
# memory-backend-file share=off under -o open_rw=private (QEMU opens the
# file O_RDWR and maps it private) and readonly=on. Checks, against a
# reference merged here:
# - pmemsave of all guest RAM equals the reference outside QEMU's ROM
#   window (0xA0000-0xFFFFF, where the BIOS shows through);
# - a publish and a rollback while QEMUs hold their mappings: an old QEMU
#   keeps its bytes, a new one sees the new chain;
# - a write into guest RAM through the gdbstub shows in the next pmemsave
#   but never reaches STORE (every layer's checksum unchanged);
# - without open_rw=private the share=off start fails with EROFS and the
#   daemon logs one line naming QEMU and what to use instead;
# - on an O_RDWR open, shared mappings, write, truncate and fallocate fail
#   (rwprobe).
. ./tests/mount/lib.sh

QEMU=$(command -v qemu-system-x86_64 || true)
QMPCTL="$abs_top_builddir/tests/tools/qmpctl"
if [ -z "$QEMU" ]; then
	[ -n "${CI:-}" ] && fail "CI must have qemu-system-x86 (contrib/install-deps.sh)"
	skip "qemu-system-x86_64 not found (Debian: qemu-system-x86)"
fi
setup

MIB=32
SIZE=$((MIB << 20))
QEMUS=()

# Stops every QEMU started here (by pid), then the usual cleanup.
qemu_cleanup() {
	local rc=$? p
	for p in "${QEMUS[@]}"; do
		kill "$p" 2>/dev/null
	done
	(exit "$rc")
	cleanup
}
trap qemu_cleanup EXIT

# start_qemu ID MNT BACKEND_OPTS [QEMU ARGS...]: starts a paused QEMU whose
# guest RAM is MNT/vm1/memory.bin with memory-backend-file options
# BACKEND_OPTS, QMP on $T/ID.qmp. -daemonize returns once QEMU is set up
# (its sockets listen), so nothing is polled. Returns QEMU's status.
start_qemu() {
	local id=$1 mnt=$2 opts=$3
	shift 3
	"$QEMU" -S -machine pc,accel=kvm:tcg -display none -nodefaults -m "${MIB}M" \
		-object "memory-backend-file,id=ram,size=${MIB}M,mem-path=$mnt/vm1/memory.bin,$opts" \
		-machine memory-backend=ram -qmp "unix:$T/$id.qmp,server=on,wait=off" \
		-daemonize -pidfile "$T/$id.pid" "$@" >"$T/$id.out" 2>&1 || return 1
	QEMUS+=("$(cat "$T/$id.pid")")
}

# pmemsave ID FILE: all guest RAM of QEMU ID into FILE.
pmemsave() {
	"$QMPCTL" qmp "$T/$1.qmp" \
		"{\"execute\":\"pmemsave\",\"arguments\":{\"val\":0,\"size\":$SIZE,\"filename\":\"$2\"}}" \
		>/dev/null || fail "pmemsave of $1 failed"
}

# same_outside_rom A B: A and B (guest RAM images) are equal outside
# 0xA0000-0xFFFFF.
same_outside_rom() {
	cmp -n $((0xA0000)) "$1" "$2" >/dev/null &&
		cmp -i $((0x100000)) "$1" "$2" >/dev/null
}

# check_guest ID REF WHAT: QEMU ID's guest RAM equals REF outside the ROM.
check_guest() {
	pmemsave "$1" "$T/$1.dump"
	same_outside_rom "$T/$1.dump" "$2" || fail "$3: guest RAM of $1 differs from the reference"
	rm -f "$T/$1.dump"
}

layer_sums() {
	(cd "$T/store/vm1" && sha256sum memory.bin.*)
}

# ---- a store: a base with a hole, one diff; references merged here ----
mkdir -p "$T/store/vm1"
base=$T/store/vm1/memory.bin.1.base
head -c "$SIZE" /dev/urandom >"$base" || fail "cannot write the base"
fallocate -p -o $((8 << 20)) -l $((1 << 20)) "$base" || fail "cannot punch a hole"
cp "$base" "$T/ref1"
# The diff: 8 random pages, one of them zeros (data that hides the base),
# written in place under a dot-name, published below; ref2 gets the same
# pages.
d2=$T/store/vm1/.memory.bin.2.diff.tmp
mk_sparse "$d2" "$SIZE"
cp "$T/ref1" "$T/ref2"
for i in 0 1 2 3 4 5 6 7; do
	pg=$(( (i * 2053 + 17) % (SIZE / PAGE) ))
	if [ "$i" = 5 ]; then
		head -c "$PAGE" /dev/zero >"$T/page"
	else
		head -c "$PAGE" /dev/urandom >"$T/page"
	fi
	dd if="$T/page" of="$d2" bs="$PAGE" seek="$pg" conv=notrunc status=none
	dd if="$T/page" of="$T/ref2" bs="$PAGE" seek="$pg" conv=notrunc status=none
done
[ "$(data_blocks "$d2" | wc -l)" = 8 ] || fail "the diff does not hold 8 data pages"
sums_before=$(layer_sums)

mount_snapfs "$T/store" "$T/mnt" -o open_rw=private
PID1=$SNAPFS_PID

# ---- O_RDWR opens: shared mappings and writes fail, private ones work ----
"$RWPROBE" "$T/mnt/vm1/memory.bin" "$T/ref1" >"$T/rwprobe.out" ||
	{ cat "$T/rwprobe.out"; fail "rwprobe on an open_rw=private view"; }

# ---- QEMU A (share=off, O_RDWR) and B (readonly=on) on chain 1 ----
start_qemu A "$T/mnt" share=off -gdb "unix:$T/A.gdb,server=on,wait=off" ||
	{ cat "$T/A.out"; fail "QEMU with share=off did not start under open_rw=private"; }
start_qemu B "$T/mnt" share=off,readonly=on ||
	{ cat "$T/B.out"; fail "QEMU with readonly=on did not start"; }
check_guest A "$T/ref1" "share=off"
check_guest B "$T/ref1" "readonly=on"

# ---- publish diff 2 (dot-name, fsync, rename) while A and B run ----
sync "$d2"
mv "$d2" "$T/store/vm1/memory.bin.2.diff"
sums_before=$(layer_sums)
cmp "$T/mnt/vm1/memory.bin" "$T/ref2" || fail "the view after the publish"
start_qemu C "$T/mnt" share=off || { cat "$T/C.out"; fail "QEMU C did not start"; }
check_guest C "$T/ref2" "a QEMU started after the publish"
check_guest A "$T/ref1" "a QEMU started before the publish"
check_guest B "$T/ref1" "a readonly=on QEMU started before the publish"

# ---- rollback through the mount while C holds chain 2 ----
rm "$T/mnt/vm1/memory.bin.2.diff" || fail "rollback through the mount"
start_qemu D "$T/mnt" share=off,readonly=on || { cat "$T/D.out"; fail "QEMU D did not start"; }
check_guest D "$T/ref1" "a QEMU started after the rollback"
check_guest C "$T/ref2" "a QEMU started before the rollback"

# ---- a guest write: in QEMU A's RAM, never in STORE ----
"$QMPCTL" poke "$T/A.gdb" 200000 efbeadde78563412 || fail "gdbstub write"
pmemsave A "$T/A.dump"
cp "$T/ref1" "$T/ref1w"
printf '\xef\xbe\xad\xde\x78\x56\x34\x12' |
	dd of="$T/ref1w" bs=1 seek=$((0x200000)) conv=notrunc status=none
same_outside_rom "$T/A.dump" "$T/ref1w" || fail "the guest write is not in A's RAM"
check_guest B "$T/ref1" "another QEMU after A's write"
sums_after=$(layer_sums)
[ "$sums_after" = "$(printf '%s\n' "$sums_before" | grep -v '\.2\.diff')" ] ||
	fail "a layer changed: before: $sums_before after: $sums_after"
cmp "$T/mnt/vm1/memory.bin" "$T/ref1" || fail "the view changed after a guest write"

# ---- without open_rw=private: refused, one log line naming QEMU ----
mount_snapfs "$T/store" "$T/mnt2"
if start_qemu E "$T/mnt2" share=off; then
	fail "QEMU share=off started on a mount without open_rw=private"
fi
grep -q "Read-only file system" "$T/E.out" || fail "QEMU's error: $(cat "$T/E.out")"
n=$(log_count "vm1/memory.bin: open for writing refused to qemu-system-x86 (pid" \
	"open_rw=private" "readonly=on,rom=off")
[ "$n" = 1 ] || fail "expected one refusal line naming QEMU, found $n"
grep -qx "opens_refused_write 1" "$T/mnt2/.snapfs-stats" || fail "opens_refused_write"
grep -qx "opens_rw_private [1-9][0-9]*" "$T/mnt/.snapfs-stats" || fail "opens_rw_private"

for p in "${QEMUS[@]}"; do
	kill "$p" 2>/dev/null
done
QEMUS=()
umount_snapfs "$T/mnt2"
SNAPFS_PID=$PID1
umount_snapfs "$T/mnt"
log "ok: QEMU guest RAM from views (share=off with open_rw=private, readonly=on)"
