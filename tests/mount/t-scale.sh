#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Names come and go in a big directory without the daemon growing (issue
# 11, doc/design.md §9.3): SNAPFS_SCALE_ROUNDS (7) rounds of "create
# SNAPFS_SCALE_NAMES (3,000) layered names (a base, and a diff for every
# third), list them, read a sample and compare each with the merge computed
# here, delete them, list again". Versions of names that left STORE are
# freed when their directory is next read: after each round no version is
# alive (the versions_alive counter of .snapfs-stats), the flattener keeps
# no record of a version gone (flat_entries), and the daemon's RSS after
# the last round stays within 1.25x the highest of rounds 2 to 4 (the
# daemon gives free heap memory back a second after a burst of frees, so a
# reading may come before or after that). A directory deleted whole lets
# go of its versions with no lookup or listing after it (the change
# watcher's sweep, doc/design.md §19.6). Last, a listing on a quiet
# daemon is followed by a look at its heap, and the daemon runs without
# glibc's per-thread caches of freed chunks. ASan's quarantine is
# turned off for the daemon, so that freed memory is reused as it would
# be in a normal build.
. ./tests/mount/lib.sh
setup
command -v python3 >/dev/null || fail "python3 is needed"

ROUNDS=${SNAPFS_SCALE_ROUNDS:-7}
NAMES=${SNAPFS_SCALE_NAMES:-3000}
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}:quarantine_size_mb=0"

STORE=$T/store
MNT=$T/mnt
mkdir -p "$STORE/d"
mount_snapfs "$STORE" "$MNT"

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$SNAPFS_PID/status"; }

base_rss=
for r in $(seq 1 "$ROUNDS"); do
	python3 - "$STORE/d" "$NAMES" "$r" <<'EOF' || fail "round $r: cannot make names"
import sys
d, n, r = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
P = 4096
for i in range(n):
    with open(f"{d}/r{r}n{i}.0.base", "wb") as f:
        f.write(bytes([(i + r) % 256]) * 2 * P)
    if i % 3 == 0:
        with open(f"{d}/r{r}n{i}.1.diff", "wb") as f:
            f.truncate(2 * P)
            f.seek(P)
            f.write(bytes([(i * 7 + r) % 256]) * P)
EOF
	seen=$(ls -l "$MNT/d" | grep -c " r${r}n[0-9]*$") || true
	[ "$seen" -eq "$NAMES" ] || fail "round $r: the listing shows $seen names, not $NAMES"
	python3 - "$MNT/d" "$NAMES" "$r" <<'EOF' || fail "round $r: a view reads wrong"
import sys
d, n, r = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
P = 4096
for i in range(0, n, 37):
    want = bytes([(i + r) % 256]) * P
    want += bytes([(i * 7 + r) % 256]) * P if i % 3 == 0 else bytes([(i + r) % 256]) * P
    with open(f"{d}/r{r}n{i}", "rb") as f:
        if f.read() != want:
            sys.exit(f"r{r}n{i}: wrong bytes")
EOF
	find "$STORE/d" -name "r${r}n*" -delete
	left=$(ls "$MNT/d" | wc -l)
	[ "$left" -eq 0 ] || fail "round $r: $left names still listed after the delete"
	# The listing after the delete retired every version of the round:
	# none may stay alive (the kernel forgets them as the watcher drops
	# their names; give it a moment).
	# The flattener's records go with their versions (none without it).
	for _ in $(seq 50); do
		alive=$(awk '$1 == "versions_alive" { print $2 }' "$MNT/.snapfs-stats")
		flat=$(awk '$1 == "flat_entries" { print $2 }' "$MNT/.snapfs-stats")
		[ "$alive" -le 1 ] && [ "$flat" -le "$alive" ] && break
		sleep 0.1
	done
	[ "$alive" -le 1 ] || fail "round $r: $alive versions still alive after their names left STORE"
	[ "$flat" -le "$alive" ] ||
		fail "round $r: the flattener still keeps $flat records for $alive versions alive"
	# The daemon gives the heap's free memory back a second after a
	# burst of frees (src/memtrim.h): the two RSS readings compared
	# below are taken once it has.
	if [ "$r" -eq 4 ] || [ "$r" -eq "$ROUNDS" ]; then
		sleep 1.3
	fi
	rss=$(rss_kb)
	log "round $r: $NAMES names made, listed, read, deleted; $alive versions alive; daemon RSS $rss KiB"
	# the base: the highest of rounds 2 to 4 (a reading may come before
	# or after the daemon's trim)
	if [ "$r" -ge 2 ] && [ "$r" -le 4 ] && [ "$rss" -gt "${base_rss:-0}" ]; then
		base_rss=$rss
	fi
done
# RSS settles over the first rounds (the allocator's pools and arenas
# grow in steps of megabytes, under ASan too); from round 4 on a leak
# shows as steady growth, noise as a step or two: more than a quarter
# fails.
if [ -n "$base_rss" ] && [ "$rss" -gt $((base_rss * 125 / 100)) ]; then
	fail "RSS grew from $base_rss KiB (rounds 2-4) to $rss KiB (round $ROUNDS)"
fi

# A directory deleted whole: nothing looks in it again, and its versions
# still go (the watcher sweeps a directory whose layer files went).
stat_of() { awk -v k="$1" '$1 == k { print $2 }' "$MNT/.snapfs-stats"; }
mkdir -p "$STORE/gone"
head -c 65536 /dev/urandom >"$STORE/gone/vm.0.base"
printf 'x' | dd of="$STORE/gone/vm.1.diff" bs=1 seek=4096 conv=notrunc status=none
truncate -s 65536 "$STORE/gone/vm.1.diff"
cat "$MNT/gone/vm" >/dev/null || fail "cannot read gone/vm"
[ "$(stat_of versions_alive)" -ge 1 ] || fail "no version alive for gone/vm"
rm -rf "$STORE/gone"
wait_for 5000 eval '[ "$(stat_of versions_alive)" -eq 0 ]' ||
	fail "$(stat_of versions_alive) versions alive 5 s after their directory was deleted"
log "ok: a deleted directory's versions went with no lookup in it"

# A quiet daemon gives back what a burst freed (src/memtrim.h): the look
# at the heap is due a second after the first free, and it must come with
# nothing else going on. New names are made and the daemon falls quiet
# (any look due runs, and the change watcher sleeps with no timeout);
# then a listing's release asks for a look, and no change in STORE follows
# to wake the watcher.
mkdir -p "$STORE/q"
python3 - "$STORE/q" "$NAMES" <<'EOF' || fail "cannot make the quiet round's names"
import sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(f"{d}/q{i}.0.base", "wb") as f:
        f.write(b"\x11" * 4096)
EOF
sleep 2.5
looks=$(stat_of heap_looks)
ls -l "$MNT/q" >/dev/null
for _ in $(seq 40); do
	[ "$(stat_of heap_looks)" -gt "$looks" ] && break
	sleep 0.1
done
[ "$(stat_of heap_looks)" -gt "$looks" ] ||
	fail "a listing of $NAMES names on a quiet daemon asked for a look at the heap, and none came in 4 s"
log "ok: a look at the heap followed the listing on a quiet daemon" \
    "($(stat_of heap_looks) looks, $(stat_of heap_trims) trims in all)"
umount_snapfs "$MNT"

# The daemon runs itself again without glibc's per-thread caches of freed
# chunks (src/memtrim.h: they pinned most of the heap's pages after
# churn), and leaves a tcache count the user set alone. Not under a
# sanitizer, whose allocator has no such caches. (Other tunables are kept,
# but glibc rewrites the variable as it reads it, so /proc shows only the
# first of several.)
tunables_of() {
	tr '\0' '\n' <"/proc/$SNAPFS_PID/environ" | sed -n 's/^GLIBC_TUNABLES=//p'
}
mount_snapfs "$STORE" "$MNT"
if grep -q 'lib[at]san' "/proc/$SNAPFS_PID/maps"; then
	log "skip: the tcache check (a sanitizer's allocator)"
	umount_snapfs "$MNT"
else
	got=$(tunables_of)
	[ "$got" = "glibc.malloc.tcache_count=0" ] ||
		fail "the daemon runs with GLIBC_TUNABLES='$got', not glibc.malloc.tcache_count=0"
	# Run again by its path, so it keeps its name for ps and top.
	[ "$(cat "/proc/$SNAPFS_PID/comm")" = "$(basename "$SNAPFS")" ] ||
		fail "the daemon runs as '$(cat "/proc/$SNAPFS_PID/comm")', not $(basename "$SNAPFS")"
	umount_snapfs "$MNT"
	GLIBC_TUNABLES=glibc.malloc.tcache_count=7 mount_snapfs "$STORE" "$MNT"
	got=$(tunables_of)
	[ "$got" = "glibc.malloc.tcache_count=7" ] ||
		fail "a tcache count the user set became GLIBC_TUNABLES='$got'"
	umount_snapfs "$MNT"
	log "ok: the daemon runs without tcache under its own name, and keeps a count set by the user"
fi
log "PASS"
