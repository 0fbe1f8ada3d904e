// SPDX-License-Identifier: GPL-2.0
/*
 * The cost of the peek-zerolen fix: setting SO_PEEK_OFF on a UDP socket
 * walks its receive queues with bottom halves off to clear the peeked
 * mark of zero-length datagrams (udp_set_peek_off()).  Queues N datagrams
 * (zero-length every other one) and times M setsockopt(SO_PEEK_OFF) calls.
 * Prints one line: N, M, ns per call, ns per queued datagram per call.
 *
 * Usage: so_peek_off_reset [N [M]]   (defaults 100000 and 100; root, to
 * raise the receive buffer with SO_RCVBUFFORCE)
 */
#include <arpa/inet.h>
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

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 100000;
	int m = argc > 2 ? atoi(argv[2]) : 100;
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct ifreq ifr = { .ifr_name = "lo" };
	socklen_t len = sizeof(a);
	int rx, tx, i, big = 1 << 30, off = 0, queued = 0;
	char buf[4];
	long long t0, t1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	rx = socket(AF_INET, SOCK_DGRAM, 0);
	tx = socket(AF_INET, SOCK_DGRAM, 0);
	if (rx < 0 || tx < 0)
		return perror("socket"), 1;
	if (!ioctl(rx, SIOCGIFFLAGS, &ifr)) {
		ifr.ifr_flags |= IFF_UP;
		ioctl(rx, SIOCSIFFLAGS, &ifr);
	}
	if (setsockopt(rx, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)))
		return perror("SO_RCVBUFFORCE (needs root)"), 1;
	if (bind(rx, (void *)&a, sizeof(a)) || getsockname(rx, (void *)&a, &len))
		return perror("bind"), 1;
	for (i = 0; i < n; i++) {
		if (sendto(tx, "x", i & 1, 0, (void *)&a, sizeof(a)) < 0)
			return perror("sendto"), 1;
	}
	/* Mark the zero-length datagrams peeked, as a first walk does. */
	setsockopt(rx, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off));
	t0 = now_ns();
	for (i = 0; i < m; i++)
		setsockopt(rx, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off));
	t1 = now_ns();
	/* What the queue really held. */
	off = -1;
	setsockopt(rx, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off));
	while (recv(rx, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
		queued++;
	printf("so_peek_off_reset: %d datagrams queued (%d sent), %d calls, %lld ns per call, %.2f ns per queued datagram per call\n",
	       queued, n, m, (t1 - t0) / m, (double)(t1 - t0) / m / (queued ? queued : 1));
	return 0;
}
