# SPDX-License-Identifier: GPL-2.0-or-later
# SNAPFS_WARNINGS: -Wall -Wextra always, and --enable-werror to make them fatal.
# SNAPFS_SANITIZERS: --enable-sanitizers builds everything with ASan + UBSan;
# --enable-tsan with ThreadSanitizer instead (the two cannot be combined).
AC_DEFUN([SNAPFS_WARNINGS], [
  AC_ARG_ENABLE([werror],
    [AS_HELP_STRING([--enable-werror], [treat compiler warnings as errors])],
    [], [enable_werror=no])
  WARN_CFLAGS="-Wall -Wextra -Wshadow -Wformat=2 -Wmissing-prototypes -Wstrict-prototypes -Wno-unused-parameter"
  AS_IF([test "x$enable_werror" = xyes], [WARN_CFLAGS="$WARN_CFLAGS -Werror"])
  AC_SUBST([WARN_CFLAGS])
])
AC_DEFUN([SNAPFS_SANITIZERS], [
  AC_ARG_ENABLE([sanitizers],
    [AS_HELP_STRING([--enable-sanitizers], [build with AddressSanitizer and UndefinedBehaviorSanitizer])],
    [], [enable_sanitizers=no])
  AC_ARG_ENABLE([tsan],
    [AS_HELP_STRING([--enable-tsan], [build with ThreadSanitizer (excludes --enable-sanitizers)])],
    [], [enable_tsan=no])
  AS_IF([test "x$enable_sanitizers" = xyes && test "x$enable_tsan" = xyes],
    [AC_MSG_ERROR([--enable-sanitizers (ASan) and --enable-tsan cannot be combined])])
  SAN_CFLAGS=""
  SAN_LDFLAGS=""
  AS_IF([test "x$enable_sanitizers" = xyes], [
    SAN_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
    SAN_LDFLAGS="-fsanitize=address,undefined"
  ])
  AS_IF([test "x$enable_tsan" = xyes], [
    SAN_CFLAGS="-fsanitize=thread -fno-omit-frame-pointer -g"
    SAN_LDFLAGS="-fsanitize=thread"
    save_CFLAGS=$CFLAGS; save_LDFLAGS=$LDFLAGS
    CFLAGS="$CFLAGS $SAN_CFLAGS"; LDFLAGS="$LDFLAGS $SAN_LDFLAGS"
    AC_MSG_CHECKING([whether $CC links with -fsanitize=thread])
    AC_LINK_IFELSE([AC_LANG_PROGRAM([], [[return 0;]])],
      [AC_MSG_RESULT([yes])],
      [AC_MSG_RESULT([no]); AC_MSG_ERROR([--enable-tsan: $CC cannot link -fsanitize=thread (libtsan missing?)])])
    CFLAGS=$save_CFLAGS; LDFLAGS=$save_LDFLAGS
    AC_DEFINE([SNAPFS_TSAN], [1], [Define when built with ThreadSanitizer])
  ])
  AC_SUBST([SAN_CFLAGS])
  AC_SUBST([SAN_LDFLAGS])
  AM_CONDITIONAL([SANITIZERS], [test "x$enable_sanitizers" = xyes])
  AM_CONDITIONAL([TSAN], [test "x$enable_tsan" = xyes])
])
# SNAPFS_PTHREAD: checks that the compiler accepts -pthread and links
# pthread_create with it; sets PTHREAD_CFLAGS/PTHREAD_LIBS.
AC_DEFUN([SNAPFS_PTHREAD], [
  AC_MSG_CHECKING([whether $CC accepts -pthread])
  save_CFLAGS=$CFLAGS; CFLAGS="$CFLAGS -pthread"
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <pthread.h>]],
      [[pthread_t t; return pthread_create(&t, 0, 0, 0);]])],
    [AC_MSG_RESULT([yes])],
    [AC_MSG_RESULT([no]); AC_MSG_ERROR([POSIX threads (-pthread) are required])])
  CFLAGS=$save_CFLAGS
  PTHREAD_CFLAGS="-pthread"
  PTHREAD_LIBS="-pthread"
  AC_SUBST([PTHREAD_CFLAGS])
  AC_SUBST([PTHREAD_LIBS])
])
# SNAPFS_ENABLE_FAULTS: --enable-fault-injection builds the compactor's
# numbered fault points (SNAPFS_FAULT=STEP:kill|fail), for test builds only.
AC_DEFUN([SNAPFS_ENABLE_FAULTS], [
  AC_ARG_ENABLE([fault-injection],
    [AS_HELP_STRING([--enable-fault-injection], [honour SNAPFS_FAULT in the compactor (test builds)])],
    [], [enable_fault_injection=no])
  AS_IF([test "x$enable_fault_injection" = xyes],
    [AC_DEFINE([SNAPFS_FAULT_INJECTION], [1], [Define to honour SNAPFS_FAULT])])
  AM_CONDITIONAL([FAULT_INJECTION], [test "x$enable_fault_injection" = xyes])
])
