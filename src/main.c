/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * snapfs: shows a store of layered VM snapshot files (a base plus sparse
 * diffs) as flat, read-only files. This file parses the command line, sets
 * up the library pieces and the FUSE session, and tears them down in
 * reverse order.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "compactd.h"
#include "dirwatch.h"
#include "flatten.h"
#include "fuse_ops.h"
#include "gather.h"
#include "log.h"
#include "memtrim.h"
#include "monotime.h"
#include "names.h"
#include "node.h"
#include "prefetch.h"
#include "passthrough.h"
#include "view.h"

/* Size of the shared zero buffer that holes are answered from; larger
 * holes in one request take several slices of it. */
#define ZERO_LEN (1u << 20)

struct options {
	char *store;
	unsigned cache_mb;
	unsigned page_size;
	double entry_timeout;
	double revalidate;
	double attr_timeout;
	int nowatch;
	char *compact;
	unsigned compact_threshold;
	unsigned keep_diffs;
	unsigned compact_rate;
	char *read_reply;
	char *open_rw;
	char *prefetch;
	unsigned prefetch_mb;
	unsigned prefetch_rate;
	unsigned readahead_kb;
	char *passthrough;
	char *flatten;
	int ready_fd;
	unsigned max_threads;
	unsigned fd_budget;
	int allow_other;
	int default_permissions;
	int nonopts;
};

#define OPT(t, p) { t, offsetof(struct options, p), 1 }
static const struct fuse_opt option_spec[] = {
	OPT("cache_mb=%u", cache_mb),
	OPT("page_size=%u", page_size),
	OPT("entry_timeout=%lf", entry_timeout),
	OPT("revalidate=%lf", revalidate),
	OPT("nowatch", nowatch),
	OPT("compact=%s", compact),
	OPT("compact_threshold=%u", compact_threshold),
	OPT("keep_diffs=%u", keep_diffs),
	OPT("compact_rate=%u", compact_rate),
	OPT("read_reply=%s", read_reply),
	OPT("open_rw=%s", open_rw),
	OPT("prefetch=%s", prefetch),
	OPT("prefetch_mb=%u", prefetch_mb),
	OPT("prefetch_rate=%u", prefetch_rate),
	OPT("readahead_kb=%u", readahead_kb),
	OPT("passthrough=%s", passthrough),
	OPT("flatten=%s", flatten),
	OPT("attr_timeout=%lf", attr_timeout),
	OPT("ready_fd=%d", ready_fd),
	OPT("max_threads=%u", max_threads),
	OPT("fd_budget=%u", fd_budget),
	FUSE_OPT_END
};

enum { KEY_ALLOW_OTHER };

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct options *o = data;

	(void)outargs;
	if (key == FUSE_OPT_KEY_NONOPT) {
		/* The first non-option is STORE; the second, the mountpoint,
		 * is left for fuse_parse_cmdline(). */
		if (o->nonopts++ == 0) {
			o->store = strdup(arg);
			return 0;
		}
		return 1;
	}
	if (key == FUSE_OPT_KEY_OPT && strcmp(arg, "allow_other") == 0)
		o->allow_other = 1;
	if (key == FUSE_OPT_KEY_OPT && strcmp(arg, "default_permissions") == 0)
		o->default_permissions = 1;
	return 1;
}

static void usage(const char *prog)
{
	printf("usage: %s [options] STORE MOUNTPOINT\n\n"
	       "Shows every layered file of STORE (NAME.<seq>.base plus sparse\n"
	       "NAME.<seq>.diff layers) as one flat, read-only file NAME.\n\n"
	       "snapfs options:\n"
	       "    -o cache_mb=N          memory for all extent maps (default: 1/32 of RAM,\n"
	       "                           at least 64)\n"
	       "    -o page_size=N         page size holes must resolve to (default 4096)\n"
	       "    -o entry_timeout=SEC   how long names are cached where changes\n"
	       "                           are watched with inotify (default 60)\n"
	       "    -o revalidate=SEC      how long names are cached where they are\n"
	       "                           not (network filesystems; default 0.05)\n"
	       "    -o nowatch             do not use inotify: revalidate everywhere\n"
	       "    -o compact=on|off      background compaction (default on)\n"
	       "    -o compact_threshold=N compact chains with more than N diffs\n"
	       "                           (default 8)\n"
	       "    -o keep_diffs=K        diffs kept above the new base (default 2)\n"
	       "    -o compact_rate=MB     compaction writes at most MB MiB/s\n"
	       "                           (default 256; 0: unlimited)\n"
	       "    -o read_reply=auto|gather|splice|mmap  answer reads of several\n"
	       "                           pieces with one io_uring submission\n"
	       "                           where the kernel allows (auto, default),\n"
	       "                           always by splicing, or from mappings\n"
	       "    -o readahead_kb=N      the mount's read-ahead and fault-around\n"
	       "                           window (default 1024; 0: the kernel's)\n"
	       "    -o open_rw=refuse|private  O_RDWR opens of layered files: refused\n"
	       "                           (default), or let in for a VMM that maps\n"
	       "                           its memory file private (QEMU before 8.2);\n"
	       "                           writes and shared mappings still fail\n"
	       "    -o prefetch=diffs|all|off  push the 1 MiB windows that hold\n"
	       "                           diff pages (default), every page, or\n"
	       "                           none of an opened version into its\n"
	       "                           page cache in the background\n"
	       "    -o prefetch_mb=N       memory the pushed pages may take, all\n"
	       "                           versions together (default: an eighth\n"
	       "                           of the memory, at least 1024)\n"
	       "    -o prefetch_rate=MB    push at most MB MiB/s (default 0: as\n"
	       "                           fast as the idle CPU allows)\n"
	       "    -o passthrough=auto|off  serve views of one file and plain files\n"
	       "                           by kernel FUSE passthrough (default auto)\n"
	       "    -o flatten=auto|always|off  build a flat file of each new layered\n"
	       "                           version for passthrough; auto: where the\n"
	       "                           base can be reflinked (default auto)\n"
	       "    -o attr_timeout=SEC    how long attributes of ordinary entries\n"
	       "                           are cached (default 1.0)\n"
	       "    -o ready_fd=N          write one byte to fd N once mounted\n"
	       "    -o max_threads=N       worker threads (default 16)\n"
	       "    -o max_idle_threads=N  idle worker threads kept (default: twice\n"
	       "                           the CPUs, at least 4)\n"
	       "    -o fd_budget=N         fds kept open for STORE's entries (default:\n"
	       "                           a quarter of the open file limit, at\n"
	       "                           most 16384); open files get the rest\n"
	       "                           but a reserve\n"
	       "    -o allow_other         let other users in; implies\n"
	       "                           default_permissions: STORE's modes and\n"
	       "                           ACLs apply, and a layered file opens only\n"
	       "                           for users who may read all its layers\n\n",
	       prog);
}

/*
 * Raises the soft limit on open files to the hard one and splits it
 * (doc/design.md §9.6): *nodes for the fds the inode table keeps for
 * STORE's entries (asked, or a quarter of the limit, at most 16384), a
 * reserve for the library, the watcher, the compactor, directory scans and
 * the io_uring of up to rings worker threads (gather.h; *rings gets how
 * many fit: at most a sixteenth of the limit), and *files for open files: the layers of open views and plain files.
 * Returns 0, or -1 if fd_budget leaves nothing for open files.
 */
static int split_nofile(unsigned asked, unsigned *rings, unsigned *nodes, size_t *files)
{
	struct rlimit rl;
	rlim_t limit, reserve;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		*nodes = asked ? asked : 256;
		*files = 0;		/* unknown: no budget of our own */
		return 0;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t soft = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			log_warn("cannot raise the open file limit: %s", strerror(errno));
			rl.rlim_cur = soft;
		}
	}
	limit = rl.rlim_cur;
	*nodes = asked ? asked : limit / 4 > 16384 ? 16384 : (unsigned)(limit / 4);
	reserve = limit / 8 < 16 ? 16 : limit / 8 > 1024 ? 1024 : limit / 8;
	if ((rlim_t)*rings > limit / 16)
		*rings = (unsigned)(limit / 16);
	reserve += *rings;
	if (limit < (rlim_t)*nodes + reserve + 4) {
		log_err("fd_budget=%u leaves too few of the %llu open files allowed "
			"(ulimit -n) for open views", *nodes, (unsigned long long)limit);
		return -1;
	}
	*files = limit == RLIM_INFINITY ? 0 : (size_t)(limit - *nodes - reserve);
	return 0;
}

/*
 * The push's memory budget when -o prefetch_mb is not given: an eighth of
 * the machine's memory, at least 1 GiB. The pushed pages are clean page
 * cache the kernel can reclaim, but they are a second copy of the layers'
 * pages; a fixed 1 GiB stopped the diffs of a 2 GiB VM's 16-deep chain
 * half-way (doc/performance.md, restore).
 */
static unsigned prefetch_default_mb(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
	uint64_t mb;

	if (pages <= 0 || size <= 0)
		return 1024;
	mb = ((uint64_t)pages * (uint64_t)size >> 20) / 8;
	return mb < 1024 ? 1024 : mb > UINT_MAX / 2 ? UINT_MAX / 2 : (unsigned)mb;
}

/* -o read_reply (checked) as a reply mode: auto and gather gather where
 * io_uring works here and splice otherwise; gather, asked for by name,
 * says so in the log. */
static enum reply_mode reply_mode_of(const char *name)
{
	if (name && strcmp(name, "mmap") == 0)
		return REPLY_MMAP;
	if (name && strcmp(name, "splice") == 0)
		return REPLY_SPLICE;
	if (gather_supported())
		return REPLY_GATHER;
	if (name && strcmp(name, "gather") == 0)
		log_warn("read_reply=gather: no io_uring here (%s); reads splice",
			 GATHER_BUILT ? "the kernel refuses a ring" : "built without liburing");
	return REPLY_SPLICE;
}

/* The read-ahead window snapfs gives its mount unless told otherwise
 * (-o readahead_kb; doc/performance.md, "Read-ahead"). */
#define READAHEAD_KB 1024

/* fs.pipe-max-size: how large libfuse can make a splice pipe (1 MiB if
 * it cannot be read). */
static size_t pipe_max_size(void)
{
	unsigned long v = 0;
	FILE *f = fopen("/proc/sys/fs/pipe-max-size", "re");

	if (f) {
		if (fscanf(f, "%lu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v ? (size_t)v : 1 << 20;
}

/*
 * Where the mount's read-ahead window is set (fuse_ops.h, readahead_*):
 * its backing device info's read_ahead_kb in sysfs, found with a statx
 * that does not ask the daemon (AT_STATX_DONT_SYNC): it is not serving
 * yet. The window is written at the first open, after the kernel has taken
 * the INIT reply, which would cut it back to the 128 KiB FUSE starts with.
 */
static void plan_readahead(struct snapfs *fs, const char *mountpoint, unsigned kb,
			   bool asked)
{
	struct statx stx;

	if (statx(AT_FDCWD, mountpoint, AT_STATX_DONT_SYNC, STATX_TYPE, &stx) < 0) {
		if (asked)
			log_warn("readahead_kb=%u: cannot stat %s: %s", kb, mountpoint,
				 strerror(errno));
		return;
	}
	snprintf(fs->readahead_path, sizeof(fs->readahead_path),
		 "/sys/class/bdi/%u:%u/read_ahead_kb", stx.stx_dev_major,
		 stx.stx_dev_minor);
	fs->readahead_kb = kb;
	fs->readahead_asked = asked;
	__atomic_store_n(&fs->readahead_pending, true, __ATOMIC_RELEASE);
}

/*
 * glibc loads libgcc_s the first time a thread is cancelled, which libfuse
 * does to its workers at unmount; a daemon out of fds then aborts ("libgcc_s.so.1
 * must be installed for pthread_cancel to work"). Loaded now, it is there.
 */
static void preload_unwinder(void)
{
	if (!dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_NODELETE))
		log_warn("cannot load libgcc_s.so.1 (%s): an unmount while out of "
			 "file descriptors may abort the daemon", dlerror());
}

static int check_options(const struct options *o)
{
	struct stat st;

	if (!o->store) {
		log_err("no STORE given (see --help)");
		return -1;
	}
	if (stat(o->store, &st) < 0 || !S_ISDIR(st.st_mode)) {
		log_err("%s: not a directory: %s", o->store,
			errno ? strerror(errno) : "not a directory");
		return -1;
	}
	if (o->page_size < 512 || (o->page_size & (o->page_size - 1))) {
		log_err("page_size=%u: must be a power of two >= 512", o->page_size);
		return -1;
	}
	if (o->compact && strcmp(o->compact, "on") != 0 && strcmp(o->compact, "off") != 0) {
		log_err("compact=%s: must be on or off", o->compact);
		return -1;
	}
	if (o->read_reply && strcmp(o->read_reply, "mmap") != 0 &&
	    strcmp(o->read_reply, "splice") != 0 && strcmp(o->read_reply, "auto") != 0 &&
	    strcmp(o->read_reply, "gather") != 0) {
		log_err("read_reply=%s: must be auto, gather, splice or mmap", o->read_reply);
		return -1;
	}
	if (o->open_rw && openmode_parse(o->open_rw, &(enum open_rw){ 0 }) != 0) {
		log_err("open_rw=%s: must be refuse or private", o->open_rw);
		return -1;
	}
	if (o->prefetch && prefetch_parse_mode(o->prefetch, &(enum prefetch_mode){ 0 })) {
		log_err("prefetch=%s: must be diffs, all or off", o->prefetch);
		return -1;
	}
	if (o->prefetch_mb == 0) {
		log_err("prefetch_mb=0: use prefetch=off to push nothing");
		return -1;
	}
	if (o->cache_mb == 0) {
		log_err("cache_mb=0: no extent map would fit; every view needs one");
		return -1;
	}
	if (o->passthrough && strcmp(o->passthrough, "auto") != 0 &&
	    strcmp(o->passthrough, "off") != 0) {
		log_err("passthrough=%s: must be auto or off", o->passthrough);
		return -1;
	}
	if (o->flatten && flatten_mode_parse(o->flatten) < 0) {
		log_err("flatten=%s: must be auto, always or off", o->flatten);
		return -1;
	}
	if (o->keep_diffs > o->compact_threshold) {
		log_err("keep_diffs=%u must not exceed compact_threshold=%u",
			o->keep_diffs, o->compact_threshold);
		return -1;
	}
	if (o->entry_timeout < 0 || o->attr_timeout < 0 || o->revalidate < 0) {
		log_err("timeouts must not be negative");
		return -1;
	}
	return 0;
}

/* Shows STORE as the mount's source (findmnt, /proc/mounts); commas and
 * backslashes are escaped for libfuse's option parser. */
static int add_fsname(struct fuse_args *args, const char *store)
{
	char *opt = malloc(strlen("-ofsname=") + 2 * strlen(store) + 1), *p;
	int ret;

	if (!opt)
		return -1;
	p = opt + sprintf(opt, "-ofsname=");
	for (const char *s = store; *s; s++) {
		if (*s == ',' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	*p = '\0';
	ret = fuse_opt_add_arg(args, opt);
	free(opt);
	return ret;
}

/*
 * How long libfuse's multi-threaded loop may take to return once the
 * kernel has ended its connection. At the end libfuse cancels its workers; one cancelled
 * inside libfuse's own perror() ("fuse: reading device", after an
 * ECONNABORTED) keeps stdio's lock on stderr for good, the next worker to
 * print waits for it forever, and so does the loop's join of that worker
 * (seen once in t-unmount's ECONNABORTED case, a daemon left running with
 * its mount gone). Past this the daemon exits without the rest of its
 * cleanup: the mount is gone, flat files are unnamed, and nothing it
 * writes depends on a clean stop (compaction is crash-safe).
 */
#define LOOP_END_MS 2000

struct loop_guard {
	struct fuse_session *se;
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* CLOCK_MONOTONIC */
	bool done;		/* the loop returned; protected by lock */
};

/* Whether the kernel has ended the session's connection: /dev/fuse then
 * polls as an error. A signal also ends the session, with the mount still
 * there and requests still being answered: the loop is then left alone. */
static bool connection_gone(struct fuse_session *se)
{
	struct pollfd p = { .fd = fuse_session_fd(se), .events = POLLIN };

	return poll(&p, 1, 0) > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL));
}

static void *loop_guard_thread(void *arg)
{
	struct loop_guard *g = arg;
	int64_t ended = 0;

	pthread_mutex_lock(&g->lock);
	while (!g->done) {
		int64_t now = mono_ns(), next = now + 100 * 1000000LL;
		struct timespec ts = { (time_t)(next / 1000000000), (long)(next % 1000000000) };

		if (!ended && fuse_session_exited(g->se) && connection_gone(g->se))
			ended = now;
		if (ended && now - ended >= LOOP_END_MS * 1000000LL) {
			log_warn("libfuse's worker threads did not end within %d ms of the "
				 "session's end (one is stuck in libfuse): exiting without "
				 "the rest of the cleanup", LOOP_END_MS);
			_exit(0);
		}
		pthread_cond_timedwait(&g->cond, &g->lock, &ts);
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

/* fuse_session_loop_mt() with loop_guard_thread() beside it. */
static int loop_guarded(struct fuse_session *se, struct fuse_loop_config *loop)
{
	struct loop_guard g = { .se = se };
	pthread_condattr_t ca;
	pthread_t guard;
	bool guarded;
	int ret;

	pthread_mutex_init(&g.lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g.cond, &ca);
	pthread_condattr_destroy(&ca);
	guarded = pthread_create(&guard, NULL, loop_guard_thread, &g) == 0;
	ret = fuse_session_loop_mt(se, loop);
	pthread_mutex_lock(&g.lock);
	g.done = true;
	pthread_cond_signal(&g.cond);
	pthread_mutex_unlock(&g.lock);
	if (guarded)
		pthread_join(guard, NULL);
	pthread_cond_destroy(&g.cond);
	pthread_mutex_destroy(&g.lock);
	return ret;
}

/* For the flattener: a flat file is only worth building if passthrough
 * can serve it. */
static bool passthrough_usable(void *ctx)
{
	return passthrough_enabled(((struct snapfs *)ctx)->pt);
}

static void signal_ready(int fd)
{
	if (fd < 0)
		return;
	if (write(fd, "1", 1) != 1)
		log_warn("ready_fd=%d: %s", fd, strerror(errno));
	close(fd);
}

/* The thread that indexes STORE's root at the start (main()). */
static void *prime_root(void *arg)
{
	struct node_table *t = arg;

	(void)node_dir_index(t, node_root(t));	/* a lookup says why, if it fails */
	return NULL;
}

/*
 * How many idle worker threads stay (-o max_idle_threads): by default
 * twice the CPUs, at least 4. libfuse keeps every thread it ever started,
 * each with a receive buffer of a megabyte that the largest request it
 * took has touched (a batch of 10,000 forgets: 160 KiB); past this many
 * idle ones they end, and the heap gives their memory back (memtrim.h).
 */
static unsigned idle_threads(const struct fuse_cmdline_opts *copts, unsigned max_threads)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned n;

	if (copts->max_idle_threads != UINT_MAX)
		return copts->max_idle_threads;
	n = cpus > 2 ? 2 * (unsigned)cpus : 4;
	return n < max_threads ? n : max_threads;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options o = {
		.cache_mb = UINT_MAX,	/* not given: cache_default_mb() */
		.page_size = 4096,
		.entry_timeout = 60.0,
		.revalidate = 0.05,
		.attr_timeout = 1.0,
		.ready_fd = -1,
		.max_threads = 16,
		.readahead_kb = UINT_MAX,	/* not given: READAHEAD_KB */
		.compact_threshold = 8,
		.keep_diffs = 2,
		.compact_rate = 256,
		.prefetch_mb = UINT_MAX,	/* not given: prefetch_default_mb() */
	};
	struct fuse_cmdline_opts copts = { 0 };
	struct fuse_loop_config *loop = NULL;
	struct fuse_session *se = NULL;
	struct snapfs fs = { 0 };
	void *zero = MAP_FAILED;
	enum prefetch_mode prefetch = PREFETCH_DIFFS;
	unsigned fd_budget, rings;
	size_t file_budget;
	pthread_t primer;
	bool primed;
	int ret = 1;

	memtrim_exec_tuned(argv);	/* returns if it did not run again */
	memtrim_setup();	/* before any thread: one malloc arena */
	if (fuse_opt_parse(&args, &o, option_spec, opt_proc) == -1)
		goto out_args;
	if (fuse_parse_cmdline(&args, &copts) != 0)
		goto out_args;
	if (copts.show_help) {
		usage(argv[0]);
		fuse_cmdline_help();
		fuse_lowlevel_help();
		ret = 0;
		goto out_args;
	}
	if (copts.show_version) {
		printf("snapfs %s\n", PACKAGE_VERSION);
		fuse_lowlevel_version();
		ret = 0;
		goto out_args;
	}
	if (copts.debug)
		snapfs_log_level = FUSE_LOG_DEBUG;
	if (!copts.mountpoint) {
		log_err("no MOUNTPOINT given (see --help)");
		goto out_args;
	}
	if (check_options(&o))
		goto out_args;
	{
		/* The daemon may chdir("/"): hold STORE by its absolute path. */
		char *abs = realpath(o.store, NULL);

		if (!abs) {
			log_err("%s: %s", o.store, strerror(errno));
			goto out_args;
		}
		free(o.store);
		o.store = abs;
	}
	if (o.allow_other && fuse_opt_add_arg(&args, "-odefault_permissions"))
		goto out_args;
	if (fuse_opt_add_arg(&args, "-osubtype=snapfs") || add_fsname(&args, o.store))
		goto out_args;
	fs.reply = reply_mode_of(o.read_reply);
	if (o.prefetch)
		prefetch_parse_mode(o.prefetch, &prefetch);	/* checked */
	/* a ring per worker thread where reads are gathered, and one for
	 * the push thread unless read_reply=splice (fuse_read.c) */
	rings = fs.reply == REPLY_GATHER ? o.max_threads : 0;
	if (fs.reply != REPLY_SPLICE && gather_supported() && prefetch != PREFETCH_OFF)
		rings++;
	if (split_nofile(o.fd_budget, &rings, &fd_budget, &file_budget))
		goto out_args;
	gather_set_max_rings(rings);
	preload_unwinder();

	zero = mmap(NULL, ZERO_LEN, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (zero == MAP_FAILED) {
		log_err("cannot map the zero buffer: %s", strerror(errno));
		goto out_args;
	}
	fs.zero = zero;
	fs.zero_len = ZERO_LEN;
	fs.entry_timeout = o.entry_timeout;
	fs.revalidate = o.revalidate;
	fs.pipe_max = pipe_max_size();
	fs.attr_timeout = o.attr_timeout;
	if (o.open_rw)
		openmode_parse(o.open_rw, &fs.open_rw);	/* checked above */
	/* The kernel's own checks, with ACLs, wherever it makes them. */
	fs.posix_acl = o.allow_other || o.default_permissions;
	fs.pt = passthrough_new(!o.passthrough || strcmp(o.passthrough, "off") != 0);
	if (!fs.pt)
		goto out_zero;
	fs.cache = cache_new((size_t)(o.cache_mb == UINT_MAX ? cache_default_mb() :
				      o.cache_mb) << 20);
	if (!fs.cache)
		goto out_pt;
	fs.env = view_env_new(fs.cache, o.page_size);
	if (!fs.env)
		goto out_cache;
	view_env_map_layers(fs.env, fs.reply == REPLY_MMAP);
	view_env_set_fd_budget(fs.env, file_budget);
	ret = node_table_new(o.store, fs.env, snapfs_inval_entry, &fs, &fs.nodes);
	if (ret) {
		log_err("%s: cannot open the store: %s", o.store, strerror(-ret));
		ret = 1;
		goto out_env;
	}
	node_table_set_fd_budget(fs.nodes, fd_budget);
	ret = 1;

	se = fuse_session_new(&args, &snapfs_ops, sizeof(snapfs_ops), &fs);
	if (!se)
		goto out_nodes;
	fs.se = se;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, copts.mountpoint) != 0)
		goto out_signals;
	if (o.readahead_kb == UINT_MAX)
		plan_readahead(&fs, copts.mountpoint, READAHEAD_KB, false);
	else if (o.readahead_kb)
		plan_readahead(&fs, copts.mountpoint, o.readahead_kb, true);
	log_info("serving %s at %s", o.store, copts.mountpoint);
	signal_ready(o.ready_fd);
	if (!copts.foreground)
		snapfs_log_to_syslog();
	fuse_daemonize(copts.foreground);

	/* Threads only now: fuse_daemonize() forks, and threads do not
	 * survive a fork. */
	if (!o.nowatch)
		/* failure: logged, timeouts only */
		dirwatch_start(fs.nodes, node_dir_sweep);
	if (!o.compact || strcmp(o.compact, "off") != 0) {
		struct compact_opts co = {
			.threshold = o.compact_threshold,
			.keep = o.keep_diffs,
			.rate = (uint64_t)o.compact_rate << 20,
			.page_size = o.page_size,
		};

		compactd_start(fs.nodes, &co);	/* failure: logged */
	}
	{
		struct prefetch_opts po = {
			.mode = prefetch,
			.budget = (uint64_t)(o.prefetch_mb == UINT_MAX ?
					     prefetch_default_mb() : o.prefetch_mb) << 20,
			.rate = (uint64_t)o.prefetch_rate << 20,
			.store = snapfs_push,
			.drop = snapfs_push_drop,
			.ctx = &fs,
		};

		prefetch_start(fs.nodes, &po);	/* failure: logged */
	}
	/* After the compactor: it chains the hook the compactor installed. */
	{
		struct flatten_opts fo = {
			.mode = (enum flatten_mode)flatten_mode_parse(o.flatten),
			.usable = passthrough_usable,
			.drop = snapfs_flat_drop,
			.ctx = &fs,
		};

		if (flatten_start(fs.nodes, &fo, &fs.flatten))
			log_err("cannot start the flattener: out of memory");
	}

	/* STORE's root is indexed beside the session's start: its first
	 * lookup would read all of it (doc/design.md §2), and a first open
	 * should not wait for that. Lookups meanwhile wait for this one. */
	primed = pthread_create(&primer, NULL, prime_root, fs.nodes) == 0;

	if (copts.singlethread) {
		ret = fuse_session_loop(se);
	} else {
		/* Without a loop, the threads started above still stop below. */
		loop = fuse_loop_cfg_create();
		if (!loop) {
			ret = -ENOMEM;
		} else {
			fuse_loop_cfg_set_clone_fd(loop, copts.clone_fd);
			fuse_loop_cfg_set_max_threads(loop, o.max_threads);
			fuse_loop_cfg_set_idle_threads(loop, idle_threads(&copts, o.max_threads));
			ret = loop_guarded(se, loop);
		}
	}
	/*
	 * When the mount goes away the kernel ends the connection, and the
	 * next read of /dev/fuse fails: with ENODEV, which libfuse takes for
	 * the clean end it is, or with ECONNABORTED, which libfuse reports
	 * as a read error. CI's kernel gave the latter once as the last user
	 * of a lazily detached mount let go; an abort through fusectl gives it
	 * where the connection asked for abort errors. Either way the kernel
	 * has already answered every request still open: nothing is left to
	 * serve, and the daemon stops as after an unmount.
	 */
	if (ret == -ECONNABORTED) {
		log_info("the kernel ended the FUSE connection (%s): stopping",
			 strerror(ECONNABORTED));
		ret = 0;
	}
	/* A signal (positive) or a clean unmount (0) is a normal stop. */
	if (ret < 0)
		log_err("the FUSE session ended with an error: %s", strerror(-ret));
	ret = ret < 0 ? 1 : 0;
	if (primed)
		pthread_join(primer, NULL);
	prefetch_stop(fs.nodes);
	flatten_stop(fs.flatten);
	fs.flatten = NULL;
	compactd_stop(fs.nodes);
	dirwatch_stop(fs.nodes);
	snapfs_close_handles();
	stats_file_free_released();
	snapfs_log_flush();	/* the counts of rate-limited lines */

	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_nodes:
	node_table_free(fs.nodes);
out_env:
	view_env_free(fs.env);
out_cache:
	cache_free(fs.cache);
out_pt:
	passthrough_free(fs.pt);
out_zero:
	munmap(zero, ZERO_LEN);
out_args:
	fuse_loop_cfg_destroy(loop);
	free(copts.mountpoint);
	free(o.store);
	free(o.compact);
	free(o.read_reply);
	free(o.open_rw);
	free(o.prefetch);
	free(o.passthrough);
	free(o.flatten);
	fuse_opt_free_args(&args);
	return ret;
}
