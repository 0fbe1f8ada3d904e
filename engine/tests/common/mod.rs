//! Helpers shared by the engine's integration tests.

use std::sync::{Mutex, MutexGuard};

/// Held for the whole of each test in a binary whose tests fork (`run`):
/// a fork copies every descriptor of the process, so a socket another
/// test closes stays open in the child until its exec, and that test's
/// restore, binding the same port again, fails with EADDRINUSE.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A test that panicked holding the lock has already failed by name.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the command line `args` (program and arguments split at white
/// space, e.g. `"ip link set lo up"`) and panics with its stderr when it
/// does not start or exits non-zero.
pub fn run(args: &str) {
    let (prog, rest) = args.split_once(' ').unwrap_or((args, ""));
    let out = std::process::Command::new(prog)
        .args(rest.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("{args}: {e}"));
    assert!(
        out.status.success(),
        "{args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
