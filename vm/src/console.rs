//! Reading what the guest said: kernel splats and QEMU's fatal errors on
//! the console, and the per-unit sections of the results channel (each
//! unit's KTAP is parsed by `udp_repair_ktap::parse`).
//!
//! The results channel (virtio console `hvc0`) carries, per unit:
//!
//! ```text
//! @@udp-repair unit-begin 3 suite=kselftest name=udp_repair format=tap-stdout
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
    // Hangs: a hung task ("INFO: task ... blocked for more than"), a soft
    // lockup ("watchdog: BUG: soft lockup", under "BUG: "), RCU stalls.
    "INFO: task ",
    "detected stalls on CPUs/tasks",
    "self-detected stall on CPU",
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
    /// What the host said the unit is (`suite=S name=N format=F`), from
    /// its `unit-begin` line.
    pub label: Option<String>,
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
                    let label: Vec<&str> = words.collect();
                    units.push(UnitOutput {
                        idx,
                        label: (!label.is_empty()).then(|| label.join(" ")),
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

impl From<udp_repair_ktap::Status> for Status {
    fn from(s: udp_repair_ktap::Status) -> Self {
        match s {
            udp_repair_ktap::Status::Pass => Status::Pass,
            udp_repair_ktap::Status::Fail => Status::Fail,
            udp_repair_ktap::Status::Skip => Status::Skip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for hang in [
            "[ 61.0] INFO: task udp-repair-self:42 blocked for more than 60 seconds.",
            "[ 30.0] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [kworker/1:1:30]",
            "[ 70.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            "[ 70.0] rcu: INFO: rcu_sched self-detected stall on CPU",
        ] {
            assert_eq!(splats(hang).len(), 1, "{hang}");
        }
    }
}
