//! The plan stage: what runs in the guest, as which command, and what the
//! host decides itself (a kselftest the tree lacks is a SKIP, one that
//! does not compile an ERROR, so the other suites still run).

use crate::pipeline::Kernel;
use crate::results::{Decided, PlannedUnit};
use crate::suites::{Program, Unit};
use std::path::Path;
use std::time::Duration;
use udp_repair_vm::build;
use udp_repair_vm::initramfs::{Contents, PlanUnit};

/// Where the guest binary sits in the guest.
pub const SELFTESTS_GUEST_PATH: &str = "/tests/udp-repair-selftests";

/// A run's plan: the guest's files and commands, and every unit as
/// planned (in the order of `units`).
#[derive(Debug)]
pub struct Plan {
    /// What goes into the guest.
    pub contents: Contents,
    /// Each unit, run or decided.
    pub units: Vec<PlannedUnit>,
}

/// Default guest deadline: a boot allowance plus every planned unit's own.
pub fn default_timeout(units: &[PlannedUnit]) -> Duration {
    Duration::from_secs(90 + units.iter().map(|u| u64::from(u.timeout_s)).sum::<u64>())
}

/// Plans `units` on kernel `k`, with the guest binary at `selftests`
/// (builds the kselftest programs the units need). With `fuzz_secs`, the
/// fuzz suite's unit runs under `/bin/env UDP_REPAIR_FUZZ_SECS=S
/// UDP_REPAIR_FUZZ_CALLS=<no bound>` (selftests/src/fuzz.rs) with a
/// deadline of S plus its own; not on the `none` variant, whose kernel has
/// none of the options (its fuzz unit keeps the default bound).
pub fn plan(k: &Kernel, units: &[&Unit], selftests: &Path, fuzz_secs: Option<u32>) -> Plan {
    let mut contents = Contents::default();
    contents
        .files
        .push((SELFTESTS_GUEST_PATH.into(), selftests.to_path_buf(), 0o755));
    let mut planned = Vec::new();
    let ks_dir = k.built.dir.join("kselftest");
    for u in units {
        let mut timeout_s = u.timeout_s;
        let prepared = match u.program {
            Program::Selftests { filter } => {
                let mut argv = Vec::new();
                // The unpatched kernel has none of the options: its fuzz
                // unit keeps its default bound, not the long run's.
                let patched = k.tree.label != "none";
                if let (Some(s), "fuzz", true) = (fuzz_secs, u.suite, patched) {
                    argv.extend([
                        "/bin/env".to_string(),
                        format!("UDP_REPAIR_FUZZ_SECS={s}"),
                        format!("UDP_REPAIR_FUZZ_CALLS={}", u64::MAX),
                    ]);
                    timeout_s = timeout_s.saturating_add(s);
                }
                argv.extend([SELFTESTS_GUEST_PATH.to_string(), filter.to_string()]);
                argv.extend(u.args.iter().map(|s| s.to_string()));
                Ok(argv)
            }
            Program::Kselftest { src, libs, m32 } => {
                match build::kselftest(&k.tree, &k.built, src, libs, m32, &ks_dir) {
                    Ok(Some(bin)) => {
                        let name = bin
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let guest = format!("/kselftest/{name}");
                        if !contents.files.iter().any(|(g, _, _)| *g == guest) {
                            contents.files.push((guest.clone(), bin, 0o755));
                        }
                        let mut argv = vec![guest];
                        argv.extend(u.args.iter().map(|s| s.to_string()));
                        Ok(argv)
                    }
                    Ok(None) => Err(Decided::Skip {
                        reason: format!("{src} is not in this kernel tree"),
                    }),
                    // The series' own test does not compile: that test fails,
                    // the other suites still run on the kernel.
                    Err(e) => Err(Decided::Error { why: e.to_string() }),
                }
            }
        };
        let (argv, decided) = match prepared {
            Ok(argv) => {
                let index = contents.plan.len();
                contents.plan.push(PlanUnit {
                    argv: argv.clone(),
                    timeout_s,
                    label: label(u),
                });
                (argv, Decided::Runs { index })
            }
            Err(d) => (Vec::new(), d),
        };
        planned.push(PlannedUnit {
            suite: u.suite.to_string(),
            name: u.name.to_string(),
            format: u.format,
            timeout_s,
            argv,
            decided,
        });
    }
    Plan {
        contents,
        units: planned,
    }
}

/// The words a unit's `unit-begin` line carries, so a log says what it was.
pub fn label(u: &Unit) -> Vec<String> {
    vec![
        format!("suite={}", u.suite),
        format!("name={}", u.name),
        format!("format={}", u.format.label()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suites::UNITS;
    use std::path::PathBuf;
    use udp_repair_vm::build::Built;
    use udp_repair_vm::tree::Tree;

    fn kernel(label: &str) -> Kernel {
        Kernel {
            tree: Tree {
                src: PathBuf::from("/nonexistent/src"),
                owned: true,
                label: label.into(),
            },
            built: Built {
                dir: PathBuf::from("/nonexistent/build"),
                bzimage: PathBuf::from("/nonexistent/bzImage"),
                headers: PathBuf::from("/nonexistent/usr/include"),
                release: "0.0.0".into(),
                elapsed: Duration::ZERO,
                steps: 0,
            },
        }
    }

    /// The fuzz unit's argv and deadline under `--fuzz-secs 750`.
    fn fuzz_unit(label: &str) -> (Vec<String>, u32, u32) {
        let units: Vec<&Unit> = UNITS.iter().filter(|u| u.suite == "fuzz").collect();
        assert!(!units.is_empty(), "no fuzz suite");
        let p = plan(&kernel(label), &units, Path::new("/t"), Some(750));
        let u = &p.units[0];
        (u.argv.clone(), u.timeout_s, units[0].timeout_s)
    }

    #[test]
    fn fuzz_secs_lengthen_a_patched_kernels_fuzz_unit() {
        let (argv, timeout, own) = fuzz_unit("getsockopt");
        assert_eq!(argv[0], "/bin/env");
        assert!(argv.contains(&"UDP_REPAIR_FUZZ_SECS=750".to_string()));
        assert_eq!(timeout, own + 750);
    }

    #[test]
    fn fuzz_secs_leave_the_unpatched_kernels_default() {
        let (argv, timeout, own) = fuzz_unit("none");
        assert_eq!(argv[0], SELFTESTS_GUEST_PATH);
        assert!(!argv.iter().any(|a| a.starts_with("UDP_REPAIR_FUZZ")));
        assert_eq!(timeout, own);
    }
}
