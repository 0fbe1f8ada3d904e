//! Tests that run inside the guest kernel, one static binary.
//!
//! Test names are `suite::group::case`; the harness selects a suite with a
//! libtest filter (`udp-repair-selftests base::`). Set `UDP_REPAIR_KTAP=FILE`
//! to get a KTAP report besides libtest's own output.

mod base;
pub mod ktap;

fn main() -> std::process::ExitCode {
    let mut tests = Vec::new();
    tests.extend(base::tests());
    ktap::run(tests)
}
