#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# snapfs-diff round trip: a full dump of a view, changed in random pages
# (one turned to zeros, one written where the chain has a hole, one
# rewritten with its own bytes), becomes the next diff; the view then
# equals the dump byte for byte, the diff holds exactly the changed pages,
# and no older layer changed. Also: --dry-run writes nothing and counts
# right, a second run finds nothing to do, a size mismatch is one clear
# error that leaves nothing behind, and so is an image that differs in
# every page (no diff without a hole is ever published). On the way, the counters file
# (MNT/.snapfs-stats) counts the reads, hides STORE's entry of its name
# and is not listed.
. ./tests/mount/lib.sh
setup

DIFF="$abs_top_builddir/snapfs-diff"
SEED=${SNAPFS_SEED:-$RANDOM}
RANDOM=$SEED
log "seed $SEED (rerun with SNAPFS_SEED=$SEED)"
SIZE=$((8 << 20))
NPAGES=$((SIZE / PAGE))
S=$T/store/vm

mkdir -p "$S"
head -c "$SIZE" /dev/urandom >"$S/mem.1.base" || fail "base"
fallocate -p -o $((2 << 20)) -l $((1 << 20)) "$S/mem.1.base" || fail "hole"
mk_sparse "$S/.mem.2.diff.tmp" "$SIZE"
for pg in 3 700 1500; do
	head -c "$PAGE" /dev/urandom |
		dd of="$S/.mem.2.diff.tmp" bs="$PAGE" seek="$pg" conv=notrunc status=none
done
mv "$S/.mem.2.diff.tmp" "$S/mem.2.diff"
echo "a file of STORE" >"$T/store/.snapfs-stats"
# Without the prefetch push, every byte read is a FUSE read the counters see.
mount_snapfs "$T/store" "$T/mnt" -o prefetch=off

cat "$T/mnt/vm/mem" >"$T/old" || fail "reading the view"
cat "$T/mnt/.snapfs-stats" >"$T/stats" || fail "reading the counters"
grep -q "a file of STORE" "$T/stats" && fail "STORE's .snapfs-stats shows through"
# Spliced or gathered (read_reply=auto), every byte read is counted.
awk -v s="$SIZE" '$1 == "bytes_splice" || $1 == "bytes_gather" { n += $2 }
	END { exit !(n >= s) }' "$T/stats" ||
	fail "bytes_splice + bytes_gather below the $SIZE bytes read: $(cat "$T/stats")"
grep -qx "opens_view [1-9][0-9]*" "$T/stats" || fail "opens_view: $(cat "$T/stats")"
grep -qx "versions_alive [1-9][0-9]*" "$T/stats" || fail "versions_alive: $(cat "$T/stats")"
awk 'NF != 2 && $1 != "compact_last_cause" { exit 1 }' "$T/stats" ||
	fail "a counters line is not 'name value': $(cat "$T/stats")"
ls -a "$T/mnt" | grep -qx ".snapfs-stats" && fail ".snapfs-stats is listed"
cp "$T/old" "$T/dump"
# Random pages, then the three special ones.
: >"$T/pages"
for i in $(seq 1 40); do
	echo $((RANDOM % NPAGES)) >>"$T/pages"
done
for pg in $(cat "$T/pages"); do
	head -c "$PAGE" /dev/urandom |
		dd of="$T/dump" bs="$PAGE" seek="$pg" conv=notrunc status=none
done
ZPG=3			# data in diff 2, now zeros
HPG=$((600))		# a hole in every layer, now data
SPG=1500		# rewritten with the bytes it has
head -c "$PAGE" /dev/zero | dd of="$T/dump" bs="$PAGE" seek=$ZPG conv=notrunc status=none
head -c "$PAGE" /dev/urandom | dd of="$T/dump" bs="$PAGE" seek=$HPG conv=notrunc status=none
dd if="$T/old" of="$T/dump" bs="$PAGE" skip=$SPG seek=$SPG count=1 conv=notrunc status=none

# The pages that differ, computed here without snapfs.
cmp -l "$T/old" "$T/dump" | awk -v p="$PAGE" '{ print int(($1 - 1) / p) }' |
	sort -n -u >"$T/want"
want=$(wc -l <"$T/want")
grep -qx "$ZPG" "$T/want" && grep -qx "$HPG" "$T/want" || fail "test setup: special pages"
grep -qx "$SPG" "$T/want" && fail "test setup: page $SPG must be unchanged"
sums() { (cd "$S" && sha256sum mem.*); }
before=$(sums)
state=$(store_state "$T/store")

# ---- dry run: counts, writes nothing ----
out=$("$DIFF" --dry-run "$T/dump" "$S/mem") || fail "dry run failed: $out"
[ "$out" = "$S/mem: $want pages would change (1 of them to zeros) in mem.3.diff" ] ||
	fail "dry run said: $out (expected $want pages)"
[ "$(store_state "$T/store")" = "$state" ] || fail "the dry run changed STORE"

# ---- size mismatch: one line, nothing left behind ----
cp "$T/dump" "$T/big" && truncate -s $((SIZE + PAGE)) "$T/big"
expect_err "size $((SIZE + PAGE)) differs from $S/mem's $SIZE" "$DIFF" "$T/big" "$S/mem"
[ "$(store_state "$T/store")" = "$state" ] || fail "a size mismatch changed STORE"

# ---- the real run ----
out=$("$DIFF" "$T/dump" "$S/mem") || fail "snapfs-diff failed: $out"
[ "$out" = "$S/mem.3.diff: published with $want changed pages (1 of them zeros)" ] ||
	fail "snapfs-diff said: $out"
data_blocks "$S/mem.3.diff" >"$T/got"
cmp -s "$T/want" "$T/got" || fail "the diff's data pages differ from the changed pages"
[ "$(sums | grep -v 'mem\.3\.diff')" = "$before" ] || fail "an older layer changed"
[ -z "$(find "$S" -name '.*')" ] || fail "a staging file was left: $(find "$S" -name '.*')"
cmp "$T/mnt/vm/mem" "$T/dump" || fail "the view through the mount differs from the dump"

# ---- again: nothing to do ----
out=$("$DIFF" "$T/dump" "$S/mem") || fail "second run failed: $out"
[ "$out" = "$S/mem: no page differs; nothing published" ] || fail "second run said: $out"
[ -e "$S/mem.4.diff" ] && fail "a second run published an empty diff"

# ---- every page differs: no diff could have a hole; a base is asked for ----
head -c $((4 * PAGE)) /dev/urandom >"$S/small.1.base"
head -c $((4 * PAGE)) /dev/urandom >"$T/small.img"
expect_err "every page differs" "$DIFF" "$T/small.img" "$S/small"
[ -e "$S/small.2.diff" ] && fail "a diff without holes was published"
[ -z "$(find "$S" -name '.*')" ] || fail "a staging file was left: $(find "$S" -name '.*')"

umount_snapfs "$T/mnt"
log "ok: $want changed pages round-tripped through mem.3.diff"
