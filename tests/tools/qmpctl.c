/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A minimal client for the QEMU test (tests/mount/t-qemu.sh), so that it
 * needs no socat, python or gdb:
 *
 *   qmpctl qmp SOCKET JSON...   connects to QEMU's QMP unix socket,
 *       negotiates capabilities, sends each JSON command and waits for its
 *       "return" (printed) or "error" (printed to stderr, exit 1);
 *   qmpctl poke GDB ADDR HEX   writes the bytes HEX at guest address ADDR
 *       through QEMU's gdbstub at GDB, a unix socket's path (-gdb
 *       unix:PATH,server=on,wait=off) or a port on 127.0.0.1 (the remote protocol's
 *       'M' packet), as gdb's `set {long}ADDR = V` does. The connection is
 *       closed without a detach, which would resume a paused guest.
 *
 * Each wait is bounded: 30 s, or QMPCTL_TIMEOUT seconds. Exit 0 on success, 1 on a refusal or a
 * timeout, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int wait_ms = 30000;

static char inbuf[1 << 16];
static size_t inlen;

/* Reads more input into inbuf; returns 0, or -1 on EOF, error or timeout. */
static int fill(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n;

	if (inlen == sizeof(inbuf) - 1)
		inlen = 0;	/* a line longer than the buffer: dropped */
	if (poll(&p, 1, wait_ms) != 1)
		return -1;
	n = read(fd, inbuf + inlen, sizeof(inbuf) - 1 - inlen);
	if (n <= 0)
		return -1;
	inlen += (size_t)n;
	inbuf[inlen] = '\0';
	return 0;
}

/* Takes one line (without its newline) out of inbuf into line[len]. */
static int read_line(int fd, char *line, size_t len)
{
	char *nl;

	while (!(nl = memchr(inbuf, '\n', inlen)))
		if (fill(fd) < 0)
			return -1;
	*nl = '\0';
	snprintf(line, len, "%s", inbuf);
	inlen -= (size_t)(nl + 1 - inbuf);
	memmove(inbuf, nl + 1, inlen);
	return 0;
}

static int send_all(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t w = write(fd, s, n);

		if (w <= 0)
			return -1;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Connects to a unix socket at path. Returns the fd or -1 (reported). */
static int connect_unix(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		fprintf(stderr, "qmpctl: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Connects to a port on 127.0.0.1. Returns the fd or -1 (reported). */
static int connect_port(const char *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	a.sin_port = htons((uint16_t)atoi(port));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		fprintf(stderr, "qmpctl: port %s: %s\n", port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Sends cmd and waits for its answer, skipping events. */
static int qmp_do(int fd, const char *cmd)
{
	char line[sizeof(inbuf)];

	if (send_all(fd, cmd, strlen(cmd)) < 0 || send_all(fd, "\n", 1) < 0)
		return -1;
	for (;;) {
		if (read_line(fd, line, sizeof(line)) < 0) {
			fprintf(stderr, "qmpctl: no answer to %s\n", cmd);
			return -1;
		}
		if (strstr(line, "\"return\"")) {
			printf("%s\n", line);
			return 0;
		}
		if (strstr(line, "\"error\"")) {
			fprintf(stderr, "qmpctl: %s: %s\n", cmd, line);
			return -1;
		}
	}
}

static int qmp(const char *path, char **cmds, int n)
{
	char line[sizeof(inbuf)];
	int fd = connect_unix(path);

	if (fd < 0)
		return 1;
	if (read_line(fd, line, sizeof(line)) < 0 || !strstr(line, "QMP")) {
		fprintf(stderr, "qmpctl: %s: no QMP greeting\n", path);
		return 1;
	}
	if (qmp_do(fd, "{\"execute\":\"qmp_capabilities\"}") < 0)
		return 1;
	for (int i = 0; i < n; i++)
		if (qmp_do(fd, cmds[i]) < 0)
			return 1;
	close(fd);
	return 0;
}

/* Sends one remote-protocol packet and waits for its reply packet. */
static int gdb_packet(int fd, const char *body, char *reply, size_t len)
{
	unsigned sum = 0;
	char *pkt, *start, *hash;

	for (const char *p = body; *p; p++)
		sum += (unsigned char)*p;
	if (asprintf(&pkt, "$%s#%02x", body, sum & 0xff) < 0)
		return -1;
	if (send_all(fd, pkt, strlen(pkt)) < 0) {
		free(pkt);
		return -1;
	}
	free(pkt);
	for (;;) {
		start = memchr(inbuf, '$', inlen);
		hash = start ? memchr(start, '#', inlen - (size_t)(start - inbuf)) : NULL;
		if (hash && (size_t)(hash - inbuf) + 3 <= inlen)
			break;
		if (fill(fd) < 0)
			return -1;
	}
	*hash = '\0';
	snprintf(reply, len, "%s", start + 1);
	send_all(fd, "+", 1);	/* acknowledge */
	inlen = 0;
	return 0;
}

static int poke(const char *gdb, const char *addr, const char *hex)
{
	char *body, reply[256] = "";
	int fd = strchr(gdb, '/') ? connect_unix(gdb) : connect_port(gdb);

	if (fd < 0)
		return 1;
	if (asprintf(&body, "M%s,%zx:%s", addr, strlen(hex) / 2, hex) < 0)
		return 1;
	if (gdb_packet(fd, body, reply, sizeof(reply)) < 0 || strcmp(reply, "OK") != 0) {
		fprintf(stderr, "qmpctl: memory write %s: %s\n", body,
			reply[0] ? reply : "no answer");
		free(body);
		return 1;
	}
	free(body);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	const char *t = getenv("QMPCTL_TIMEOUT");

	if (t && atoi(t) > 0)
		wait_ms = atoi(t) * 1000;
	if (argc >= 3 && strcmp(argv[1], "qmp") == 0)
		return qmp(argv[2], argv + 3, argc - 3);
	if (argc == 5 && strcmp(argv[1], "poke") == 0 && strlen(argv[4]) % 2 == 0)
		return poke(argv[2], argv[3], argv[4]);
	fprintf(stderr, "usage: qmpctl qmp SOCKET JSON...\n"
		"       qmpctl poke GDB_SOCKET|PORT HEXADDR HEXBYTES\n");
	return 2;
}
