#!/usr/bin/env bash
# The project's tests, as README states them: style and lints, the host
# unit and integration tests, then every kernel variant built, booted
# under QEMU and tested (the guest suites, the C kselftests, the kernel's
# own UDP selftests), on the default base (6.12) and on mainline (7.1)
# where its tarball is present; then `patches check` on every series
# (netdev's checks that run here) and on planted failures. Exit status:
# the first failure's.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test (host)"
cargo test --workspace --locked

# The mainline base is a tarball no package ships (../shared/bases/):
# run it where it is, and say so where it is not.
tarball=$(sed -n 's/^tarball = //p' kernel-patches/bases/7.1 || true)
case "$tarball" in /*) ;; *) tarball="$PWD/$tarball" ;; esac
bases=(6.12)
if [ -f "$tarball" ]; then
	bases+=(7.1)
else
	echo "== SKIPPED base 7.1: $tarball is not on this machine (kernel-patches/bases/7.1)"
fi

echo "== failure modes (broken patch, hung guest, kernel panic)"
bash ci/failure-modes.sh

mkdir -p target/ci
for base in "${bases[@]}"; do
	echo "== udp-repair test --base $base --variant all (build, boot, test)"
	cargo run --release --locked -p udp-repair -- test --base "$base" --variant all \
		--json "target/ci/results-$base.json"
done
# After the builds: the W=1 check compiles the touched objects in the
# variants' build directories.
echo "== patches check on ${bases[*]}, and planted failures named (ci/patches-check.sh)"
bash ci/patches-check.sh "${bases[@]}"
echo "== bases tested: ${bases[*]}"
if [ ! -f "$tarball" ]; then
	echo "== SKIPPED base 7.1: $tarball is not on this machine"
fi
