# SPDX-License-Identifier: GPL-2.0-or-later
# SNAPFS_LIBURING
# liburing, for gathered view reads (src/gather.c): one io_uring submission
# reads every piece of a request. --with-liburing=auto (the default) uses it
# where found, yes requires it, no builds without it (reads then splice).
# Defines HAVE_LIBURING, substitutes URING_CFLAGS and URING_LIBS, sets
# snapfs_liburing for the summary.
AC_DEFUN([SNAPFS_LIBURING], [
  AC_ARG_WITH([liburing],
    [AS_HELP_STRING([--with-liburing=auto|yes|no],
      [gather view reads with io_uring (default: auto)])],
    [], [with_liburing=auto])
  snapfs_liburing=no
  AS_IF([test "x$with_liburing" != xno], [
    PKG_CHECK_MODULES([URING], [liburing >= 2.0],
      [snapfs_liburing=yes],
      [AS_IF([test "x$with_liburing" = xyes],
        [AC_MSG_ERROR([liburing >= 2.0 not found: install liburing-dev or configure --without-liburing])])])])
  AS_IF([test "x$snapfs_liburing" = xyes],
    [AC_DEFINE([HAVE_LIBURING], [1],
      [Define to gather view reads with io_uring (liburing).])],
    [URING_CFLAGS=; URING_LIBS=])
  AC_SUBST([URING_CFLAGS])
  AC_SUBST([URING_LIBS])
])
