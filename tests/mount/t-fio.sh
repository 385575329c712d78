#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# fio verifies every block it reads through the mount: a file fio stamped
# with crc32c headers is split into a chain (a base with ~20% of its pages
# garbled, three sparse diffs that restore them, some garbled again and
# restored higher up) and read at random with the psync and mmap engines.
. ./tests/mount/lib.sh
setup

if ! command -v fio >/dev/null 2>&1; then
	[ -n "${CI:-}" ] && fail "fio is required on CI"
	skip "fio not installed"
fi
command -v xfs_io >/dev/null 2>&1 || fail "xfs_io (xfsprogs) is required"

SEED=${SNAPFS_SEED:-$RANDOM}
log "seed $SEED (rerun with SNAPFS_SEED=$SEED)"
RANDOM=$SEED
SIZE=$((64 << 20)) N=$((SIZE / PAGE))
S=$T/store M=$T/mnt REF=$T/ref.bin
mkdir -p "$S/vm"

fio --name=stamp --filename="$REF" --rw=write --bs="$PAGE" --size="$SIZE" \
	--ioengine=psync --verify=crc32c --do_verify=0 --randseed="$SEED" \
	--verify_state_save=0 --output="$T/fio-write.log" || fail "fio could not write the reference"
[ "$(stat -c %s "$REF")" = "$SIZE" ] || fail "fio wrote $(stat -c %s "$REF") bytes"

# For each page, the state of each layer: 0 hole, 1 good (the reference's
# bytes), 2 garbage. The base is dense (never a hole); the highest layer
# with data at a page must be good. cmds.L collects xfs_io commands.
: >"$T/cmds.0" && : >"$T/cmds.1" && : >"$T/cmds.2" && : >"$T/cmds.3"
garbage() {	# LAYER OFFSET: a fixed pattern, or a valid block of elsewhere
	local src
	if ((RANDOM % 2)); then
		printf 'pwrite -q -S 0x%x %d %d\n' $((RANDOM * 65536 + RANDOM)) "$2" "$PAGE" >>"$T/cmds.$1"
	else
		src=$(( ((RANDOM * 32768 + RANDOM) % N) * PAGE ))
		[ "$src" = "$2" ] && src=$(( (src + PAGE) % SIZE ))
		printf 'pwrite -q -i %s -s %d %d %d\n' "$REF" "$src" "$2" "$PAGE" >>"$T/cmds.$1"
	fi
}
declare -a st
garbled=0 restored_high=0
for ((p = 0; p < N; p++)); do
	st[0]=$((RANDOM % 5 == 0 ? 2 : 1))
	for l in 1 2 3; do
		r=$((RANDOM % 100))
		st[l]=$((r < 86 ? 0 : r < 94 ? 1 : 2))
	done
	# The first pages get the tricky patterns on purpose.
	case $p in
	0) st=(2 1 2 1) ;;	# garbled, restored, garbled again, restored
	1) st=(2 2 2 1) ;;
	2) st=(1 2 1 0) ;;
	3) st=(2 0 0 1) ;;
	4) st=(1 0 0 0) ;;
	esac
	top=3
	while ((top > 0 && st[top] == 0)); do top=$((top - 1)); done
	if ((st[top] == 2)); then
		if ((top == 0)); then
			st[1 + RANDOM % 3]=1	# the only data above is this
		else
			st[top]=1
		fi
	fi
	off=$((p * PAGE))
	((st[0] == 2)) && garbled=$((garbled + 1))
	((st[1] == 2 || st[2] == 2)) && restored_high=$((restored_high + 1))
	for l in 0 1 2 3; do
		case ${st[l]} in
		1) ((l > 0)) && printf 'pwrite -q -i %s -s %d %d %d\n' "$REF" "$off" "$off" "$PAGE" >>"$T/cmds.$l" ;;
		2) garbage "$l" "$off" ;;
		esac
	done
done
log "$garbled of $N base pages garbled, $restored_high pages garbled in a diff and restored above"
[ "$garbled" -gt $((N / 8)) ] || fail "too few garbled pages ($garbled)"

cp "$REF" "$S/vm/memory.bin.0.base"
xfs_io "$S/vm/memory.bin.0.base" <"$T/cmds.0" || fail "cannot garble the base"
for l in 1 2 3; do
	mk_sparse "$S/vm/memory.bin.$l.diff" "$SIZE"
	xfs_io "$S/vm/memory.bin.$l.diff" <"$T/cmds.$l" || fail "cannot write diff $l"
	# Each diff must really be sparse (snapfs refuses diffs with no holes).
	[ "$(xfs_io -r -c 'seek -h 0' "$S/vm/memory.bin.$l.diff" | awk '$1 == "HOLE" { print $2 }')" -lt "$SIZE" ] ||
		fail "diff $l has no holes"
done
cmp -s "$S/vm/memory.bin.0.base" "$REF" && fail "the base is not garbled"

mount_snapfs "$S" "$M"
V=$M/vm/memory.bin
[ "$(xattr "$V" user.snapfs.depth)" = 3 ] || fail "the view is not a chain of depth 3"
cmp "$V" "$REF" || fail "the view differs from fio's file"

# run_fio NAME ENGINE BS: random reads of every block once, each verified.
run_fio() {
	local name=$1 engine=$2 bs=$3 out=$T/fio-$1.log terse
	fio --name="$name" --filename="$V" --readonly --rw=randread --bs="$bs" \
		--verify_interval="$PAGE" --size="$SIZE" --ioengine="$engine" \
		--verify=crc32c --verify_fatal=1 --randseed="$SEED" --verify_state_save=0 \
		--output-format=terse --terse-version=3 >"$out" 2>&1 ||
		fail "fio $name failed: $(grep -m 3 -i -e verify -e error "$out")"
	grep -qi 'verify' "$out" && fail "fio $name reported: $(grep -m 3 -i verify "$out")"
	terse=$(grep '^3;' "$out")
	# Fields: 5 error, 6 KiB read.
	[ "$(echo "$terse" | cut -d';' -f5)" = 0 ] || fail "fio $name: error $(echo "$terse" | cut -d';' -f5)"
	[ "$(echo "$terse" | cut -d';' -f6)" = $((SIZE / 1024)) ] ||
		fail "fio $name read $(echo "$terse" | cut -d';' -f6) KiB, want $((SIZE / 1024))"
}
run_fio psync psync "$PAGE"
run_fio mmap mmap "$PAGE"
run_fio psync-64k psync 64k
run_fio mmap-1m mmap 1m
umount_snapfs "$M"

# The check itself works: the garbled base alone fails verification.
if fio --name=neg --filename="$S/vm/memory.bin.0.base" --readonly --rw=read \
	--bs="$PAGE" --size="$SIZE" --ioengine=psync --verify=crc32c \
	--verify_state_save=0 --output="$T/fio-neg.log" >/dev/null 2>&1; then
	fail "fio did not notice the garbled base: the verification is not working"
fi
log "ok"
