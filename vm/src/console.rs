//! Reading what the guest said: kernel splats on the console, the per-unit
//! sections of the results channel, and (K)TAP.
//!
//! The results channel (virtio console `hvc0`) carries, per unit:
//!
//! ```text
//! @@udp-repair unit-begin 3
//! ...the program's own output...
//! @@udp-repair ktap 3            (only when it wrote $UDP_REPAIR_KTAP)
//! KTAP version 1
//! ...
//! @@udp-repair unit-end 3 rc=0 ms=412
//! ```
//!
//! and `@@udp-repair done` when the init got to the end.

/// Console lines that mean the kernel hit something wrong: any of them
/// fails a run even when every test passed.
pub const SPLAT_MARKERS: &[&str] = &[
    "Kernel panic",
    "BUG: ",
    "kernel BUG at",
    "WARNING: ",
    "Oops: ",
    "Oops#",
    "general protection fault",
    "KASAN: ",
    "KFENCE: ",
    "UBSAN: ",
    "possible recursive locking detected",
    "possible circular locking dependency detected",
    "inconsistent lock state",
    "suspicious RCU usage",
    "INFO: task ",
    "Unable to handle kernel",
    "------------[ cut here ]------------",
];

/// Messages of QEMU itself (or of the hypervisor under it) after which the
/// guest cannot go on, though QEMU may keep running: KVM's internal and
/// emulation errors stop the vCPU and leave the process waiting
/// (`kvm_cpu_exec()` in QEMU's accel/kvm/kvm-all.c).
pub const QEMU_FATAL_MARKERS: &[&str] = &[
    "KVM internal error",
    "error: kvm run failed",
    "KVM: entry failed",
];

/// Whether `line`, from QEMU's stderr or a runner's merged output, is a
/// fatal error of QEMU: one of [`QEMU_FATAL_MARKERS`], or an error that
/// QEMU reports as `qemu-system-ARCH: MESSAGE` or `qemu: MESSAGE`
/// (`error_report()`, hw/core/loader.c: a
/// device, a machine or a file that fails to start), but not its
/// warnings, the note it prints when it is stopped by a signal, nor an
/// accelerator that fails to start when another follows (`-accel kvm:tcg`
/// prints "failed to initialize kvm", then "falling back to tcg"; with no
/// fallback QEMU exits by itself and its stderr is reported).
pub fn qemu_fatal(line: &str) -> bool {
    let line = line.trim();
    if QEMU_FATAL_MARKERS.iter().any(|m| line.contains(m)) {
        return true;
    }
    let msg = if let Some(rest) = line.strip_prefix("qemu-system-") {
        match rest.split_once(": ") {
            Some((_, msg)) => msg,
            None => return false,
        }
    } else if let Some(msg) = line.strip_prefix("qemu: ") {
        msg
    } else {
        return false;
    };
    !(msg.starts_with("warning:")
        || msg.starts_with("terminating on signal")
        || msg.contains("falling back to")
        || msg.contains("failed to initialize kvm"))
}

/// The console lines carrying a splat marker, in order.
pub fn splats(console: &str) -> Vec<String> {
    console
        .lines()
        .filter(|l| SPLAT_MARKERS.iter().any(|m| l.contains(m)))
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// One unit's section of the results channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitOutput {
    /// Index in the run plan.
    pub idx: usize,
    /// The program's own output.
    pub raw: String,
    /// The KTAP report it wrote to `$UDP_REPAIR_KTAP`, if any.
    pub ktap: Option<String>,
    /// Exit status; `None` when the section never ended (the guest died).
    pub rc: Option<i32>,
    /// Wall time in the guest.
    pub ms: Option<u64>,
}

/// The results channel, split into units; the flag says whether the init
/// reached its end.
pub fn split_units(results: &str) -> (Vec<UnitOutput>, bool) {
    let mut units: Vec<UnitOutput> = Vec::new();
    let mut in_ktap = false;
    let mut done = false;
    for line in results.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("@@udp-repair ") {
            let mut words = rest.split_whitespace();
            match (
                words.next(),
                words.next().and_then(|w| w.parse::<usize>().ok()),
            ) {
                (Some("unit-begin"), Some(idx)) => {
                    units.push(UnitOutput {
                        idx,
                        ..Default::default()
                    });
                    in_ktap = false;
                    continue;
                }
                (Some("ktap"), Some(_)) => {
                    if let Some(u) = units.last_mut() {
                        u.ktap = Some(String::new());
                    }
                    in_ktap = true;
                    continue;
                }
                (Some("unit-end"), Some(_)) => {
                    if let Some(u) = units.last_mut() {
                        for w in words {
                            if let Some(v) = w.strip_prefix("rc=") {
                                u.rc = v.parse().ok();
                            } else if let Some(v) = w.strip_prefix("ms=") {
                                u.ms = v.parse().ok();
                            }
                        }
                    }
                    in_ktap = false;
                    continue;
                }
                (Some("done"), _) => {
                    done = true;
                    continue;
                }
                _ => {}
            }
        }
        if let Some(u) = units.last_mut() {
            let target = if in_ktap {
                u.ktap.get_or_insert_with(String::new)
            } else {
                &mut u.raw
            };
            target.push_str(line);
            target.push('\n');
        }
    }
    (units, done)
}

/// Outcome of one test case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Passed.
    Pass,
    /// Failed an assertion.
    Fail,
    /// Could not run here, with a reason.
    Skip,
    /// Did not finish: crashed, timed out, or never reported.
    Error,
}

impl Status {
    /// `PASS`, `FAIL`, `SKIP`, `ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
            Status::Error => "ERROR",
        }
    }
}

/// One test case from a (K)TAP document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The description after the number.
    pub name: String,
    /// Its outcome.
    pub status: Status,
    /// SKIP reason, or the diagnostics printed before a failure.
    pub message: String,
    /// `# duration_ms N` if the producer gave one.
    pub duration_ms: Option<u64>,
}

/// A parsed (K)TAP document: the plan and the top-level results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tap {
    /// `1..N`, if present.
    pub plan: Option<usize>,
    /// Results, in order.
    pub cases: Vec<Case>,
}

/// Parses TAP 13 / KTAP 1 top-level results. Indented lines (nested
/// subtests) and noise are skipped; `# ` lines before a result become its
/// message. Tolerates a truncated document: the caller compares with the
/// plan.
pub fn parse_tap(text: &str) -> Tap {
    let mut tap = Tap::default();
    let mut diags: Vec<String> = Vec::new();
    let mut duration = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(plan) = line.strip_prefix("1..") {
            if let Ok(n) = plan.split_whitespace().next().unwrap_or("").parse() {
                tap.plan = Some(n);
            }
            continue;
        }
        if let Some(d) = line.strip_prefix('#') {
            let d = d.trim();
            if let Some(ms) = d.strip_prefix("duration_ms ") {
                duration = ms.trim().parse().ok();
            } else if !d.is_empty() {
                diags.push(d.to_string());
            }
            continue;
        }
        let (ok, rest) = if let Some(r) = line.strip_prefix("not ok ") {
            (false, r)
        } else if let Some(r) = line.strip_prefix("ok ") {
            (true, r)
        } else {
            continue;
        };
        let rest = rest
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        let rest = rest.strip_prefix("- ").unwrap_or(rest);
        let (name, directive) = match rest.split_once(" # ") {
            Some((n, d)) => (n.trim(), Some(d.trim())),
            None => (rest.trim(), None),
        };
        let dir_upper = directive.map(|d| d.to_ascii_uppercase());
        let (status, message) = match dir_upper.as_deref() {
            Some(d) if d.starts_with("SKIP") => (
                Status::Skip,
                directive.unwrap_or("")[4..]
                    .trim()
                    .trim_start_matches(':')
                    .trim()
                    .to_string(),
            ),
            Some(d) if d.starts_with("XFAIL") => {
                (Status::Pass, directive.unwrap_or("").to_string())
            }
            _ if ok => (Status::Pass, String::new()),
            _ => {
                let keep = diags.len().saturating_sub(20);
                (Status::Fail, diags[keep..].join("\n"))
            }
        };
        let status = if status == Status::Skip && !ok {
            Status::Fail
        } else {
            status
        };
        tap.cases.push(Case {
            name: name.to_string(),
            status,
            message,
            duration_ms: duration.take(),
        });
        diags.clear();
    }
    tap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kselftest_harness_output() {
        let text = "TAP version 13\n1..3\n# Starting 3 tests from 2 test cases.\n\
                    #  RUN           udp.v4.cork ...\n#            OK  udp.v4.cork\nok 1 udp.v4.cork\n\
                    #  RUN           udp.v4.peek ...\n# udp_repair.c:88:peek:Expected 3 (3) == n (2)\n\
                    # peek: Test failed\n#          FAIL  udp.v4.peek\nnot ok 2 udp.v4.peek\n\
                    ok 3 udp.v6.repair # SKIP UDP_REPAIR not supported\n# Totals: pass:1 fail:1\n";
        let t = parse_tap(text);
        assert_eq!(t.plan, Some(3));
        assert_eq!(t.cases.len(), 3);
        assert_eq!(t.cases[0].status, Status::Pass);
        assert_eq!(t.cases[1].status, Status::Fail);
        assert!(
            t.cases[1].message.contains("Expected 3 (3) == n (2)"),
            "{}",
            t.cases[1].message
        );
        assert_eq!(t.cases[2].status, Status::Skip);
        assert_eq!(t.cases[2].message, "UDP_REPAIR not supported");
    }

    #[test]
    fn ktap_with_durations_and_truncation() {
        let t = parse_tap(
            "KTAP version 1\n1..4\n# duration_ms 12\nok 1 base::a\nok 2 - base::b # skip why\n",
        );
        assert_eq!(t.plan, Some(4));
        assert_eq!(t.cases[0].duration_ms, Some(12));
        assert_eq!(t.cases[1].name, "base::b");
        assert_eq!(t.cases[1].status, Status::Skip);
        assert_eq!(t.cases[1].message, "why");
    }

    #[test]
    fn units_split_with_ktap_and_missing_end() {
        let r = "noise\n@@udp-repair unit-begin 0\nhello\n@@udp-repair ktap 0\nKTAP version 1\n1..1\nok 1 x\n\
                 @@udp-repair unit-end 0 rc=0 ms=40\n@@udp-repair unit-begin 1\nhalf\n";
        let (units, done) = split_units(r);
        assert!(!done);
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].raw, "hello\n");
        assert_eq!(
            units[0].ktap.as_deref(),
            Some("KTAP version 1\n1..1\nok 1 x\n")
        );
        assert_eq!((units[0].rc, units[0].ms), (Some(0), Some(40)));
        assert_eq!(units[1].rc, None);
        assert_eq!(units[1].raw, "half\n");
    }

    #[test]
    fn qemu_fatal_errors_are_told_from_warnings() {
        for l in [
            "KVM internal error. Suberror: 1",
            "error: kvm run failed Bad address",
            "qemu-system-x86_64: -device virtio-foo: 'virtio-foo' is not a valid device model name",
            "qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory",
            "qemu: could not open kernel file '/nope': No such file or directory",
        ] {
            assert!(qemu_fatal(l), "{l}");
        }
        for l in [
            "qemu-system-x86_64: warning: host doesn't support requested feature",
            "qemu-system-x86_64: terminating on signal 15 from pid 42",
            "qemu-system-x86_64: -accel kvm: failed to initialize kvm: Permission denied",
            "qemu-system-x86_64: falling back to tcg",
            "[    1.0] udp-repair-init: up 6.12.117+",
            "Linux version 6.12.117+ (KVM guest)",
        ] {
            assert!(!qemu_fatal(l), "{l}");
        }
    }

    #[test]
    fn splats_are_found() {
        let c = "[    1.0] ok\n[    2.0] BUG: KASAN: use-after-free in udp_recvmsg\n[ 3.0] Kernel panic - not syncing: x\n";
        let s = splats(c);
        assert_eq!(s.len(), 2);
        assert!(s[0].contains("use-after-free"));
        assert!(splats("[ 1.0] udp: all good\n").is_empty());
    }
}
