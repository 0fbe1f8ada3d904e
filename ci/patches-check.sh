#!/usr/bin/env bash
# `udp-repair patches check` on every series of the bases given (default:
# 6.12, and 7.1 where its tarball is), which must pass; then on planted
# series (ci/planted/patches-check/, 6.12 only), which must fail, each
# naming its cause: a checkpatch error, a new W=1 warning, a missing
# Signed-off-by, a selftest in no Makefile, a patch that no longer
# applies. Prints TAP; exit status 1 when any expectation failed.
# Run after the kernels are built (ci/test.sh runs it after `test`): the
# W=1 check builds the touched objects in the variants' build directories.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --locked -p udp-repair
bin=$PWD/target/release/udp-repair
mkdir -p target/ci

bases=("$@")
if [ ${#bases[@]} -eq 0 ]; then
	bases=(6.12)
	tarball=$(sed -n 's/^tarball = //p' kernel-patches/bases/7.1)
	case "$tarball" in /*) ;; *) tarball="$PWD/$tarball" ;; esac
	[ -f "$tarball" ] && bases+=(7.1)
fi

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n $1"; }
not_ok() {
	n=$((n + 1))
	echo "not ok $n $1"
	failed=$((failed + 1))
}

echo "TAP version 13"
for base in "${bases[@]}"; do
	out=$("$bin" patches check --base "$base" --variant all \
		--json "target/ci/patches-check-$base.json" 2>&1)
	rc=$?
	printf '%s\n' "$out" | sed 's/^/# /'
	if [ "$rc" -eq 0 ]; then
		ok "patches check --base $base: every series passes"
	else
		not_ok "patches check --base $base: exit $rc"
	fi
done

# The planted series, in a scratch copy of the project (UDP_REPAIR_ROOT).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/kernel-patches" "$tmp/vm"
cp -r kernel-patches/bases "$tmp/kernel-patches/"
cp -r ci/planted/patches-check/planted ci/planted/patches-check/stale "$tmp/kernel-patches/"
cp -r vm/configs "$tmp/vm/"
printf 'planted = planted\nstale = stale\n' >"$tmp/kernel-patches/VARIANTS"

expect_fail() { # variant name-of-expectation pattern...
	local variant=$1 out rc
	shift
	out=$(UDP_REPAIR_ROOT=$tmp "$bin" patches check --base 6.12 --variant "$variant" 2>&1)
	rc=$?
	# The verdicts that failed, as the planted bugs made them.
	grep -A3 -E '^  (FAIL|SKIP) ' <<<"$out" | cut -c1-200 | sed 's/^/# /'
	for pat in "$@"; do
		if [ "$rc" -eq 1 ] && grep -qE -- "$pat" <<<"$out"; then
			ok "planted $variant: /$pat/"
		else
			not_ok "planted $variant: exit $rc, wanted 1 and /$pat/"
			printf '%s\n' "$out" | tail -n 40 | sed 's/^/# /'
		fi
	done
}
expect_fail planted \
	'FAIL checkpatch 0001-udp-add-a-planted-helper.patch +[1-9][0-9]* errors' \
	'space required before the open parenthesis' \
	'FAIL w1-build .*warning\(s\) the base does not have' \
	"no previous prototype for .*udp_planted_helper" \
	"variable .*last.* set but not used" \
	'FAIL signed-off-by 0002-selftests-net-add-udp_planted-test.patch' \
	'FAIL selftests' \
	'udp_planted is in no TEST_GEN_PROGS/TEST_PROGS list' \
	'udp_planted is not listed'
expect_fail stale \
	'FAIL applies +0001-udp-add-a-planted-helper.patch does not apply' \
	'EXPORT_SYMBOL_GPL\(udp_ioctl\)|net/ipv4/udp.c'

echo "1..$n"
[ "$failed" -eq 0 ]
