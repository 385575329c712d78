#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# File descriptors stay within budget whatever the kernel remembers (issue 9,
# doc/design.md §9.6). The daemon runs with an open file limit of
# SNAPFS_FD_LIMIT (64) and:
#   1. `ls -l` of a directory of SNAPFS_FD_ENTRIES (30,000 in make check;
#      100,000 by hand, see doc/design.md §9.6) entries, plain
#      files and layered names, succeeds, and then every view still opens;
#   2. SNAPFS_FD_CHAINS (1,000) layered files opened one after another each
#      read exactly as the merge of their layers computed here;
#   3. 200 of them held open at once: each open either succeeds or fails
#      with EMFILE, never another error; while they are held, unrelated
#      files and listings keep working; once they are closed, all 200 open
#      again one at a time and read right;
#   4. with -o nowatch, a rolled-back diff is not held open by a version
#      nobody has open (its space is freed);
#   5. the unmount is clean (exit 0) right after all that.
# Where the flattener runs, it is held at its first build (fault-injection
# builds), so the views waiting for it hold fds all along.
# The peak number of the daemon's open fds is printed for each step.
. ./tests/mount/lib.sh
setup
command -v prlimit >/dev/null || fail "prlimit(1) (util-linux) is needed"
command -v python3 >/dev/null || fail "python3 is needed"

LIMIT=${SNAPFS_FD_LIMIT:-64}
START=$SECONDS
step() { log "[$((SECONDS - START)) s] $*"; }
ENTRIES=${SNAPFS_FD_ENTRIES:-30000}
CHAINS=${SNAPFS_FD_CHAINS:-1000}
HELD=200

# The daemon runs under a wrapper that lowers its limit (soft and hard:
# snapfs raises the soft one to the hard one).
cat >"$T/limited" <<EOF
#!/bin/sh
exec prlimit --nofile=$LIMIT:$LIMIT -- "$SNAPFS" "\$@"
EOF
chmod +x "$T/limited"
SNAPFS="$T/limited"

# fds of the daemon now.
nfds() {
	ls "/proc/$SNAPFS_PID/fd" 2>/dev/null | wc -l
}

# peak_start / peak_stop: samples nfds in the background; peak_stop prints
# the highest count seen.
peak_start() {
	(
		peak=0
		# Ends with the test too, whatever way it ends.
		while [ ! -e "$T/peak.stop" ] && [ -d "$T" ] && kill -0 $$ 2>/dev/null; do
			n=$(nfds)
			[ "$n" -gt "$peak" ] && peak=$n && echo "$peak" >"$T/peak"
			sleep 0.02
		done
	) &
	PEAK_PID=$!
	PIDS+=("$PEAK_PID")
}
peak_stop() {
	touch "$T/peak.stop"
	wait "$PEAK_PID"
	rm -f "$T/peak.stop"
	cat "$T/peak"
	rm -f "$T/peak"
}

STORE=$T/store
MNT=$T/mnt
mkdir -p "$STORE/big" "$STORE/chains"

# The store: ENTRIES entries in big/ (every 100th a layered name, a base and
# a diff), CHAINS layered files in chains/ (a 3-page base and a diff with
# page 1, made by python below with content derived from the index).
python3 - "$STORE" "$ENTRIES" "$CHAINS" <<'EOF' || fail "cannot make the store"
import os, sys
store, entries, chains = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
P = 4096
def layered(d, name, i):
    with open(f"{d}/{name}.0.base", "wb") as f:
        f.write(bytes([i % 251]) * P + bytes([(i + 1) % 251]) * P + bytes([(i + 2) % 251]) * P)
    with open(f"{d}/{name}.1.diff", "wb") as f:
        f.truncate(3 * P)
        f.seek(P)
        f.write(bytes([(i + 7) % 251]) * P)
big = f"{store}/big"
for i in range(entries):
    if i % 100 == 0:
        layered(big, f"v{i}", i)
    else:
        open(f"{big}/f{i}", "wb").close()
for i in range(chains):
    layered(f"{store}/chains", f"c{i}", i)
EOF

# Fault-injection builds hold the flattener (libfuse >= 3.17) at its first
# build for the whole mount: the views offered to it while it is held
# hold their layers' fds, and must neither pile up (at most four wait once
# half the budget is in use) nor make an open fail (an open short of fds
# has the waiting ones handed back first).
gate=
[ "$FAULTS" = 1 ] && gate=$T/flatten-gate && : >"$gate"
SNAPFS_FLATTEN_GATE=$gate mount_snapfs "$STORE" "$MNT"
step "daemon limit $LIMIT fds; $(nfds) open after mounting"

# check_chain I: the view c<I> reads as its merge.
cat >"$T/check.py" <<'EOF'
import errno, os, sys
P = 4096
def want(i):
    return bytes([i % 251]) * P + bytes([(i + 7) % 251]) * P + bytes([(i + 2) % 251]) * P
mode, d, lo, hi = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == "seq":
    for i in range(lo, hi):
        with open(f"{d}/c{i}", "rb") as f:
            got = f.read()
        if got != want(i):
            sys.exit(f"c{i}: wrong bytes")
    print(f"{hi - lo} views opened one after another, all right")
elif mode == "held":
    held, refused = [], 0
    for i in range(lo, hi):
        try:
            held.append((i, os.open(f"{d}/c{i}", os.O_RDONLY)))
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE):
                sys.exit(f"c{i}: open failed with {errno.errorcode[e.errno]}, not EMFILE")
            refused += 1
    for i, fd in held:
        if os.pread(fd, 3 * P, 0) != want(i):
            sys.exit(f"c{i}: wrong bytes while held")
    # Unrelated work while they are held: a listing, a stat, a plain file.
    if len(os.listdir(d)) < hi - lo:
        sys.exit("listing while held: too few names")
    os.stat(f"{d}/c{hi}")
    print(f"{len(held)} held, {refused} refused with EMFILE", flush=True)
    sys.stdin.readline()	# the shell samples the daemon meanwhile
    for i, fd in held:
        os.close(fd)
EOF

# 1. ls -l of the big directory.
peak_start
n=$(ls -l "$MNT/big" | wc -l) || fail "ls -l of $ENTRIES entries failed"
peak=$(peak_stop)
# Every entry, plus the layer files of each layered name, plus "total".
want=$((ENTRIES + 2 * ((ENTRIES + 99) / 100) + 1))
[ "$n" -eq "$want" ] || fail "ls -l showed $n lines, not $want"
step "1. ls -l of $ENTRIES entries: fine; daemon fds at peak $peak (limit $LIMIT)"
python3 - "$MNT/big" "$ENTRIES" <<'EOF' || fail "views in big/ after ls -l"
import sys
P = 4096
d, n = sys.argv[1], int(sys.argv[2])
for i in range(0, n, 100):
    with open(f"{d}/v{i}", "rb") as f:
        got = f.read()
    if got != bytes([i % 251]) * P + bytes([(i + 7) % 251]) * P + bytes([(i + 2) % 251]) * P:
        sys.exit(f"v{i}: wrong bytes")
EOF
log "   every view in it reads right afterwards"

# 2. CHAINS views one after another.
peak_start
python3 "$T/check.py" seq "$MNT/chains" 0 "$CHAINS" || fail "sequential opens"
peak=$(peak_stop)
step "2. daemon fds at peak $peak"
if [ -n "$gate" ] && [ "$HAVE_PASSTHROUGH" = yes ]; then
	# The flattener was held all along: offers were deferred, or handed
	# back when an open ran short of fds, rather than failing the opens.
	deferred=$(awk '$1 == "flat_offers_deferred" { print $2 }' "$MNT/.snapfs-stats")
	[ "${deferred:-0}" -gt 0 ] || fail "no offer to the held flattener was deferred or handed back"
	log "   offers to the held flattener deferred or handed back: $deferred"
fi

# 3. HELD at once, then all again one at a time.
peak_start
mkfifo "$T/go"
python3 "$T/check.py" held "$MNT/chains" 0 "$HELD" <"$T/go" >"$T/held.out" &
hp=$!
exec 5>"$T/go"
for _ in $(seq 100); do
	[ -s "$T/held.out" ] && break
	kill -0 "$hp" 2>/dev/null || break
	sleep 0.1
done
# Names elsewhere still work: a listing, a stat; an open past the budget
# fails with EMFILE and nothing else.
ls "$MNT/big" | head -n 3 >/dev/null || fail "a listing fails while views are held"
stat "$MNT/big/f1" >/dev/null || fail "stat fails while views are held"
if ! out=$(LC_ALL=C cat "$MNT/big/f1" 2>&1); then
	case $out in
	*"Too many open files"*) ;;
	*) fail "a plain file open past the budget: $out" ;;
	esac
fi
exec 5>&-
wait "$hp" || fail "holding $HELD views: $(cat "$T/held.out")"
peak=$(peak_stop)
step "3. $(cat "$T/held.out"); daemon fds at peak $peak"
grep -q "^0 held" "$T/held.out" && fail "no view could be held at all"
python3 "$T/check.py" seq "$MNT/chains" 0 "$HELD" || fail "the views do not open again after being closed"

# 5. (before 4, which remounts) a clean unmount.
umount_snapfs "$MNT"
step "5. clean unmount after the above: exit 0"

# 4. -o nowatch: a version nobody has open holds no layer of its chain.
mount_snapfs "$STORE" "$MNT" -o nowatch
cmp -s <(python3 -c 'import sys; P=4096; sys.stdout.buffer.write(bytes([5])*P+bytes([12])*P+bytes([7])*P)') \
	"$MNT/chains/c5" || fail "c5 reads wrong"
rm "$STORE/chains/c5.1.diff"
# Nothing has c5 open; a job that took its view when it was opened (the
# flattener waits until a version has gone unread for a second before it
# builds, where it runs) lets go when it ends.
diff_released() {
	! ls -l "/proc/$SNAPFS_PID/fd" | grep -q 'c5.1.diff (deleted)'
}
wait_for 5000 diff_released || fail "the rolled-back diff is still held open by the daemon"
log "   the deleted diff let go ${WAITED_MS} ms after its removal"
cmp -s <(python3 -c 'import sys; P=4096; sys.stdout.buffer.write(bytes([5])*P+bytes([6])*P+bytes([7])*P)') \
	"$MNT/chains/c5" || fail "c5 does not read as rolled back"
step "4. -o nowatch: the deleted diff is not held open; the view rolled back"
umount_snapfs "$MNT"
log "PASS"
