#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# snapfs-compact on each filesystem it meets (doc/format.md §6): XFS with reflinks and
# btrfs (loop images), ext4 (loop image) and tmpfs. A seeded random store with
# chains up to 16 diffs deep is compacted with -t 4 -k 2, after a --dry-run
# that must change nothing. Then every view, read through a snapfs mount,
# equals mkstore's reference byte for byte; compacted chains are the new
# base NAME.<s>.base plus the 2 newest diffs (user.snapfs.chain and depth);
# the merged and superseded layers are gone and no staging file is left.
# Where the base was reflinked (XFS, btrfs) every block of the old base that
# no merged diff overwrote is the very same physical block in the new base:
# the base's data was not copied. Everywhere the new base holds data only
# where a merged layer did: it stays sparse where the old base was. With
# --page-size 512 every chain is refused (holes here are 1 KiB at least),
# dry run or not, and nothing changes; a dry run refuses a dense diff
# among the layers it would merge, as a real run does; and a dense diff
# above the merge point makes the chain refused too, as in the daemon.
. ./tests/mount/lib.sh
setup_loops
command -v xfs_io >/dev/null || {
	[ -n "${CI:-}" ] && fail "CI must have xfs_io (xfsprogs)"
	skip "needs xfs_io (xfsprogs)"
}

SEED=${SNAPFS_SEED:-$RANDOM}
log "seed $SEED (rerun with SNAPFS_SEED=$SEED)"
TH=4
KEEP=2
shopt -s extglob

# seq_of LAYER: the <seq> of a layer file name, without leading zeros.
seq_of() {
	local s=${1%.*}
	s=${s##*.}
	s=${s##+(0)}
	echo "${s:-0}"
}

# layers_of DIR NAME: the layer files of NAME in DIR, sorted, one per line.
layers_of() {
	local f b
	for f in "$1"/*; do
		b=${f##*/}
		[[ $b == "$2."* ]] || continue
		[[ ${b#"$2."} =~ ^[0-9]+\.(base|diff)$ ]] && echo "$b"
	done | LC_ALL=C sort
}

# union FILE...: the union of data_blocks of each FILE.
union() {
	local f
	for f in "$@"; do
		data_blocks "$f"
	done | sort -n -u
}

# compact_fs FS DIR: the whole check on a store made in DIR (on FS).
compact_fs() {
	local fs=$1 dir=$2
	local store=$dir/store ref=$T/ref.$fs mnt=$T/mnt.$fs
	local path size depth data chain d name i n reflink E nexp=0 holes=0
	local checked=0 mism=0 out rc line
	local -a L

	"$MKSTORE" -s "$SEED" -n 14 -D 16 -S 4M "$store" "$ref" >"$T/mkstore.$fs.log" ||
		fail "$fs: mkstore failed"
	craft_chain "$store" "$ref"
	sync -f "$store"
	case $fs in xfs | btrfs) reflink=1 ;; *) reflink=0 ;; esac

	# Expectations, per chain deeper than the threshold, taken before.
	E=$T/exp.$fs
	mkdir -p "$E"
	: >"$E/list"
	while read -r path size depth data chain; do
		[ "$depth" -gt "$TH" ] || continue
		d=$(dirname "$path")
		name=${path##*/}
		IFS=, read -r -a L <<<"$chain"
		i=$nexp
		nexp=$((nexp + 1))
		# merged: L[0] .. L[depth - KEEP]; kept: the KEEP newest diffs
		local last=${L[depth - KEEP]}
		local nb="$name.$(seq_of "$last").base"
		local newchain=$nb
		for ((n = depth - KEEP + 1; n <= depth; n++)); do
			newchain="$newchain,${L[n]}"
		done
		printf '%s %s %s %s\n' "$path" "$d" "$name" "$newchain" >>"$E/list"
		local files=()
		for ((n = 0; n <= depth - KEEP; n++)); do
			files+=("$store/$d/${L[n]}")
		done
		union "${files[@]}" >"$E/$i.union"
		union "${files[@]:1}" >"$E/$i.cover"
		[ "$reflink" = 1 ] && phys_blocks "${files[0]}" >"$E/$i.oldphys"
		# blocks of the file that no merged layer holds: must stay holes
		holes=$((holes + (size + 4095) / 4096 - $(wc -l <"$E/$i.union")))
	done <"$ref/MANIFEST"
	[ "$nexp" -ge 4 ] || fail "$fs: only $nexp chains deeper than $TH (seed $SEED)"

	# --dry-run: says what it would do, changes nothing.
	store_state "$store" >"$T/state.before"
	out=$("$SNAPFS_COMPACT" -n -t "$TH" -k "$KEEP" "$store" 2>"$T/dry.$fs.err") ||
		fail "$fs: --dry-run failed: $(cat "$T/dry.$fs.err")"
	store_state "$store" >"$T/state.after"
	cmp -s "$T/state.before" "$T/state.after" ||
		fail "$fs: --dry-run changed the store: $(diff "$T/state.before" "$T/state.after" | head -5)"
	[ "$(grep -c ': would merge ' <<<"$out")" = "$nexp" ] ||
		fail "$fs: --dry-run planned $(grep -c ': would merge ' <<<"$out") chains, want $nexp"
	grep -q "^snapfs-compact: [0-9]* chains, $nexp to compact (dry run), 0 failed$" <<<"$out" ||
		fail "$fs: --dry-run summary: $(tail -n 1 <<<"$out")"
	# --page-size 512 (a daemon's -o page_size=512): holes here are at
	# least 1 KiB (ext4's blocks on a small image), so the daemon would
	# refuse every diff, and so does the compactor, dry run or not (a
	# real run still prunes superseded layers below chains of a lone base,
	# which need no holes).
	out=$("$SNAPFS_COMPACT" -n -p 512 -t "$TH" -k "$KEEP" "$store" 2>"$T/dry512.$fs.err")
	rc=$?
	[ "$rc" = 1 ] || fail "$fs: --dry-run --page-size 512 exited $rc, want 1"
	[ "$(grep -c ': would merge .*: FAILED$' <<<"$out")" = "$nexp" ] ||
		fail "$fs: --dry-run --page-size 512: $(grep -c ': FAILED$' <<<"$out") of $nexp refused"
	grep -q "^snapfs-compact: [0-9]* chains, 0 to compact (dry run), [0-9]* failed$" <<<"$out" ||
		fail "$fs: --page-size 512 summary: $(tail -n 1 <<<"$out")"
	grep -q "coarser than the 512-byte page" "$T/dry512.$fs.err" ||
		fail "$fs: --page-size 512: no cause logged: $(head -3 "$T/dry512.$fs.err")"
	store_state "$store" >"$T/state.after"
	cmp -s "$T/state.before" "$T/state.after" ||
		fail "$fs: --dry-run --page-size 512 changed the store: $(diff "$T/state.before" "$T/state.after" | head -5)"
	out=$("$SNAPFS_COMPACT" -p 512 -t "$TH" -k "$KEEP" "$store" 2>"$T/real512.$fs.err")
	[ $? = 1 ] || fail "$fs: --page-size 512 exited 0"
	[ "$(grep -c ': merging .*: FAILED$' <<<"$out")" = "$nexp" ] ||
		fail "$fs: --page-size 512 (real run): $(grep -c ': FAILED$' <<<"$out") of $nexp refused"
	grep -q "^snapfs-compact: [0-9]* chains, 0 compacted, [0-9]* failed$" <<<"$out" ||
		fail "$fs: --page-size 512 (real run) summary: $(tail -n 1 <<<"$out")"

	# The compaction.
	out=$("$SNAPFS_COMPACT" -t "$TH" -k "$KEEP" "$store" 2>"$T/compact.$fs.err")
	rc=$?
	printf '%s\n' "$out" >"$T/compact.$fs.log"
	[ "$rc" = 0 ] || fail "$fs: snapfs-compact exited $rc: $(cat "$T/compact.$fs.err")"
	grep -q "^snapfs-compact: [0-9]* chains, $nexp compacted, 0 failed$" <<<"$out" ||
		fail "$fs: summary: $(tail -n 1 <<<"$out")"
	if [ "$reflink" = 1 ]; then
		line="bases are reflinked"
		[ "$(grep -c ': done, .*(base reflinked, ' <<<"$out")" = "$nexp" ] ||
			fail "$fs: not every base was reflinked: $(grep ': done' <<<"$out" | head -3)"
	else
		line="no reflinks here, bases are copied sparsely"
		[ "$(grep -c ': done, .*(base copied, ' <<<"$out")" = "$nexp" ] ||
			fail "$fs: progress lines: $(grep ': done' <<<"$out" | head -3)"
	fi
	[ "$(grep -c "compaction on device .*$line" "$T/compact.$fs.err")" = 1 ] ||
		fail "$fs: want one log line '$line', got: $(cat "$T/compact.$fs.err")"
	[ -z "$(staging_files "$store")" ] || fail "$fs: staging files left: $(staging_files "$store")"
	sync -f "$store"

	# The layers on disk, chain by chain.
	i=0
	while read -r path d name chain; do
		IFS=, read -r -a L <<<"$chain"
		local nb=$store/$d/${L[0]}
		[ -f "$nb" ] || fail "$fs: $path: no new base ${L[0]}"
		[ "$(layers_of "$store/$d" "$name")" = "$(tr , '\n' <<<"$chain" | LC_ALL=C sort)" ] ||
			fail "$fs: $path: layers left: $(layers_of "$store/$d" "$name" | tr '\n' ' '), want $chain"
		# sparse where no merged layer had data, also once its holes are in
		# the page cache (XFS reports cached pages over COW-fork
		# preallocations of a reflinked file as data)
		cat "$nb" >/dev/null
		data_blocks "$nb" >"$E/$i.new"
		n=$(awk 'NR == FNR { u[$1] = 1; next } !($1 in u) { c++ } END { print c + 0 }' \
			"$E/$i.union" "$E/$i.new")
		[ "$n" = 0 ] || fail "$fs: $path: new base has data in $n blocks where no merged layer had any"
		if [ "$reflink" = 1 ]; then
			phys_blocks "$nb" >"$E/$i.newphys"
			read -r n m < <(awk 'FILENAME == ARGV[1] { c[$1] = 1; next }
				FILENAME == ARGV[2] { if (!($1 in c)) o[$1] = $2; next }
				{ nw[$1] = $2 }
				END { for (b in o) { n++; if (nw[b] != o[b]) m++ } print n + 0, m + 0 }' \
				"$E/$i.cover" "$E/$i.oldphys" "$E/$i.newphys")
			checked=$((checked + n))
			mism=$((mism + m))
			[ "$m" = 0 ] || log "$fs: $path: $m of $n base blocks not shared with the old base"
		else
			# allocated blocks: data only (plus ext4's extent tree blocks)
			n=$(( $(stat -c '%b * %B' "$nb") ))
			m=$(( $(wc -l <"$E/$i.union") * 4096 + 32768 ))
			[ "$n" -le "$m" ] || fail "$fs: $path: new base allocates $n bytes, its data is at most $m"
		fi
		i=$((i + 1))
	done <"$E/list"
	if [ "$reflink" = 1 ]; then
		[ "$mism" = 0 ] || fail "$fs: $mism of $checked old base blocks were copied, not shared"
		[ "$checked" -gt 0 ] || fail "$fs: no base block to check sharing on"
	fi
	[ "$holes" -gt 0 ] || log "$fs: note: no compacted chain had holes (seed $SEED)"

	# Through snapfs: content, chains and depths.
	mount_snapfs "$store" "$mnt" -o compact=off
	check_views "$mnt" "$ref"
	while read -r path size depth data chain; do
		line=$(awk -v p="$path" '$1 == p { print $4 }' "$E/list")
		[ -n "$line" ] && { chain=$line; depth=$KEEP; }
		[ "$(xattr "$mnt/$path" user.snapfs.depth)" = "$depth" ] ||
			fail "$fs: $path: depth $(xattr "$mnt/$path" user.snapfs.depth), want $depth"
		[ "$(xattr "$mnt/$path" user.snapfs.chain)" = "$chain" ] ||
			fail "$fs: $path: chain $(xattr "$mnt/$path" user.snapfs.chain), want $chain"
		[ "$(xattr "$mnt/$path" user.snapfs.data_bytes)" = "$data" ] ||
			fail "$fs: $path: data_bytes $(xattr "$mnt/$path" user.snapfs.data_bytes), want $data"
	done <"$ref/MANIFEST"
	umount_snapfs "$mnt"

	# A second run finds nothing to do.
	out=$("$SNAPFS_COMPACT" -q -t "$TH" -k "$KEEP" "$store" 2>&1) || fail "$fs: second run failed: $out"
	grep -q "^snapfs-compact: [0-9]* chains, 0 compacted, 0 failed$" <<<"$out" ||
		fail "$fs: second run: $out"

	line="$fs: $nexp chains compacted, $NVIEWS views equal the reference"
	[ "$reflink" = 1 ] && line="$line, $checked base blocks shared"
	log "ok: $line, $holes hole blocks kept"
}

ran=0
if have_mkfs xfs; then
	mkfs_loop xfs 512 "$T/xfs" -m reflink=1
	compact_fs xfs "$T/xfs"
	ran=$((ran + 1))
fi
if have_mkfs btrfs; then
	mkfs_loop btrfs 512 "$T/btrfs"
	compact_fs btrfs "$T/btrfs"
	ran=$((ran + 1))
fi
if have_mkfs ext4; then
	mkfs_loop ext4 256 "$T/ext4"
	compact_fs ext4 "$T/ext4"
	ran=$((ran + 1))
fi
mount_tmpfs "$T/tmpfs" 256
compact_fs tmpfs "$T/tmpfs"
ran=$((ran + 1))

# A dry run reads and checks the layers it would merge, as a real run
# does: a diff with no holes (copied without --sparse) among them is
# refused by both, with the same cause, and nothing changes.
B=$T/tmpfs/dense
mkdir -p "$B/vm"
head -c $((64 * PAGE)) /dev/urandom >"$B/vm/m.0.base"
head -c $((64 * PAGE)) /dev/urandom >"$B/vm/m.1.diff"
for i in 2 3; do
	mk_sparse "$B/vm/m.$i.diff" $((64 * PAGE))
	write_page "$B/vm/m.$i.diff" "$i" "$i"
done
store_state "$B" >"$T/dense.before"
for mode in -n ""; do
	out=$("$SNAPFS_COMPACT" $mode -t 2 -k 1 "$B" 2>"$T/dense.err")
	rc=$?
	[ "$rc" = 1 ] || fail "dense diff: snapfs-compact ${mode:-(real run)} exited $rc, want 1"
	grep -q "vm/m: would merge 3 layers\|vm/m: merging 3 layers" <<<"$out" &&
		grep -q ": FAILED$" <<<"$out" ||
		fail "dense diff: snapfs-compact ${mode:-(real run)} printed: $out"
	grep -q "diff m.1.diff has no holes" "$T/dense.err" ||
		fail "dense diff: ${mode:-real run}: cause: $(cat "$T/dense.err")"
done
store_state "$B" >"$T/dense.after"
cmp -s "$T/dense.before" "$T/dense.after" || fail "dense diff: the store changed"
# The dense diff above the merge point (kept, not merged): the chain is
# as unusable as before, and the daemon compacts only chains that open;
# snapfs-compact refuses it as well.
rm "$B/vm/m.1.diff" "$B/vm/m.3.diff"
mk_sparse "$B/vm/m.1.diff" $((64 * PAGE))
write_page "$B/vm/m.1.diff" 1 1
head -c $((64 * PAGE)) /dev/urandom >"$B/vm/m.3.diff"
store_state "$B" >"$T/dense.before"
out=$("$SNAPFS_COMPACT" -t 2 -k 1 "$B" 2>"$T/dense.err")
[ $? = 1 ] || fail "dense kept diff: snapfs-compact compacted an unusable chain: $out"
grep -q "vm/m: the chain is unusable: .*m.3.diff has no holes" "$T/dense.err" ||
	fail "dense kept diff: cause: $(cat "$T/dense.err")"
store_state "$B" >"$T/dense.after"
cmp -s "$T/dense.before" "$T/dense.after" || fail "dense kept diff: the store changed"
log "ok: a dense diff is refused by --dry-run as by a real run, also above the merge point"

log "ok: $ran filesystems"
