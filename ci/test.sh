#!/usr/bin/env bash
# The project's tests, as README states them: style and lints, the host
# unit and integration tests, then every kernel variant built, booted
# under QEMU and tested (the guest suites, the C kselftests, the kernel's
# own UDP selftests). Exit status: the first failure's.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test (host)"
cargo test --workspace --locked

echo "== patches: apply in order, checkpatch --strict clean"
cargo run -q --release --locked -p udp-repair -- patches --variant all

echo "== failure modes (broken patch, hung guest, kernel panic)"
bash ci/failure-modes.sh

echo "== udp-repair test --variant all (build, boot, test)"
mkdir -p target/ci
cargo run --release --locked -p udp-repair -- test --variant all --json target/ci/results.json
