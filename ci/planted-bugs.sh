#!/usr/bin/env bash
# Proof that each detector of a debug run finds a bug of its kind: plants
# the three bugs of ci/planted/ as the last patch of the 6.12 getsockopt
# series, runs the kselftests and the fuzz suite on a --config debug
# kernel (KASAN, lockdep, hung-task and soft-lockup detectors), and checks
# that KASAN, lockdep (sock_owned_by_me() in udp_repair_fill()) and the
# payload checks (the kselftest's race and the fuzz suite's random calls)
# each report theirs. The planted patch is removed on exit, also on
# failure. About 12 minutes (a debug kernel build); not run by CI.
# Usage: bash ci/planted-bugs.sh   (root, as the test command)
set -euo pipefail
cd "$(dirname "$0")/.."
planted=0004-PLANTED-bugs-not-for-posting.patch
dst=kernel-patches/getsockopt/6.12/$planted
trap 'rm -f "$dst"' EXIT
cp "ci/planted/$planted" "$dst"
out=$(mktemp)
cargo run -q --release -p udp-repair -- test --variant getsockopt --config debug \
    --suite kselftest --suite fuzz >"$out" 2>&1 || true
dir=$(sed -n 's/^getsockopt: logs in //p' "$out" | tail -1)
if [ -z "$dir" ] || [ ! -f "$dir/console.log" ]; then
    echo "planted-bugs: no run directory in the output ($out)" >&2
    exit 1
fi
fail=0
check() { # name, file, pattern
    if grep -qE "$3" "$2"; then
        echo "caught   $1: $(grep -m1 -E "$3" "$2" | sed 's/^[[:space:]]*//')"
    else
        echo "MISSED   $1 (no \"$3\" in $2)"
        fail=1
    fi
}
check "KASAN (stack read past the IP options)" "$dir/console.log" \
    'BUG: KASAN: stack-out-of-bounds'
check "lockdep (struct filled without the socket lock)" "$dir/console.log" \
    'WARNING: .* udp_repair_fill'
check "payload check (a byte of tailroom)" "$out" 'a dump no sender made'
# The guest's own output: a report shows only part of a long message.
check "fuzz suite's payload check (the same byte)" "$dir/results.log" \
    'UDP_REPAIR_PENDING_DATA payload: byte'
exit $fail
