#!/usr/bin/env bash
# The harness must fail loudly: exit status 2 and a message that says what
# went wrong, for a patch that does not apply, a guest that hangs and a
# kernel panic; and `run` must run a command in the guest. Prints TAP.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --locked -p udp-repair
bin=$PWD/target/release/udp-repair

n=0
failed=0
expect() { # name rc pattern -- command...
	local name=$1 want=$2 pat=$3 out rc
	shift 4
	n=$((n + 1))
	out=$("$@" 2>&1)
	rc=$?
	if [ "$rc" -eq "$want" ] && grep -q -- "$pat" <<<"$out"; then
		echo "ok $n $name"
	else
		echo "not ok $n $name (exit $rc, wanted $want and /$pat/)"
		tail -n 25 <<<"$out" | sed 's/^/# /'
		failed=$((failed + 1))
	fi
}

echo "TAP version 13"
echo "1..4"

expect "run prints the guest kernel's release" 0 "^6\.12\.117" -- \
	"$bin" run --variant none --accel tcg -- uname -r

# A series whose patch cannot apply, in a scratch copy of the project.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/kernel-patches/broken" "$tmp/vm"
cp kernel-patches/BASE "$tmp/kernel-patches/"
cp -r vm/configs "$tmp/vm/"
cat >"$tmp/kernel-patches/broken/0001-udp-broken.patch" <<'PATCH'
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: UDP Repair Project <udp-repair@example.org>
Date: Sat, 1 Jan 2000 00:00:00 +0000
Subject: [PATCH] udp: a patch that does not apply

---
 net/ipv4/udp.c | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/net/ipv4/udp.c b/net/ipv4/udp.c
--- a/net/ipv4/udp.c
+++ b/net/ipv4/udp.c
@@ -10,3 +10,3 @@
 this context
-is not in udp.c
+and never was
 at all
--
2.39.5
PATCH
expect "a patch that does not apply" 2 "0001-udp-broken.patch does not apply" -- \
	env UDP_REPAIR_ROOT="$tmp" "$bin" build --variant broken

expect "a guest that hangs is killed at its deadline" 2 "killed after 25s timeout" -- \
	"$bin" run --variant none --accel tcg --timeout 25 -- sh -c 'echo spinning; while :; do :; done'

# busybox as init prints its help and exits: the kernel panics.
expect "a kernel panic" 2 "Kernel panic" -- \
	"$bin" run --variant none --accel tcg --cmdline rdinit=/bin/busybox -- true

echo "# $((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
