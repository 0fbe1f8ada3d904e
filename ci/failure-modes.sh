#!/usr/bin/env bash
# The harness must fail loudly: exit status 2 and a message that says what
# went wrong, for a patch that does not apply, a guest that hangs, a
# kernel panic and QEMU's own fatal errors (at once, not at the deadline);
# and `run` must run a command in the guest, under both runners. Prints TAP.
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

# expect, and it must end within SECS seconds.
expect_within() { # secs name rc pattern -- command...
	local secs=$1 start=$SECONDS
	shift
	expect "$@"
	if [ $((SECONDS - start)) -gt "$secs" ]; then
		echo "not ok $n $1 took $((SECONDS - start))s, more than ${secs}s"
		failed=$((failed + 1))
	fi
}

echo "TAP version 13"
echo "1..7"

expect "run prints the guest kernel's release" 0 "^6\.12\.117" -- \
	"$bin" run --variant none --accel tcg -- uname -r

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A series whose patch cannot apply, in a scratch copy of the project.
mkdir -p "$tmp/kernel-patches/broken/6.12" "$tmp/vm"
cp -r kernel-patches/bases "$tmp/kernel-patches/"
echo "broken = broken" >"$tmp/kernel-patches/VARIANTS"
cp -r vm/configs "$tmp/vm/"
cat >"$tmp/kernel-patches/broken/6.12/0001-udp-broken.patch" <<'PATCH'
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

# QEMU's own fatal errors end the run at once, quoting QEMU, for both
# runners; they are not left to the deadline. A machine that cannot start:
expect_within 60 "QEMU that cannot start the machine" 2 "QEMU failed: .*cannot set up guest memory" -- \
	"$bin" run --variant none --accel tcg --memory 4000000000 --timeout 200 -- true

# KVM's internal error stops the vCPU and leaves QEMU waiting: a stand-in
# QEMU that says so (as QEMU does under a KVM that cannot run this guest)
# and then hangs. (The vng runner's own loop gets the same check from a
# stand-in vng in vm/tests/vng_standin.rs, without building the vng
# kernel, a second cold build.)
mkdir -p "$tmp/bin"
cat >"$tmp/bin/qemu-system-x86_64" <<'FAKE'
#!/bin/sh
case "$*" in *--version*) echo "QEMU emulator version 0.0 (stand-in)"; exit 0 ;; esac
echo "KVM internal error. Suberror: 1" >&2
echo "emulation failure" >&2
exec sleep 600
FAKE
chmod +x "$tmp/bin/qemu-system-x86_64"
expect_within 60 "KVM internal error under the QEMU runner" 2 "QEMU failed: KVM internal error" -- \
	env PATH="$tmp/bin:$PATH" "$bin" run --variant none --accel tcg --timeout 200 -- true

# The real vng under the default accelerator follows the KVM probe's
# verdict (here: KVM guests hang, so TCG) and ends in seconds.
if command -v vng >/dev/null; then
	expect_within 120 "vng under --accel auto" 0 "^vng-ok" -- \
		"$bin" run --variant none --runner vng --timeout 200 -- echo vng-ok
else
	n=$((n + 1))
	echo "ok $n vng under --accel auto # SKIP vng is not installed (pip install virtme-ng)"
fi

echo "# $((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
