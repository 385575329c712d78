#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Access control with -o allow_other (doc/design.md, "Access control"): a
# view is never readable by a user who may not read every one of its
# layers, modes, owners and ACLs included; plain files and directories
# honour their ACLs through the mount (opens, listings and traversal); a
# changed ACL in STORE is honoured at the next open; a user who may read
# every layer reads the view, equal to an independent reference merge.
# Compaction, by snapfs-compact and by the daemon, never widens access: the
# new base gets the AND of the merged layers' modes and their ACL, and
# chains whose layers differ in owner are refused with one line. Denials
# are not logged. The test makes its own unprivileged user and group (and
# removes them, also when it fails) and acts as that user with setpriv.
. ./tests/mount/lib.sh
setup
umask 022
for tool in setfacl getfacl setpriv useradd; do
	command -v "$tool" >/dev/null 2>&1 && continue
	[ -n "${CI:-}" ] && fail "CI must have $tool (contrib/install-deps.sh)"
	skip "$tool not found (packages acl, util-linux, passwd)"
done

# ---- an unprivileged user U (primary group U) in a second group GU ----
U= GU= CREATED=0
for try in 1 2 3 4 5; do
	U=snapfsacc$((RANDOM % 100000))
	GU=${U}g
	if ! getent passwd "$U" >/dev/null && ! getent group "$U" >/dev/null &&
		! getent group "$GU" >/dev/null; then
		break
	fi
	U=
done
[ -n "$U" ] || fail "no free user name found"

acc_cleanup() {
	local rc=$? m p
	set +e
	for m in "${MOUNTS[@]}"; do
		if is_mounted "$m"; then
			"$FUSERMOUNT" -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
		fi
	done
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	PIDS=()
	if [ "$CREATED" = 1 ]; then
		userdel "$U" 2>/dev/null
		getent group "$U" >/dev/null && groupdel "$U"
		getent group "$GU" >/dev/null && groupdel "$GU"
	fi
	(exit "$rc")
	cleanup
}
trap acc_cleanup EXIT

CREATED=1
groupadd "$U" && groupadd "$GU" ||
	fail "groupadd $U $GU failed"
useradd -M -N -d / -s /usr/sbin/nologin -g "$U" -G "$GU" "$U" ||
	fail "useradd $U failed"
log "acting as $U ($(id "$U"))"

# as_user CMD [ARG...]: runs CMD as U with U's groups, no capabilities.
as_user() {
	setpriv --reuid="$U" --regid="$U" --init-groups -- "$@"
}
# denied WHAT CMD [ARG...]: CMD run as U fails with EACCES; else fails
# the test saying WHAT.
denied() {
	local what=$1 out
	shift
	if out=$(LC_ALL=C as_user "$@" 2>&1 >/dev/null); then
		fail "$what (it succeeded)"
	fi
	case $out in
	*"Permission denied"*) ;;
	*) fail "$what (it failed otherwise: $out)" ;;
	esac
}
# user_reads VIEW REF: U reads VIEW whole and it equals REF.
user_reads() {
	as_user cat "$1" | cmp - "$2" || fail "$U: $1 differs from ${2#"$T"/} or cannot be read"
}

chmod 0755 "$T"
SZ=$((8 * PAGE))

# chain_secret STORE REF: secret = a 0644 base, a 0600 diff holding a secret
# page, a 0644 diff above it.
chain_secret() {
	mk_sparse "$2/secret" "$SZ"
	layer_pages "$1/secret.0.base" "$2/secret" 0:11 1:12 2:13 3:14
	layer_pages "$1/secret.1.diff" "$2/secret" 2:83
	layer_pages "$1/secret.2.diff" "$2/secret" 5:21
	chmod 0644 "$1/secret.0.base" "$1/secret.2.diff"
	chmod 0600 "$1/secret.1.diff"
}
# chain_owners STORE REF: owners = a base of U's (0640), a diff of root's
# (0640): the view shows U's 0440, but U may not read the diff.
chain_owners() {
	mk_sparse "$2/owners" "$SZ"
	layer_pages "$1/owners.0.base" "$2/owners" 0:41 7:42
	layer_pages "$1/owners.1.diff" "$2/owners" 7:43
	chown "$U:$U" "$1/owners.0.base"
	chmod 0640 "$1/owners.0.base" "$1/owners.1.diff"
}
# chain_aclsame STORE REF: aclsame = base and diff 0640 with the same ACL
# (a named entry for U, mask r), the diff also without the group's read.
chain_aclsame() {
	mk_sparse "$2/aclsame" "$SZ"
	layer_pages "$1/aclsame.0.base" "$2/aclsame" 0:51 1:52
	layer_pages "$1/aclsame.1.diff" "$2/aclsame" 1:53
	chmod 0640 "$1/aclsame.0.base" "$1/aclsame.1.diff"
	setfacl -m "u:$U:r" "$1/aclsame.0.base" "$1/aclsame.1.diff" &&
		setfacl -m "g::-" "$1/aclsame.1.diff" || fail "setfacl on aclsame"
}

# ==== 1: opens, listings and traversal through the mount ====
S=$T/store M=$T/mnt R=$T/ref
mkdir -p "$S" "$R"
chain_secret "$S" "$R"
chain_owners "$S" "$R"
# pub: every layer 0644
mk_sparse "$R/pub" "$SZ"
layer_pages "$S/pub.0.base" "$R/pub" 0:31 1:32
layer_pages "$S/pub.1.diff" "$R/pub" 1:33
layer_pages "$S/pub.2.diff" "$R/pub" 6:34
# grp: every layer 0640 root:GU, and U is in GU
mk_sparse "$R/grp" "$SZ"
layer_pages "$S/grp.0.base" "$R/grp" 0:61
layer_pages "$S/grp.1.diff" "$R/grp" 4:62
chgrp "$GU" "$S/grp.0.base" "$S/grp.1.diff"
chmod 0640 "$S/grp.0.base" "$S/grp.1.diff"
# acldiff: 0644 layers, but the diff's ACL denies U (its mode stays 0644)
mk_sparse "$R/acldiff" "$SZ"
layer_pages "$S/acldiff.0.base" "$R/acldiff" 0:71
layer_pages "$S/acldiff.1.diff" "$R/acldiff" 3:72
setfacl -m "u:$U:-" "$S/acldiff.1.diff" || fail "setfacl on acldiff.1.diff"
# plain files: one denied to the owning group (U is a member) by its ACL,
# one readable; a directory whose ACL denies U, with a file and a view.
printf 'group may not read\n' >"$S/pacl"
chgrp "$GU" "$S/pacl"
setfacl -m "g::-,m::r" "$S/pacl" || fail "setfacl on pacl"
printf 'readable\n' >"$S/pok"
mkdir "$S/dacl"
printf 'inside\n' >"$S/dacl/inner"
cp "$S/pub.0.base" "$S/dacl/v.0.base"
setfacl -m "u:$U:-" "$S/dacl" || fail "setfacl on dacl"

# In STORE, U is denied what it must be denied through the mount.
denied "store: secret.1.diff" cat "$S/secret.1.diff"
denied "store: owners.1.diff" cat "$S/owners.1.diff"
denied "store: acldiff.1.diff" cat "$S/acldiff.1.diff"
denied "store: pacl" cat "$S/pacl"
denied "store: dacl" ls "$S/dacl"
as_user cat "$S/pok" >/dev/null || fail "store: $U cannot read pok"

mount_snapfs "$S" "$M" -o allow_other,compact=off

# views U may not read
denied "secret: $U read the secret through the view" cat "$M/secret"
denied "owners: $U read root's diff through the view" cat "$M/owners"
denied "acldiff: $U read a diff its ACL denies" cat "$M/acldiff"
for v in secret owners acldiff; do
	cmp "$M/$v" "$R/$v" || fail "$v: root reads other bytes than the reference"
done
# views U may read: no false denials
user_reads "$M/pub" "$R/pub"
user_reads "$M/grp" "$R/grp"
# plain files and directories
denied "pacl: the ACL's group entry is ignored through the mount" cat "$M/pacl"
user_reads "$M/pok" "$S/pok"
denied "dacl: $U listed a directory its ACL denies" ls "$M/dacl"
denied "dacl: $U traversed a directory its ACL denies" stat "$M/dacl/inner"
denied "dacl: $U read a file in a directory its ACL denies" cat "$M/dacl/inner"
denied "dacl: $U read a view in a directory its ACL denies" cat "$M/dacl/v"
as_user ls "$M" >/dev/null || fail "$U cannot list the mount's root"
getfacl -c "$M/pacl" 2>/dev/null | grep -qx "group::---" || fail "pacl: getfacl through the mount"

# ls -l: a view shows its base's owner and the AND of its layers' modes
# (without write bits).
for want in secret:400:root pub:444:root grp:440:root owners:440:"$U" acldiff:444:root; do
	IFS=: read -r v mode owner <<<"$want"
	got=$(stat -c '%a:%U' "$M/$v")
	[ "$got" = "$mode:$owner" ] || fail "$v: mode and owner $got, want $mode:$owner"
done

# A changed ACL in STORE is honoured at the next open, whatever the kernel
# has cached: U just read pok; now its ACL denies U.
setfacl -m "u:$U:-" "$S/pok" || fail "setfacl on pok"
denied "pok: a new ACL in STORE was not honoured at once" cat "$M/pok"

# Denials are normal: no log line for them.
n=$(grep -ci -e denied -e "permission" "$T/snapfs.log")
[ "$n" = 0 ] || fail "denials were logged: $(cat "$T/snapfs.log")"
umount_snapfs "$M"
log "ok: views, files and directories honour every layer's modes, owners and ACLs"

# ==== 2: snapfs-compact on an unmounted store ====
S1=$T/store1 R1=$T/ref1
mkdir -p "$S1" "$R1"
chain_secret "$S1" "$R1"
chain_aclsame "$S1" "$R1"
"$SNAPFS_COMPACT" -t 0 -k 0 "$S1" >"$T/compact1.out" 2>&1 ||
	fail "snapfs-compact failed: $(cat "$T/compact1.out")"
[ -f "$S1/secret.2.base" ] && [ ! -e "$S1/secret.1.diff" ] ||
	fail "secret was not compacted: $(ls "$S1")"
[ "$(stat -c %a "$S1/secret.2.base")" = 600 ] ||
	fail "the new base secret.2.base is $(stat -c %a "$S1/secret.2.base"), want 600"
denied "store: $U reads the compacted secret" cat "$S1/secret.2.base"
acl=$(getfacl -cp "$S1/aclsame.1.base" | grep . | tr '\n' ' ')
[ "$acl" = "user::rw- user:$U:r-- group::--- mask::r-- other::--- " ] ||
	fail "aclsame.1.base has ACL '$acl'"
mount_snapfs "$S1" "$M" -o allow_other,compact=off
denied "secret: $U reads the compacted view" cat "$M/secret"
cmp "$M/secret" "$R1/secret" || fail "compacted secret differs from the reference"
cmp "$M/aclsame" "$R1/aclsame" || fail "compacted aclsame differs from the reference"
umount_snapfs "$M"

# Layers of different owners: refused, one line, the store unchanged.
S2=$T/store2 R2=$T/ref2
mkdir -p "$S2" "$R2"
chain_owners "$S2" "$R2"
before=$(store_state "$S2")
if "$SNAPFS_COMPACT" -t 0 -k 0 "$S2" >"$T/compact2.out" 2>"$T/compact2.err"; then
	fail "snapfs-compact compacted layers of different owners"
fi
[ "$(grep -c "compaction refused" "$T/compact2.err")" = 1 ] &&
	grep -q "owners.0.base and owners.1.diff differ in owner" "$T/compact2.err" ||
	fail "snapfs-compact: want one refusal line, got: $(cat "$T/compact2.err")"
grep -q REFUSED "$T/compact2.out" || fail "snapfs-compact did not say REFUSED"
[ "$(store_state "$S2")" = "$before" ] || fail "a refused compaction changed the store"
[ -z "$(staging_files "$S2")" ] || fail "a refused compaction left a staging file"
log "ok: snapfs-compact narrows the new base and refuses mixed owners"

# ==== 3: the daemon's background compactor ====
S3=$T/store3 R3=$T/ref3
mkdir -p "$S3" "$R3"
chain_secret "$S3" "$R3"
chain_owners "$S3" "$R3"
: >"$T/snapfs.log"
mount_snapfs "$S3" "$M" -o allow_other,compact_threshold=0,keep_diffs=0
stat "$M/secret" "$M/owners" >/dev/null || fail "lookups in store3"
depth_is() { [ "$(xattr "$M/$1" user.snapfs.depth 2>/dev/null)" = "$2" ]; }
refused() { case $(xattr "$M/owners" user.snapfs.compaction) in refused:*) ;; *) false ;; esac; }
wait_for 30000 depth_is secret 0 || fail "the daemon did not compact secret"
wait_for 30000 refused || fail "owners: user.snapfs.compaction is '$(xattr "$M/owners" user.snapfs.compaction)'"
[ "$(stat -c %a "$S3/secret.2.base")" = 600 ] ||
	fail "the daemon's new base is $(stat -c %a "$S3/secret.2.base"), want 600"
denied "store: $U reads the daemon's compacted secret" cat "$S3/secret.2.base"
denied "secret: $U reads the view after the daemon compacted it" cat "$M/secret"
cmp "$M/secret" "$R3/secret" || fail "secret differs from the reference after compaction"
[ "$(log_count "owners" "compaction refused")" = 1 ] ||
	fail "want one refusal line for owners: $(cat "$T/snapfs.log")"
[ -f "$S3/owners.0.base" ] && [ -f "$S3/owners.1.diff" ] ||
	fail "the refused chain lost a layer: $(ls "$S3")"
denied "owners: $U reads the refused chain" cat "$M/owners"
cmp "$M/owners" "$R3/owners" || fail "owners differs from the reference"
umount_snapfs "$M"
log "ok: the daemon narrows the new base, refuses mixed owners once"
