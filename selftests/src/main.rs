//! Tests that run inside the guest kernel, one static binary.
//!
//! Test names are `suite::group::case`; the harness selects a suite with a
//! libtest filter (`udp-repair-selftests base::`). Set `UDP_REPAIR_KTAP=FILE`
//! to get a KTAP report besides libtest's own output.

mod base;
mod dumprestore;
mod fuzz;
mod getsockopt;
mod handover;
pub mod ktap;
mod pendinglost;
mod recvmsg;
mod regression;
mod util;

fn main() -> std::process::ExitCode {
    // A case that needs a process of its own (a user namespace can only be
    // entered single-threaded; an application running as another user).
    if let Some(name) = std::env::args()
        .nth(1)
        .and_then(|a| a.strip_prefix("--helper=").map(str::to_string))
    {
        return std::process::ExitCode::from(handover::helper_main(&name) as u8);
    }
    let mut tests = Vec::new();
    tests.extend(base::tests());
    tests.extend(dumprestore::tests());
    tests.extend(fuzz::tests());
    tests.extend(getsockopt::tests());
    tests.extend(pendinglost::tests());
    tests.extend(recvmsg::tests());
    tests.extend(regression::tests());
    ktap::run(tests)
}
