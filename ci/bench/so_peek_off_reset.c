// SPDX-License-Identifier: GPL-2.0
/*
 * The cost of the peek-zerolen fix: setting SO_PEEK_OFF on a UDP socket,
 * or on an AF_UNIX datagram socket, walks its receive queue with bottom
 * halves (UDP) or interrupts (AF_UNIX) off to clear the peeked mark of
 * zero-length datagrams (__skb_queue_reset_peeked()).  Set against it:
 * a recv(MSG_PEEK) at an offset past the end of the queue, which any
 * caller can make today and which walks the same queue under the same
 * lock.  Per socket kind, queues N datagrams (zero-length every other
 * one) and times M calls of each.
 *
 * Prints one line per case: datagrams queued, calls, ns per reset, ns per
 * queued datagram per reset, ns per peek past the end, and the ratio
 * reset / peek.  The "udp, rcvbuf at rmem_max" case queues what an
 * unprivileged socket can hold under this machine's net.core.rmem_max.
 *
 * Usage: so_peek_off_reset [N [M]]   (defaults 100000 and 100; root, to
 * raise the buffers with SO_RCVBUFFORCE and SO_SNDBUFFORCE)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int set_off(int fd, int off)
{
	return setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off));
}

/* Times m resets and m peeks past the end of rx's queue, then drains it
 * to count what it held.
 */
static int measure(const char *what, int rx, int sent, int m)
{
	long long t0, t1, t2;
	int i, queued = 0;
	char buf[4];

	/* A plain peek at the head marks the first, empty, datagram. */
	if (recv(rx, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT) < 0)
		return perror("recv"), 1;
	t0 = now_ns();
	for (i = 0; i < m; i++)
		set_off(rx, 0);
	t1 = now_ns();
	/* Past the end of any queue: the peek walks every datagram. */
	set_off(rx, 1 << 30);
	for (i = 0; i < m; i++) {
		if (recv(rx, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT) >= 0 ||
		    errno != EAGAIN)
			return fprintf(stderr, "peek past the end returned data\n"), 1;
	}
	t2 = now_ns();
	set_off(rx, -1);
	while (recv(rx, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
		queued++;
	printf("so_peek_off_reset: %s: %d datagrams queued (%d sent), %d calls, reset %lld ns per call (%.2f ns per queued datagram), peek past the end %lld ns per call, reset/peek %.2f\n",
	       what, queued, sent, m, (t1 - t0) / m,
	       (double)(t1 - t0) / m / (queued ? queued : 1), (t2 - t1) / m,
	       (double)(t1 - t0) / (t2 - t1 ? t2 - t1 : 1));
	return 0;
}

static int udp_case(const char *what, int n, int m, int force)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int rx, tx, i, big = 1 << 30, sent = 0;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	rx = socket(AF_INET, SOCK_DGRAM, 0);
	tx = socket(AF_INET, SOCK_DGRAM, 0);
	if (rx < 0 || tx < 0)
		return perror("socket"), 1;
	if (setsockopt(rx, SOL_SOCKET, force ? SO_RCVBUFFORCE : SO_RCVBUF,
		       &big, sizeof(big)))
		return perror("SO_RCVBUFFORCE (needs root)"), 1;
	if (bind(rx, (void *)&a, sizeof(a)) || getsockname(rx, (void *)&a, &len))
		return perror("bind"), 1;
	for (i = 0; i < n; i++, sent++) {
		if (sendto(tx, "x", i & 1, 0, (void *)&a, sizeof(a)) < 0)
			return perror("sendto"), 1;
	}
	i = measure(what, rx, sent, m);
	close(rx);
	close(tx);
	return i;
}

static int unix_case(int n, int m)
{
	int fd[2], i, big = 1 << 30, sent = 0;

	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, fd))
		return perror("socketpair"), 1;
	setsockopt(fd[0], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
	for (i = 0; i < n; i++, sent++) {
		if (send(fd[0], "x", i & 1, MSG_DONTWAIT) < 0)
			break;
	}
	i = measure("unix dgram", fd[1], sent, m);
	close(fd[0]);
	close(fd[1]);
	return i;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 100000;
	int m = argc > 2 ? atoi(argv[2]) : 100;
	struct ifreq ifr = { .ifr_name = "lo" };
	int s = socket(AF_INET, SOCK_DGRAM, 0);

	if (s >= 0 && !ioctl(s, SIOCGIFFLAGS, &ifr)) {
		ifr.ifr_flags |= IFF_UP;
		ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	if (s >= 0)
		close(s);
	return udp_case("udp", n, m, 1) ||
	       udp_case("udp, rcvbuf at rmem_max", n, m, 0) ||
	       unix_case(n, m);
}
