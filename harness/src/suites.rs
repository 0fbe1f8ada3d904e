//! What runs in the guest: suites made of units, as data.
//!
//! A unit is one program run in the guest. Its output is parsed per its
//! [`Format`] into test results. Add a row to [`UNITS`] to add a test
//! program; the harness builds it and puts it in the initramfs.

/// How a unit reports its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Rust selftests binary: KTAP written to the file named by
    /// `$UDP_REPAIR_KTAP`.
    KtapFile,
    /// (K)TAP on stdout, as kselftest_harness.h programs print it.
    TapStdout,
    /// No TAP: one result from the exit status (0 pass, 4 skip, else fail).
    ExitCode,
}

/// Which program a unit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// The static `udp-repair-selftests` binary, with a libtest filter.
    Selftests {
        /// libtest name filter, e.g. `base::`.
        filter: &'static str,
    },
    /// A C program from the kernel tree, compiled statically against the
    /// tree's sanitised headers. Missing from the tree (an unpatched base
    /// has no `udp_repair.c`): the unit is a SKIP saying so.
    Kselftest {
        /// Source path relative to the kernel tree.
        src: &'static str,
        /// Extra linker arguments.
        libs: &'static [&'static str],
    },
}

/// One program run in the guest.
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    /// Suite the unit belongs to (`test --suite`).
    pub suite: &'static str,
    /// Name of the unit within its suite; for `ExitCode` units, the test name.
    pub name: &'static str,
    /// What to run.
    pub program: Program,
    /// Arguments after the program (and after the filter, for selftests).
    pub args: &'static [&'static str],
    /// How it reports.
    pub format: Format,
    /// Seconds before the guest kills it and reports a timeout.
    pub timeout_s: u32,
}

/// Every unit, in run order.
pub const UNITS: &[Unit] = &[
    Unit {
        suite: "base",
        name: "selftests",
        program: Program::Selftests { filter: "base::" },
        args: &[],
        format: Format::KtapFile,
        timeout_s: 300,
    },
    Unit {
        suite: "getsockopt",
        name: "selftests",
        program: Program::Selftests {
            filter: "getsockopt::",
        },
        args: &[],
        format: Format::KtapFile,
        timeout_s: 300,
    },
    // Each kernel series carries its own udp_repair.c: one row serves both.
    Unit {
        suite: "kselftest",
        name: "udp_repair",
        program: Program::Kselftest {
            src: "tools/testing/selftests/net/udp_repair.c",
            libs: &[],
        },
        args: &[],
        format: Format::TapStdout,
        timeout_s: 120,
    },
    // The SO_PEEK_OFF fix for zero-length datagrams (getsockopt series, patch 1).
    Unit {
        suite: "kselftest",
        name: "udp_peek_zerolen",
        program: Program::Kselftest {
            src: "tools/testing/selftests/net/udp_peek_zerolen.c",
            libs: &[],
        },
        args: &[],
        format: Format::TapStdout,
        timeout_s: 60,
    },
];

/// The suite names, in order of first appearance.
pub fn suite_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for u in UNITS {
        if !names.contains(&u.suite) {
            names.push(u.suite);
        }
    }
    names
}
