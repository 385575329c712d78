# SPDX-License-Identifier: GPL-2.0-or-later
# SNAPFS_REQUIRE_PKG(VAR, MODULES, DEBIAN-PACKAGE)
# Finds a required library with pkg-config; when it is missing, fails with a
# message that names the Debian package providing it.
AC_DEFUN([SNAPFS_REQUIRE_PKG], [
  PKG_CHECK_MODULES([$1], [$2], [],
    [AC_MSG_ERROR([$2 not found. On Debian or Ubuntu: apt-get install $3])])
])
