//! The results stage: a run's record (what was planned, how the guest
//! ended) and the interpretation of its logs as test records. Pure: it
//! reads no file and boots nothing, so a kept run directory or a console
//! log gives the same report again (`udp-repair parse`), and golden logs
//! in `harness/tests/golden/` test it without a boot, as KUnit's tool does
//! with its `test_data/`.

use crate::report::{Record, Run};
use crate::suites::Format;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use udp_repair_vm::console::{self, Status};
use udp_repair_vm::qemu::End;
use udp_repair_vm::Error;

/// Version of [`RunRecord`]'s layout in `run.json`.
pub const RUN_RECORD_VERSION: u32 = 1;

/// What a run planned and how its guest ended: `run.json` in the run
/// directory, beside `console.log` and `results.log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`RUN_RECORD_VERSION`].
    pub version: u32,
    /// The kernel variant (`none`, `getsockopt`, ..., `tree`).
    pub variant: String,
    /// `uname -r` of the kernel.
    pub kernel: String,
    /// Kernel build time, seconds.
    pub build_s: Option<f64>,
    /// Every unit of the plan, in order, run or decided on the host.
    pub units: Vec<PlannedUnit>,
    /// The boot.
    pub boot: BootRecord,
}

/// One unit as planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedUnit {
    /// Its suite (`test --suite`).
    pub suite: String,
    /// Its name in the suite.
    pub name: String,
    /// How it reports.
    pub format: Format,
    /// Its own deadline in the guest, seconds.
    pub timeout_s: u32,
    /// The command run in the guest (empty when not run).
    pub argv: Vec<String>,
    /// Whether it ran, or what the host decided.
    pub decided: Decided,
}

/// A unit as planned for the guest, or already decided on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "as", rename_all = "kebab-case")]
pub enum Decided {
    /// Runs as plan entry `index` (the `@@udp-repair unit-begin` number).
    Runs {
        /// Index in the guest's plan.
        index: usize,
    },
    /// Not run: SKIP with this reason (a kselftest the tree lacks).
    Skip {
        /// Why.
        reason: String,
    },
    /// Not run: ERROR (a kselftest that does not compile).
    Error {
        /// Why.
        why: String,
    },
}

/// How the guest ran and ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootRecord {
    /// `qemu` or `vng`.
    pub runner: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// How it ended.
    pub end: EndRecord,
    /// The deadline, seconds.
    pub timeout_s: u64,
    /// From QEMU's (or vng's) start to the end, seconds.
    pub elapsed_s: f64,
    /// From the start to the end of the first unit, seconds.
    pub first_result_s: Option<f64>,
    /// The console log's file name in the run directory.
    pub console: String,
    /// The results channel's file name (vng: the console log itself).
    pub results: String,
    /// QEMU's last line on stderr, if it wrote any.
    pub qemu_error: Option<String>,
}

/// [`End`], as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "kebab-case")]
pub enum EndRecord {
    /// QEMU exited by itself.
    Exited {
        /// Its exit status.
        code: Option<i32>,
    },
    /// Killed at the deadline.
    TimedOut {
        /// Plan index of the unit running then.
        running: Option<usize>,
    },
    /// No sign of life in time.
    NoLife,
    /// QEMU's own fatal error, quoted.
    QemuFatal {
        /// QEMU's line.
        line: String,
    },
}

impl From<&End> for EndRecord {
    fn from(e: &End) -> Self {
        match e {
            End::Exited(code) => EndRecord::Exited { code: *code },
            End::TimedOut { running } => EndRecord::TimedOut { running: *running },
            End::NoLife => EndRecord::NoLife,
            End::QemuFatal(line) => EndRecord::QemuFatal { line: line.clone() },
        }
    }
}

/// Why a finished boot is an infrastructure failure, if it is: QEMU
/// failed, the deadline passed, the kernel printed a splat, or the guest
/// stopped before the end of its plan. `console` is the console text,
/// `done` whether the init reported the end of its plan.
pub fn boot_failure(
    b: &BootRecord,
    console_text: &str,
    done: bool,
    console_path: &Path,
    running: Option<String>,
) -> Option<Error> {
    let splats = console::splats(console_text);
    let console = console_path.to_path_buf();
    match &b.end {
        // QEMU (or KVM under it) failed: the guest never had a chance.
        EndRecord::QemuFatal { line } => Some(Error::Boot {
            reason: format!("QEMU failed: {line}"),
            console,
        }),
        EndRecord::TimedOut { .. } | EndRecord::NoLife => Some(Error::Timeout {
            after: Duration::from_secs(b.timeout_s),
            console,
            running,
        }),
        EndRecord::Exited { .. } if !splats.is_empty() => Some(Error::Boot {
            reason: format!(
                "kernel splat on the console ({} line(s)), first: {}",
                splats.len(),
                splats[0]
            ),
            console,
        }),
        EndRecord::Exited { code } if !done => {
            let why = if console_text.contains("udp-repair-init: up") {
                "the guest stopped before the end of its plan"
            } else {
                "the guest never reached its init"
            };
            let exit = match code {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".into(),
            };
            let qemu_err = b
                .qemu_error
                .as_deref()
                .map(|l| format!("; qemu: {l}"))
                .unwrap_or_default();
            let reason = if b.runner == "log" {
                // A log alone: its end is all there is to go by.
                "the log ends before the guest's plan did (no @@udp-repair done)".to_string()
            } else {
                format!("{why} ({} {exit}{qemu_err})", b.runner)
            };
            Some(Error::Boot { reason, console })
        }
        EndRecord::Exited { .. } => None,
    }
}

/// The stress figures in a guest's results text, one line each as the
/// program printed it from its marker on: the fuzz suite's
/// `fuzz::random_calls: seed ...: N calls by T thread(s) in S s ...; by
/// call: ...; errors by errno: ...` and its `fuzz::concurrent_calls`
/// alike (selftests/src/fuzz.rs), and the `udp_repair` kselftest's
/// `concurrent_dump:N calls in S s ...` race (getsockopt series).
pub fn figures(results_text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in results_text.lines() {
        let found = [
            "fuzz::random_calls: seed",
            "fuzz::concurrent_calls: seed",
            "concurrent_dump:",
        ]
        .iter()
        .find_map(|m| line.find(m).map(|i| line[i..].trim_end()))
        .filter(|f| f.contains(" calls in ") || f.contains(" calls by "));
        if let Some(f) = found {
            if !out.iter().any(|o| o == f) {
                out.push(f.to_string());
            }
        }
    }
    out
}

/// The report of a run from its record and its logs: `console_text` and
/// `results_text` (the same text under vng), `dir` where the logs are.
pub fn interpret(rec: &RunRecord, console_text: &str, results_text: &str, dir: &Path) -> Run {
    let mut run = Run {
        variant: rec.variant.clone(),
        kernel: rec.kernel.clone(),
        accel: rec.boot.accel.clone(),
        build_s: rec.build_s,
        boot_s: Some(rec.boot.elapsed_s),
        first_result_s: rec.boot.first_result_s,
        infra_error: None,
        logs: Some(dir.display().to_string()),
        splats: Some(console::splats(console_text).len()),
        figures: figures(results_text),
        tests: Vec::new(),
    };
    let (outputs, done) = console::split_units(results_text);
    let running = match rec.boot.end {
        EndRecord::TimedOut { running: Some(i) } => rec
            .units
            .iter()
            .find(|u| u.decided == Decided::Runs { index: i })
            .map(|u| u.argv.join(" ")),
        _ => None,
    };
    let infra = boot_failure(
        &rec.boot,
        console_text,
        done,
        &dir.join(&rec.boot.console),
        running,
    )
    .map(|e| e.to_string());
    for u in &rec.units {
        match &u.decided {
            Decided::Skip { reason } => run.tests.push(record(
                u,
                &run.kernel,
                &run.variant,
                &u.name,
                Status::Skip,
                None,
                reason.clone(),
            )),
            Decided::Error { why } => run.tests.push(record(
                u,
                &run.kernel,
                &run.variant,
                &u.name,
                Status::Error,
                None,
                why.clone(),
            )),
            Decided::Runs { index } => {
                let out = outputs.iter().find(|o| o.idx == *index);
                let why_missing = infra
                    .clone()
                    .unwrap_or_else(|| "the guest did not run it".into());
                unit_records(
                    u,
                    out,
                    &why_missing,
                    &run.kernel,
                    &run.variant,
                    &mut run.tests,
                );
            }
        }
    }
    run.infra_error = infra;
    run
}

/// A record of a log without `run.json` (a console log on stdin): the
/// units come from the labels on the results channel's `unit-begin` lines
/// (`suite=S name=N format=F`), units the host decided are not there, and
/// the end is read from the log (the `done` marker, or a stop before it).
pub fn record_from_log(text: &str) -> std::result::Result<RunRecord, String> {
    let (outputs, done) = console::split_units(text);
    let mut units = Vec::new();
    for o in &outputs {
        let label = o.label.as_deref().unwrap_or("");
        let field = |k: &str| {
            label
                .split_whitespace()
                .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .map(str::to_string)
        };
        let (Some(suite), Some(name), Some(format)) =
            (field("suite"), field("name"), field("format"))
        else {
            return Err(format!(
                "unit {} has no label (suite=, name=, format=): a log from an older udp-repair? parse its run directory instead",
                o.idx
            ));
        };
        let format = Format::from_label(&format)
            .ok_or_else(|| format!("unit {}: format {format:?}", o.idx))?;
        units.push(PlannedUnit {
            suite,
            name,
            format,
            timeout_s: 0,
            argv: Vec::new(),
            decided: Decided::Runs { index: o.idx },
        });
    }
    if units.is_empty() {
        return Err(
            "no @@udp-repair unit-begin line: not a udp-repair results channel or vng log".into(),
        );
    }
    let release = text
        .lines()
        .find_map(|l| l.split("udp-repair-init: up ").nth(1))
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    Ok(RunRecord {
        version: RUN_RECORD_VERSION,
        variant: "log".into(),
        kernel: release,
        build_s: None,
        units,
        boot: BootRecord {
            runner: "log".into(),
            accel: String::new(),
            end: EndRecord::Exited {
                code: if done { Some(0) } else { None },
            },
            timeout_s: 0,
            elapsed_s: 0.0,
            first_result_s: None,
            console: "-".into(),
            results: "-".into(),
            qemu_error: None,
        },
    })
}

fn record(
    u: &PlannedUnit,
    kernel: &str,
    variant: &str,
    name: &str,
    status: Status,
    ms: Option<u64>,
    message: String,
) -> Record {
    Record {
        suite: u.suite.clone(),
        name: name.to_string(),
        variant: variant.to_string(),
        kernel: kernel.to_string(),
        status,
        duration_ms: ms,
        message,
    }
}

/// Exit status of a program killed by the guest's per-unit timeout.
const KILLED: i32 = 137;

fn raw_tail(raw: &str) -> String {
    let lines: Vec<&str> = raw.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Turns one unit's output into records.
fn unit_records(
    u: &PlannedUnit,
    out: Option<&console::UnitOutput>,
    why_missing: &str,
    kernel: &str,
    variant: &str,
    recs: &mut Vec<Record>,
) {
    let mk =
        |name: &str, status, ms, msg: String| record(u, kernel, variant, name, status, ms, msg);
    let Some(out) = out else {
        recs.push(mk(
            &u.name,
            Status::Error,
            None,
            format!("not run: {why_missing}"),
        ));
        return;
    };
    let Some(rc) = out.rc else {
        recs.push(mk(
            &u.name,
            Status::Error,
            None,
            format!("did not finish: {why_missing}\n{}", raw_tail(&out.raw)),
        ));
        return;
    };
    if rc == KILLED {
        recs.push(mk(
            &u.name,
            Status::Error,
            out.ms,
            format!(
                "killed after its {}s timeout\n{}",
                u.timeout_s,
                raw_tail(&out.raw)
            ),
        ));
    }
    match u.format {
        Format::ExitCode => {
            if rc == KILLED {
                return;
            }
            let (status, msg) = match rc {
                0 => (Status::Pass, String::new()),
                4 => (
                    Status::Skip,
                    out.raw
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("exit 4")
                        .to_string(),
                ),
                _ => (
                    Status::Fail,
                    format!("exit status {rc}\n{}", raw_tail(&out.raw)),
                ),
            };
            recs.push(mk(&u.name, status, out.ms, msg));
        }
        Format::KtapFile | Format::TapStdout => {
            let text = match u.format {
                Format::KtapFile => out.ktap.as_deref(),
                _ => Some(out.raw.as_str()),
            };
            let Some(text) = text else {
                recs.push(mk(
                    &u.name,
                    Status::Error,
                    out.ms,
                    format!(
                        "wrote no KTAP report (exit status {rc})\n{}",
                        raw_tail(&out.raw)
                    ),
                ));
                return;
            };
            let tap = udp_repair_ktap::parse(text);
            let prefix = if u.format == Format::TapStdout {
                format!("{}:", u.name)
            } else {
                String::new()
            };
            for c in &tap.cases {
                recs.push(mk(
                    &format!("{prefix}{}", c.name),
                    Status::from(c.status),
                    c.duration_ms,
                    c.message.clone(),
                ));
            }
            let missing = tap.plan.unwrap_or(0).saturating_sub(tap.cases.len());
            if missing > 0 {
                recs.push(mk(
                    &u.name,
                    Status::Error,
                    out.ms,
                    format!(
                        "{missing} planned test(s) never reported (exit status {rc})\n{}",
                        raw_tail(&out.raw)
                    ),
                ));
            } else if tap.cases.is_empty() && rc == 4 {
                let why = out
                    .raw
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("exit 4");
                recs.push(mk(&u.name, Status::Skip, out.ms, why.to_string()));
            } else if tap.cases.is_empty() && rc != KILLED {
                recs.push(mk(
                    &u.name,
                    Status::Error,
                    out.ms,
                    format!(
                        "reported no tests (exit status {rc})\n{}",
                        raw_tail(&out.raw)
                    ),
                ));
            } else if rc != 0
                && rc != KILLED
                && !tap
                    .cases
                    .iter()
                    .any(|c| c.status == udp_repair_ktap::Status::Fail)
            {
                // libtest exits 101 and kselftests 1 on failures; any other
                // non-zero exit without a failing case is a crash.
                recs.push(mk(
                    &u.name,
                    Status::Error,
                    out.ms,
                    format!(
                        "exit status {rc} with no failing test\n{}",
                        raw_tail(&out.raw)
                    ),
                ));
            }
        }
    }
}

/// The report of a kept run directory: its `run.json` and the logs it
/// names, interpreted as when the run ended.
///
/// # Errors
/// A file that cannot be read, or a `run.json` of another layout, named.
pub fn parse_dir(dir: &Path) -> std::result::Result<Run, String> {
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (a test run's directory holds run.json beside console.log; \
             `udp-repair run` keeps none)",
            path.display()
        )
    })?;
    let rec: RunRecord =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if rec.units.is_empty() {
        return Err(format!("{}: the record plans no unit", path.display()));
    }
    if rec.version != RUN_RECORD_VERSION {
        return Err(format!(
            "{}: record version {}, this udp-repair reads {RUN_RECORD_VERSION}",
            path.display(),
            rec.version
        ));
    }
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read(&p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let console_text = read(&rec.boot.console)?;
    // A guest that died early may have written no results at all.
    let results_text = read(&rec.boot.results).unwrap_or_default();
    Ok(interpret(&rec, &console_text, &results_text, dir))
}

/// The report of a log alone (a results channel, or vng's merged output):
/// see [`record_from_log`].
///
/// # Errors
/// A log without labelled units, said so.
pub fn parse_log(text: &str) -> std::result::Result<Run, String> {
    let rec = record_from_log(text)?;
    Ok(interpret(&rec, text, text, Path::new("-")))
}

#[cfg(test)]
mod figure_tests {
    use super::figures;

    #[test]
    fn the_stress_figures_are_taken_from_their_markers_once_each() {
        let text = "\
test fuzz::random_calls ... # fuzz::random_calls: seed 0x5eed0d9cafe00001: 150479 calls in 20.00 s (7524/s); by call: Open 8727; errors by errno: EPERM 13073
# /x/tools/testing/selftests/net/udp_repair.c:1211:concurrent_dump:1001214 calls in 17.2 s (125032 read a datagram), 222569 sends; EPERM 753626, ENODATA 122556, EFAULT 0, EINVAL 0
#  RUN           global.concurrent_dump ...
ok 12 global.concurrent_dump
test fuzz::random_calls ... # fuzz::random_calls: seed 0x5eed0d9cafe00001: 150479 calls in 20.00 s (7524/s); by call: Open 8727; errors by errno: EPERM 13073
test fuzz::concurrent_calls ... # fuzz::concurrent_calls: seed 0x5eed0d9cafe00001: 168970 calls by 4 thread(s) in 3.03 s (55800/s), 0 of the new options (none); by call: Open 11820; errors by errno: none
";
        let f = figures(text);
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(
            f[2].starts_with("fuzz::concurrent_calls: seed 0x5eed0d9cafe00001: 168970 calls by 4")
        );
        assert!(f[0]
            .starts_with("fuzz::random_calls: seed 0x5eed0d9cafe00001: 150479 calls in 20.00 s"));
        assert!(f[1].starts_with("concurrent_dump:1001214 calls in 17.2 s"));
        assert!(figures("ok 1 global.concurrent_dump\n").is_empty());
    }
}
