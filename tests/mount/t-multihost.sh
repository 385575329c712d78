#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Two daemons on one store, as two hosts would run them (doc/distributed.md):
# both with -o nowatch (no inotify: what a network filesystem gives), a
# producer that publishes and rolls back beside them.
#  1. Staleness: after each publish (a rename into STORE) and each rollback
#     (snapfs-rollback), both daemons serve the producer's current chain,
#     byte for byte, within revalidate + one round trip (the test allows
#     MH_SLACK_MS on top for a loaded CI machine, and prints the delays).
#  2. One compactor per chain: with compaction on, the chain is compacted
#     by the daemon that looked first; the other reports
#     "held: by another compactor" in user.snapfs.compaction meanwhile and
#     never compacts it. Exactly one "compacted" line for it in both logs.
#  3. The compacting daemon is killed (SIGKILL, a crash) mid-way: the chain
#     stays readable through the other daemon, which takes the chain's
#     compaction lock over (the lock died with the killer's victim) and
#     compacts it; the staging file the dead one left is removed by the next
#     daemon to start, and the views equal the reference throughout.
# The store is a local directory. t-multihost-nfs.sh runs the same over a
# loopback NFSv4.2 export (two client mounts without a shared cache, the
# producer on the server's side), where the kernel has NFS.
. ./tests/mount/lib.sh
setup
# A caller that made the store's filesystem (t-multihost-nfs.sh) tears it
# down after the usual cleanup has unmounted snapfs and stopped the daemons.
if [ -n "${MH_EXTRA_CLEANUP:-}" ]; then
	mh_cleanup() {
		local rc=$?
		( (exit "$rc"); cleanup )
		"$MH_EXTRA_CLEANUP"
		exit "$rc"
	}
	trap mh_cleanup EXIT
fi

ROLLBACK="$abs_top_builddir/snapfs-rollback"
REVAL=0.2
REVAL_MS=200
SLACK_MS=${MH_SLACK_MS:-1000}
RATE=1		# MiB/s: a compaction of the chains below lasts seconds
KiB=1024

# Where the producer writes (PROD), and what daemons A and B serve (SA,
# SB): one directory here; t-multihost-nfs.sh sets them to the export and
# two NFS mounts of it.
if [ -n "${MH_PROD:-}" ]; then
	PROD=$MH_PROD SA=$MH_STORE_A SB=$MH_STORE_B
else
	PROD=$T/store SA=$T/store SB=$T/store
fi
R=$T/ref
mkdir -p "$PROD/vm" "$R"
MA=$T/mnt-a MB=$T/mnt-b
LOGA=$T/a.log LOGB=$T/b.log

# put LAYER REF OFF_KIB LEN_KIB: writes LEN_KIB KiB of random bytes at
# OFF_KIB KiB into layer file LAYER (made sparse first, REF's size, if
# missing) and into the reference REF.
put() {
	local layer=$1 ref=$2 off=$3 len=$4
	[ -e "$layer" ] || mk_sparse "$layer" "$(stat -c %s "$ref")"
	head -c $((len * KiB)) /dev/urandom >"$T/chunk" || fail "no random bytes"
	dd if="$T/chunk" of="$layer" bs=$KiB seek="$off" conv=notrunc status=none ||
		fail "put $layer"
	dd if="$T/chunk" of="$ref" bs=$KiB seek="$off" conv=notrunc status=none ||
		fail "put $ref"
}

# publish NAME SEQ REF OFF_KIB LEN_KIB: the producer's publish of diff SEQ
# of vm/NAME: written under a temporary name, synced, renamed into place.
# Keeps a copy of the reference after it in REF.SEQ.
publish() {
	local name=$1 seq=$2 ref=$3 tmp=$PROD/vm/.$1.$2.tmp
	put "$tmp" "$ref" "$4" "$5"
	sync "$tmp"
	mv "$tmp" "$PROD/vm/$name.$seq.diff" || fail "publish $name.$seq.diff"
	cp --sparse=always "$ref" "$ref.$seq" || fail "ref copy"
}

# make_chain NAME DIFFS: vm/NAME, an 8 MiB base with 512 KiB of data and
# DIFFS diffs of 512 KiB each at distinct places: merging all but one
# writes 2 MiB, 2 s at compact_rate=1.
make_chain() {
	local name=$1 n=$2 i
	mk_sparse "$R/$name" $((8 << 20))
	put "$PROD/vm/$name.0.base" "$R/$name" 0 512
	cp --sparse=always "$R/$name" "$R/$name.0"
	for ((i = 1; i <= n; i++)); do
		publish "$name" "$i" "$R/$name" $((i * 1024 + 512)) 512
	done
}

# serves MNT NAME SEQ: the view vm/NAME of MNT has the diff of seq SEQ (0:
# the base alone) on top and reads as the reference after it.
serves() {
	local chain want=$2.$3.diff
	[ "$3" = 0 ] && want=$2.0.base
	chain=$(xattr "$1/vm/$2" user.snapfs.chain 2>/dev/null) || return 1
	case ",$chain" in *",$want") ;; *) return 1 ;; esac
	cmp -s "$1/vm/$2" "$R/$2.$3"
}

# both_serve WHAT NAME SEQ: both mounts serve it within the bound.
both_serve() {
	local m limit=$((REVAL_MS + SLACK_MS))
	for m in "$MA" "$MB"; do
		wait_for $((limit + 5000)) serves "$m" "$2" "$3" ||
			fail "$1: ${m##*/} does not serve $2 at seq $3 after $WAITED_MS ms"
		[ "$WAITED_MS" -le "$limit" ] ||
			fail "$1: ${m##*/} served it after $WAITED_MS ms, more than $limit"
		DELAYS+=("$1/${m##*/}=${WAITED_MS}ms")
	done
}

cstate() { xattr "$1/vm/$2" user.snapfs.compaction 2>/dev/null; }
cstate_is() { [ "$(cstate "$1" "$2")" = "$3" ]; }
# store_depth NAME: diffs of vm/NAME's current chain in the store.
store_depth() {
	xattr "$MB/vm/$1" user.snapfs.depth 2>/dev/null
}
# compacted_lines LOG NAME: the daemon's "compacted" lines for vm/NAME.
compacted_lines() {
	grep -c "vm/$2: compacted " "$1"
}

mount_a() { SNAPFS_LOG=$LOGA mount_snapfs "$SA" "$MA" -o nowatch,revalidate=$REVAL "$@"; PID_A=$SNAPFS_PID; }
mount_b() { SNAPFS_LOG=$LOGB mount_snapfs "$SB" "$MB" -o nowatch,revalidate=$REVAL "$@"; PID_B=$SNAPFS_PID; }
umount_ab() {
	SNAPFS_PID=$PID_A umount_snapfs "$MA"
	SNAPFS_PID=$PID_B umount_snapfs "$MB"
}

# ---- 1. staleness: publishes and rollbacks show on both daemons ----
make_chain mem 2
DELAYS=()
mount_a -o compact=off
mount_b -o compact=off
both_serve start mem 2
for seq in 3 4 5; do
	publish mem "$seq" "$R/mem" $((seq * 512)) 64
	both_serve "publish $seq" mem "$seq"
done
for seq in 4 3; do
	"$ROLLBACK" -q "$PROD/vm/mem" || fail "snapfs-rollback of vm/mem failed"
	both_serve "rollback to $seq" mem "$seq"
done
log "delays (bound ${REVAL_MS} ms + ${SLACK_MS} ms slack): ${DELAYS[*]}"
# Rollbacks create nothing: the lock file is the compactor's to make.
[ ! -e "$PROD/vm/.snapfs-lock" ] || fail "a rollback made the lock file"
umount_ab

log "at ${SECONDS} s"
# ---- 2. one compactor per chain ----
COPTS=compact=on,compact_threshold=2,keep_diffs=1,compact_rate=$RATE
make_chain disk 4
make_chain swap 4
mount_a -o $COPTS
mount_b -o $COPTS
# A looks first; B only once A is running.
stat "$MA/vm/disk" >/dev/null || fail "stat via A"
wait_for 10000 cstate_is "$MA" disk running || fail "A is not compacting vm/disk: $(cstate "$MA" disk)"
stat "$MB/vm/disk" >/dev/null || fail "stat via B"
wait_for 5000 cstate_is "$MB" disk "held: by another compactor" ||
	fail "B does not report vm/disk held: $(cstate "$MB" disk)"
log "B: $(cstate "$MB" disk) while A compacts"
serves "$MB" disk 4 || fail "B does not serve vm/disk while A compacts"
wait_for 30000 grep -q "vm/disk: compacted " "$LOGA" || fail "A did not finish compacting vm/disk"
# B's next look finds the compacted chain (same bytes) and drops its
# claim; it never compacts vm/disk itself (checked at the end, after
# B's retries are long past).
wait_for 10000 sh -c '[ "$(getfattr --only-values -n user.snapfs.depth "$1" 2>/dev/null)" = 1 ]' sh "$MB/vm/disk" ||
	fail "B does not see vm/disk compacted"
for m in "$MA" "$MB"; do
	serves "$m" disk 4 || fail "${m##*/}: vm/disk differs after the compaction"
done
# The compactor made the directory's lock file; the mount hides it.
[ -f "$PROD/vm/.snapfs-lock" ] && [ ! -s "$PROD/vm/.snapfs-lock" ] ||
	fail "no empty lock file in STORE after a compaction"
[ "$(ls -A "$MA/vm" | grep -c snapfs-lock)" = 0 ] || fail "the lock file is listed"
[ ! -e "$MB/vm/.snapfs-lock" ] || fail "the lock file can be looked up"
log "at ${SECONDS} s"

# ---- 3. the compacting daemon dies; the other takes over ----
stat "$MA/vm/swap" >/dev/null || fail "stat via A"
wait_for 10000 cstate_is "$MA" swap running || fail "A is not compacting vm/swap"
stat "$MB/vm/swap" >/dev/null || fail "stat via B"
wait_for 5000 cstate_is "$MB" swap "held: by another compactor" ||
	fail "B does not report vm/swap held: $(cstate "$MB" swap)"
sleep 0.5	# into the copy
kill -KILL "$PID_A"
wait "$PID_A" 2>/dev/null
"$FUSERMOUNT" -u -z "$MA" 2>/dev/null || umount -l "$MA"
[ "$(compacted_lines "$LOGA" swap)" = 0 ] || fail "A finished before it was killed: make the chain larger"
serves "$MB" swap 4 || fail "vm/swap unreadable through B after A died"
# B takes the lock over within its retry interval and compacts.
wait_for 30000 grep -q "vm/swap: compacted " "$LOGB" || fail "B did not take over vm/swap: $(cstate "$MB" swap)"
wait_for 5000 sh -c '[ "$(getfattr --only-values -n user.snapfs.depth "$1" 2>/dev/null)" = 1 ]' sh "$MB/vm/swap" ||
	fail "vm/swap is not compacted after the take-over"
serves "$MB" swap 4 || fail "vm/swap differs after B's compaction"
[ "$(compacted_lines "$LOGA" disk)" = 1 ] || fail "A compacted vm/disk $(compacted_lines "$LOGA" disk) times"
[ "$(compacted_lines "$LOGB" disk)" = 0 ] || fail "B compacted vm/disk too"
left=$(ls -A "$PROD/vm" | grep -c '^\.snapfs-compact\.')
log "staging files the killed daemon left: $left"
# A restarts: its first look at vm removes what no live compactor holds.
mount_a -o $COPTS
serves "$MA" swap 4 || fail "vm/swap differs through the restarted A"
[ "$(ls -A "$PROD/vm" | grep -c '^\.snapfs-compact\.')" = 0 ] ||
	fail "staging files left after a restart: $(ls -A "$PROD/vm")"
# Every view, through random preads and a mapping too.
for n in mem:3 disk:4 swap:4; do
	"$VIEWCHECK" -m pread,mmap "$MB/vm/${n%:*}" "$R/${n%:*}.${n#*:}" >/dev/null ||
		fail "vm/${n%:*} differs from the reference"
done
umount_ab
log "ok (${SECONDS} s)"
