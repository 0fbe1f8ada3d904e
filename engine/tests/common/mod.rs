//! Helpers shared by the engine's integration tests.

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
