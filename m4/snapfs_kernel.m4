# SPDX-License-Identifier: GPL-2.0-or-later
# SNAPFS_CHECK_KERNEL_FEATURES
# Probes the kernel interfaces snapfs uses when it can, instead of assuming
# them: FICLONE/FICLONERANGE from <linux/fs.h>, O_TMPFILE, copy_file_range.
AC_DEFUN([SNAPFS_CHECK_KERNEL_FEATURES], [
  AC_CACHE_CHECK([for FICLONE in linux/fs.h], [snapfs_cv_ficlone], [
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[#include <linux/fs.h>]],
      [[int a = FICLONE, b = FICLONERANGE; (void)a; (void)b;]])],
      [snapfs_cv_ficlone=yes], [snapfs_cv_ficlone=no])])
  AS_IF([test "x$snapfs_cv_ficlone" = xyes],
    [AC_DEFINE([HAVE_FICLONE], [1], [Define if linux/fs.h has FICLONE])])
  AC_CACHE_CHECK([for O_TMPFILE], [snapfs_cv_o_tmpfile], [
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[#include <fcntl.h>]],
      [[int f = O_TMPFILE; (void)f;]])],
      [snapfs_cv_o_tmpfile=yes], [snapfs_cv_o_tmpfile=no])])
  AS_IF([test "x$snapfs_cv_o_tmpfile" = xyes],
    [AC_DEFINE([HAVE_O_TMPFILE], [1], [Define if fcntl.h has O_TMPFILE])])
  AC_CHECK_FUNCS([copy_file_range])
  AC_CHECK_DECLS([SEEK_DATA, SEEK_HOLE], [],
    [AC_MSG_ERROR([SEEK_DATA/SEEK_HOLE are required (Linux >= 3.1)])],
    [[#include <unistd.h>]])
])
