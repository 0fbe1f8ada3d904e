//! What runs in the guest: suites made of units, as data.
//!
//! A unit is one program run in the guest. Its output is parsed per its
//! [`Format`] into test results. Add a row to [`UNITS`] to add a test
//! program; the harness builds it and puts it in the initramfs.

/// How a unit reports its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The Rust selftests binary: KTAP written to the file named by
    /// `$UDP_REPAIR_KTAP`.
    KtapFile,
    /// (K)TAP on stdout, as kselftest_harness.h programs print it.
    TapStdout,
    /// No TAP: one result from the exit status (0 pass, 4 skip, else fail).
    ExitCode,
}

impl Format {
    /// Its name in logs and records: `ktap-file`, `tap-stdout`, `exit-code`.
    pub fn label(self) -> &'static str {
        match self {
            Format::KtapFile => "ktap-file",
            Format::TapStdout => "tap-stdout",
            Format::ExitCode => "exit-code",
        }
    }

    /// The format of [`Format::label`] `s`.
    pub fn from_label(s: &str) -> Option<Format> {
        [Format::KtapFile, Format::TapStdout, Format::ExitCode]
            .into_iter()
            .find(|f| f.label() == s)
    }
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
        /// Built for i386 (`gcc -m32`), to run under the guest's
        /// `IA32_EMULATION`: the compat paths of the options, and the
        /// uapi structs' layout for 32-bit callers.
        m32: bool,
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
            m32: false,
        },
        args: &[],
        format: Format::TapStdout,
        timeout_s: 120,
    },
    // The same, built for i386 and run under IA32_EMULATION: the compat
    // getsockopt path, and struct udp_repair_pending as 32-bit callers
    // see it (its layout case asserts the x86_64 offsets).
    Unit {
        suite: "kselftest",
        name: "udp_repair_i386",
        program: Program::Kselftest {
            src: "tools/testing/selftests/net/udp_repair.c",
            libs: &[],
            m32: true,
        },
        args: &[],
        format: Format::TapStdout,
        timeout_s: 120,
    },
    // The pending-lost series' mark (Willem de Bruijn's alternative).
    Unit {
        suite: "kselftest",
        name: "udp_pending_lost",
        program: Program::Kselftest {
            src: "tools/testing/selftests/net/udp_pending_lost.c",
            libs: &[],
            m32: false,
        },
        args: &[],
        format: Format::TapStdout,
        timeout_s: 60,
    },
    // The SO_PEEK_OFF fix (the peek-zerolen series) for AF_UNIX datagram
    // and seqpacket sockets. Mainline has so_peek_off.c (its stream, dgram
    // and seqpacket cases run on every 7.1 variant; the series adds the
    // zero-length ones); the 6.12 backport adds a so_peek_off.c of the
    // zero-length cases alone. The UDP half is in sk_so_peek_off below.
    Unit {
        suite: "kselftest",
        name: "af_unix_so_peek_off",
        program: Program::Kselftest {
            src: "tools/testing/selftests/net/af_unix/so_peek_off.c",
            libs: &[],
            m32: false,
        },
        args: &[],
        format: Format::TapStdout,
        timeout_s: 60,
    },
    // The dump/restore engine on the booted kernel
    // (selftests/src/dumprestore.rs), with its proptest state machine.
    Unit {
        suite: "dumprestore",
        name: "selftests",
        program: Program::Selftests {
            filter: "dumprestore::",
        },
        args: &[],
        format: Format::KtapFile,
        timeout_s: 600,
    },
    // Random sequences of UDP socket calls with repair on and off, no
    // model (selftests/src/fuzz.rs): on every variant, the repair options
    // of all three series included (ENOPROTOOPT where absent); the splat
    // watch is the kernel-side verdict.
    Unit {
        suite: "fuzz",
        name: "selftests",
        program: Program::Selftests { filter: "fuzz::" },
        args: &[],
        format: Format::KtapFile,
        timeout_s: 120,
    },
    // The pending-lost series and the engine's use of it
    // (selftests/src/pendinglost.rs); SKIPs on a kernel without it.
    Unit {
        suite: "pendinglost",
        name: "selftests",
        program: Program::Selftests {
            filter: "pendinglost::",
        },
        args: &[],
        format: Format::KtapFile,
        timeout_s: 120,
    },
    // The recvmsg series from Rust (selftests/src/recvmsg.rs); SKIPs on a
    // kernel without it.
    Unit {
        suite: "recvmsg",
        name: "selftests",
        program: Program::Selftests {
            filter: "recvmsg::",
        },
        args: &[],
        format: Format::KtapFile,
        timeout_s: 300,
    },
    // The kernel's own UDP selftests, for regressions in the code the
    // series touch, built as their Makefile builds them and run as their
    // scripts run them (cwd /kselftest, lo up, root).
    // sk_so_peek_off: SO_PEEK_OFF over TCP and UDP on lo; in TEST_GEN_PROGS,
    // so kselftest runs it as it is; no extra libraries. The peek-zerolen
    // series adds its UDP zero-length walks to it (one result: a variant
    // without the fix runs the base's copy, which has no such case).
    Unit {
        suite: "regression",
        name: "sk_so_peek_off",
        program: Program::Kselftest {
            src: "tools/testing/selftests/net/sk_so_peek_off.c",
            libs: &[],
            m32: false,
        },
        args: &[],
        format: Format::ExitCode,
        timeout_s: 60,
    },
    // reuseport_addr_any.sh runs it in a fresh netns (in_netns.sh) where it
    // needs only lo up (127.0.0.1, ::1, ::ffff:127.0.0.1); its Makefile
    // links no extra library; DCCP is not configured, which it reports and
    // skips itself.
    Unit {
        suite: "regression",
        name: "reuseport_addr_any",
        program: Program::Kselftest {
            src: "tools/testing/selftests/net/reuseport_addr_any.c",
            libs: &[],
            m32: false,
        },
        args: &[],
        format: Format::ExitCode,
        timeout_s: 60,
    },
    // udpgso: the cases of udpgso.sh, named and ordered as it prints them,
    // each after the set-up its script gives it (selftests/src/regression.rs; the rows must stay in
    // this order). Left out: the hw-gso/sw-gso cases (`-R` on a dummy
    // device tuned with ethtool: no CONFIG_DUMMY in the guest, no ethtool
    // in busybox).
    Unit {
        suite: "regression",
        name: "udpgso_setup_dev_mtu",
        program: Program::Selftests {
            filter: "regression::udpgso::setup_dev_mtu",
        },
        args: &[],
        format: Format::KtapFile,
        timeout_s: 30,
    },
    Unit {
        suite: "regression",
        name: "udpgso_ipv4_cmsg",
        program: UDPGSO,
        args: &["-4", "-C"],
        format: Format::ExitCode,
        timeout_s: 120,
    },
    Unit {
        suite: "regression",
        name: "udpgso_ipv4_setsockopt",
        program: UDPGSO,
        args: &["-4", "-C", "-s"],
        format: Format::ExitCode,
        timeout_s: 120,
    },
    Unit {
        suite: "regression",
        name: "udpgso_ipv6_cmsg",
        program: UDPGSO,
        args: &["-6", "-C"],
        format: Format::ExitCode,
        timeout_s: 120,
    },
    Unit {
        suite: "regression",
        name: "udpgso_ipv6_setsockopt",
        program: UDPGSO,
        args: &["-6", "-C", "-s"],
        format: Format::ExitCode,
        timeout_s: 120,
    },
    Unit {
        suite: "regression",
        name: "udpgso_ipv4_msg_more",
        program: UDPGSO,
        args: &["-4", "-C", "-m"],
        format: Format::ExitCode,
        timeout_s: 120,
    },
    Unit {
        suite: "regression",
        name: "udpgso_ipv6_msg_more",
        program: UDPGSO,
        args: &["-6", "-C", "-m"],
        format: Format::ExitCode,
        timeout_s: 120,
    },
    Unit {
        suite: "regression",
        name: "udpgso_setup_route_mtu",
        program: Program::Selftests {
            filter: "regression::udpgso::setup_route_mtu",
        },
        args: &[],
        format: Format::KtapFile,
        timeout_s: 30,
    },
    Unit {
        suite: "regression",
        name: "udpgso_ipv4_connected",
        program: UDPGSO,
        args: &["-4", "-c"],
        format: Format::ExitCode,
        timeout_s: 120,
    },
    Unit {
        suite: "regression",
        name: "udpgso_ipv6_connected",
        program: UDPGSO,
        args: &["-6", "-c"],
        format: Format::ExitCode,
        timeout_s: 120,
    },
    Unit {
        suite: "regression",
        name: "udpgso_teardown",
        program: Program::Selftests {
            filter: "regression::udpgso::teardown",
        },
        args: &[],
        format: Format::KtapFile,
        timeout_s: 30,
    },
    // Left out: so_txtime (so_txtime.sh needs `tc` to install the fq and
    // etf qdiscs, which busybox lacks; without them the delivery times it
    // checks are not enforced, so it could not pass honestly).
];

/// udpgso.c, which several rows run with different arguments.
const UDPGSO: Program = Program::Kselftest {
    src: "tools/testing/selftests/net/udpgso.c",
    libs: &[],
    m32: false,
};

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
