/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * holdview: keeps views open and mapped for a mount test while the test
 * changes STORE, and checks on request that what each open fd and each
 * MAP_PRIVATE mapping reads still equals a reference file. It reads one
 * command per line on stdin and answers one line on stdout ("ok ..." or
 * "bad ..." or "err ..."), so a shell test drives it as a coprocess:
 *
 *   open TAG PATH   open PATH read-only, map it MAP_PRIVATE and fault in its
 *                   first page only; answers "ok INODE"
 *   check TAG REF   drop the fd's clean page cache (POSIX_FADV_DONTNEED),
 *                   then compare pread() of the whole file and the whole
 *                   mapping with REF; answers "ok" or "bad WHAT at OFFSET"
 *   chain TAG       answers "ok VALUE" of user.snapfs.chain on the open fd
 *   close TAG       unmap and close
 *   quit
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define MAX_HELD 16
#define LINE_MAX_LEN 8192

struct held {
	char *tag;
	int fd;
	unsigned char *map;	/* NULL for an empty file */
	size_t size;
};

static struct held held[MAX_HELD];
static sigjmp_buf fault_env;
static volatile sig_atomic_t faulting;

static void on_fault(int sig)
{
	if (faulting)
		siglongjmp(fault_env, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

static struct held *find(const char *tag)
{
	for (int i = 0; i < MAX_HELD; i++)
		if (held[i].tag && strcmp(held[i].tag, tag) == 0)
			return &held[i];
	return NULL;
}

static void cmd_open(const char *tag, const char *path)
{
	struct held *h = NULL;
	struct stat st;

	if (find(tag)) {
		printf("err %s is already open\n", tag);
		return;
	}
	for (int i = 0; i < MAX_HELD && !h; i++)
		if (!held[i].tag)
			h = &held[i];
	if (!h) {
		printf("err more than %d files held\n", MAX_HELD);
		return;
	}
	h->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (h->fd < 0 || fstat(h->fd, &st) < 0) {
		printf("err open %s: %s\n", path, strerror(errno));
		if (h->fd >= 0)
			close(h->fd);
		return;
	}
	h->size = (size_t)st.st_size;
	h->map = NULL;
	if (h->size) {
		h->map = mmap(NULL, h->size, PROT_READ, MAP_PRIVATE, h->fd, 0);
		if (h->map == MAP_FAILED) {
			printf("err mmap %s: %s\n", path, strerror(errno));
			close(h->fd);
			return;
		}
		if (sigsetjmp(fault_env, 1)) {
			faulting = 0;
			printf("err SIGBUS on the first page of %s\n", path);
			munmap(h->map, h->size);
			close(h->fd);
			return;
		}
		faulting = 1;
		(void)*(volatile unsigned char *)h->map;
		faulting = 0;
	}
	h->tag = strdup(tag);
	if (!h->tag) {
		printf("err out of memory\n");
		exit(1);
	}
	printf("ok %llu\n", (unsigned long long)st.st_ino);
}

/* First offset where a and b differ, or n. */
static size_t first_diff(const unsigned char *a, const unsigned char *b, size_t n)
{
	size_t i = 0;

	while (i < n && a[i] == b[i])
		i++;
	return i;
}

/*
 * Faults in the whole mapping of h and compares it with want; prints a
 * "bad" line and returns 0 on a difference or a SIGBUS, else returns 1.
 */
static int check_map(const struct held *h, const unsigned char *want)
{
	volatile size_t page = 0;
	size_t at;

	if (sigsetjmp(fault_env, 1)) {
		faulting = 0;
		printf("bad map: SIGBUS at offset %zu\n", (size_t)page);
		return 0;
	}
	faulting = 1;
	for (page = 0; page < h->size; page += 4096)
		(void)*(volatile unsigned char *)(h->map + page);
	faulting = 0;
	at = first_diff(h->map, want, h->size);
	if (at < h->size) {
		printf("bad map: first difference at offset %zu (got %02x, want %02x)\n",
		       at, h->map[at], want[at]);
		return 0;
	}
	return 1;
}

static void cmd_check(struct held *h, const char *ref)
{
	unsigned char *want = NULL, *got = NULL;
	int rfd = open(ref, O_RDONLY | O_CLOEXEC);
	struct stat st;
	size_t done, at;

	if (rfd < 0 || fstat(rfd, &st) < 0) {
		printf("err %s: %s\n", ref, strerror(errno));
		goto out;
	}
	if ((size_t)st.st_size != h->size) {
		printf("bad size: reference %lld, held file %zu\n", (long long)st.st_size, h->size);
		goto out;
	}
	want = malloc(h->size + 1);
	got = malloc(h->size + 1);
	if (!want || !got) {
		printf("err out of memory\n");
		exit(1);
	}
	for (done = 0; done < h->size;) {
		ssize_t n = pread(rfd, want + done, h->size - done, (off_t)done);

		if (n <= 0) {
			printf("err reading %s: %s\n", ref, n < 0 ? strerror(errno) : "short");
			goto out;
		}
		done += (size_t)n;
	}
	posix_fadvise(h->fd, 0, 0, POSIX_FADV_DONTNEED);
	for (done = 0; done < h->size;) {
		ssize_t n = pread(h->fd, got + done, h->size - done, (off_t)done);

		if (n <= 0) {
			printf("bad fd: pread at %zu: %s\n", done, n < 0 ? strerror(errno) : "end of file");
			goto out;
		}
		done += (size_t)n;
	}
	at = first_diff(got, want, h->size);
	if (at < h->size) {
		printf("bad fd: first difference at offset %zu (got %02x, want %02x)\n",
		       at, got[at], want[at]);
		goto out;
	}
	if (h->map && !check_map(h, want))
		goto out;
	printf("ok\n");
out:
	free(want);
	free(got);
	if (rfd >= 0)
		close(rfd);
}

static void cmd_chain(struct held *h)
{
	char buf[LINE_MAX_LEN];
	ssize_t n = fgetxattr(h->fd, "user.snapfs.chain", buf, sizeof(buf) - 1);

	if (n < 0) {
		printf("err fgetxattr: %s\n", strerror(errno));
		return;
	}
	buf[n] = '\0';
	printf("ok %s\n", buf);
}

static void cmd_close(struct held *h)
{
	if (h->map)
		munmap(h->map, h->size);
	close(h->fd);
	free(h->tag);
	h->tag = NULL;
	printf("ok\n");
}

int main(void)
{
	char line[LINE_MAX_LEN];
	struct sigaction sa = { .sa_handler = on_fault };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		char *cmd, *tag, *arg, *save = NULL;
		struct held *h;

		line[strcspn(line, "\n")] = '\0';
		cmd = strtok_r(line, " ", &save);
		tag = strtok_r(NULL, " ", &save);
		arg = strtok_r(NULL, "", &save);
		if (!cmd)
			continue;
		if (strcmp(cmd, "quit") == 0) {
			printf("ok\n");
			break;
		}
		if (!tag) {
			printf("err usage: open|check|chain|close TAG [ARG]\n");
			continue;
		}
		if (strcmp(cmd, "open") == 0) {
			if (arg)
				cmd_open(tag, arg);
			else
				printf("err usage: open TAG PATH\n");
			continue;
		}
		h = find(tag);
		if (!h)
			printf("err %s is not open\n", tag);
		else if (strcmp(cmd, "check") == 0 && arg)
			cmd_check(h, arg);
		else if (strcmp(cmd, "chain") == 0)
			cmd_chain(h);
		else if (strcmp(cmd, "close") == 0)
			cmd_close(h);
		else
			printf("err unknown command '%s'\n", cmd);
	}
	for (int i = 0; i < MAX_HELD; i++)
		if (held[i].tag)
			cmd_close(&held[i]);
	return 0;
}
