# SPDX-License-Identifier: GPL-2.0-or-later
# SNAPFS_FUSE_PASSTHROUGH
# Whether the fuse3 found has kernel FUSE passthrough (libfuse >= 3.17:
# FUSE_CAP_PASSTHROUGH, fuse_passthrough_open(), fuse_file_info.backing_id).
# Defines HAVE_FUSE_PASSTHROUGH and the automake conditional
# HAVE_FUSE_PASSTHROUGH; sets snapfs_passthrough to yes or no for the
# summary. A libfuse in a private prefix is found through PKG_CONFIG_PATH
# (contrib/build-libfuse.sh prints the settings).
AC_DEFUN([SNAPFS_FUSE_PASSTHROUGH], [
  PKG_CHECK_EXISTS([fuse3 >= 3.17], [snapfs_passthrough=yes], [snapfs_passthrough=no])
  AS_IF([test "x$snapfs_passthrough" = xyes], [
    snapfs_save_CPPFLAGS=$CPPFLAGS
    snapfs_save_LIBS=$LIBS
    CPPFLAGS="$CPPFLAGS -DFUSE_USE_VERSION=312 $FUSE_CFLAGS"
    LIBS="$FUSE_LIBS $LIBS"
    AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <fuse_lowlevel.h>]],
      [[struct fuse_file_info fi = { .backing_id = 0 };
        (void)fi; (void)FUSE_CAP_PASSTHROUGH;
        return fuse_passthrough_open(0, 0) + fuse_passthrough_close(0, 0);]])],
      [], [snapfs_passthrough=no])
    CPPFLAGS=$snapfs_save_CPPFLAGS
    LIBS=$snapfs_save_LIBS])
  AC_MSG_CHECKING([for kernel FUSE passthrough in libfuse])
  AC_MSG_RESULT([$snapfs_passthrough])
  AS_IF([test "x$snapfs_passthrough" = xyes],
    [AC_DEFINE([HAVE_FUSE_PASSTHROUGH], [1],
      [Define if libfuse has fuse_passthrough_open() (3.17 and later).])])
  AC_SUBST([snapfs_passthrough])
  AM_CONDITIONAL([HAVE_FUSE_PASSTHROUGH], [test "x$snapfs_passthrough" = xyes])
])
