//! Test records and their three renderings: a human table, KTAP, JSON.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use udp_repair_vm::console::Status;

/// One test's result.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Suite (`base`, `kselftest`, ...).
    pub suite: String,
    /// Test name within the suite.
    pub name: String,
    /// Kernel variant (`none`, `recvmsg`, `getsockopt`, `tree`).
    pub variant: String,
    /// `uname -r` of the kernel it ran on.
    pub kernel: String,
    /// PASS, FAIL, SKIP or ERROR.
    #[serde(serialize_with = "ser_status")]
    pub status: Status,
    /// Wall time, when known.
    pub duration_ms: Option<u64>,
    /// SKIP reason, failure diagnostics, or why it errored.
    pub message: String,
}

/// At most 15 lines of a failure's message: a long one keeps its first 4
/// (a Rust test's reason comes first) and its last 10 (a kselftest
/// assertion comes last), and says how many it left out.
fn excerpt(message: &str) -> Vec<String> {
    let lines: Vec<&str> = message.lines().collect();
    if lines.len() <= 15 {
        return lines.iter().map(|l| l.to_string()).collect();
    }
    let mut out: Vec<String> = lines[..4].iter().map(|l| l.to_string()).collect();
    out.push(format!(
        "... {} lines left out (the run's results.log has them all)",
        lines.len() - 14
    ));
    out.extend(lines[lines.len() - 10..].iter().map(|l| l.to_string()));
    out
}

fn ser_status<S: serde::Serializer>(s: &Status, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// One variant's run: its records and, if the infrastructure failed, why.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Kernel variant.
    pub variant: String,
    /// `uname -r`, if the kernel got built.
    pub kernel: String,
    /// Accelerator used.
    pub accel: String,
    /// Kernel build time (make), seconds.
    pub build_s: Option<f64>,
    /// From QEMU's start to its exit, seconds.
    pub boot_s: Option<f64>,
    /// From QEMU's start to the first test result, seconds.
    pub first_result_s: Option<f64>,
    /// The infrastructure failure, if any: build, boot, timeout, splat.
    pub infra_error: Option<String>,
    /// Where the logs are.
    pub logs: Option<String>,
    /// Kernel splat lines on the console (KASAN, lockdep, hung task, soft
    /// lockup, RCU stall, BUG, WARNING: [`udp_repair_vm::console::splats`]);
    /// `None` when no guest ran (the build failed).
    pub splats: Option<usize>,
    /// The stress figures the guest's programs printed (calls made,
    /// errors by errno, duration): [`crate::results::figures`].
    pub figures: Vec<String>,
    /// The results.
    pub tests: Vec<Record>,
}

/// Counts per status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// PASS.
    pub pass: usize,
    /// FAIL.
    pub fail: usize,
    /// SKIP.
    pub skip: usize,
    /// ERROR.
    pub error: usize,
}

impl Totals {
    /// Counts `records`.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a Record>) -> Self {
        let mut t = Totals::default();
        for r in records {
            match r.status {
                Status::Pass => t.pass += 1,
                Status::Fail => t.fail += 1,
                Status::Skip => t.skip += 1,
                Status::Error => t.error += 1,
            }
        }
        t
    }
}

/// The process exit status: 2 if any infrastructure failed, 1 if a test
/// failed or errored, else 0.
pub fn exit_code(runs: &[Run]) -> u8 {
    if runs.iter().any(|r| r.infra_error.is_some()) {
        2
    } else if runs
        .iter()
        .flat_map(|r| &r.tests)
        .any(|t| matches!(t.status, Status::Fail | Status::Error))
    {
        1
    } else {
        0
    }
}

/// The human summary: one table per run (or a matrix for several), the
/// failures with their messages, and the closing counts line.
pub fn human(runs: &[Run]) -> String {
    let mut out = String::new();
    if runs.len() > 1 {
        out.push_str(&matrix(runs));
    } else {
        for run in runs {
            let _ = writeln!(
                out,
                "variant {} (kernel {}, {}):",
                run.variant, run.kernel, run.accel
            );
            let w = run
                .tests
                .iter()
                .map(|t| t.suite.len() + t.name.len() + 2)
                .max()
                .unwrap_or(10)
                .min(70);
            for t in &run.tests {
                let name = format!("{}: {}", t.suite, t.name);
                let ms = t
                    .duration_ms
                    .map(|m| format!("{m:>6} ms"))
                    .unwrap_or_default();
                let why = if t.status == Status::Skip {
                    format!("  ({})", first_line(&t.message))
                } else {
                    String::new()
                };
                let _ = writeln!(out, "  {:<w$}  {:<5} {ms}{why}", name, t.status.as_str());
            }
        }
    }
    let bad: Vec<&Record> = runs
        .iter()
        .flat_map(|r| &r.tests)
        .filter(|t| matches!(t.status, Status::Fail | Status::Error))
        .collect();
    if !bad.is_empty() {
        out.push_str("\nfailures:\n");
        for t in bad {
            let _ = writeln!(
                out,
                "  [{}] {}: {} {}",
                t.variant,
                t.suite,
                t.name,
                t.status.as_str()
            );
            for l in excerpt(&t.message) {
                let _ = writeln!(out, "      {l}");
            }
        }
    }
    for run in runs {
        let t = Totals::of(&run.tests);
        let mut timing = Vec::new();
        if let Some(b) = run.build_s {
            timing.push(format!("build {b:.1}s"));
        }
        if let Some(b) = run.first_result_s {
            timing.push(format!("first result {b:.1}s"));
        }
        if let Some(b) = run.boot_s {
            timing.push(format!("guest {b:.1}s"));
        }
        let _ = writeln!(
            out,
            "\n{}: {} passed, {} failed, {} skipped, {} errors [{}]",
            run.variant,
            t.pass,
            t.fail,
            t.skip,
            t.error,
            timing.join(", ")
        );
        if let Some(n) = run.splats {
            let _ = writeln!(
                out,
                "{}: {n} kernel splat line(s) on the console",
                run.variant
            );
        }
        for f in &run.figures {
            let _ = writeln!(out, "{}: {f}", run.variant);
        }
        if let Some(e) = &run.infra_error {
            let _ = writeln!(out, "{}: INFRASTRUCTURE FAILURE: {e}", run.variant);
        }
        if let Some(l) = &run.logs {
            let _ = writeln!(out, "{}: logs in {l}", run.variant);
        }
    }
    let all = Totals::of(runs.iter().flat_map(|r| &r.tests));
    // The plain closing line CI tooling reads.
    let _ = writeln!(
        out,
        "\n{} passed, {} failed, {} skipped",
        all.pass,
        all.fail + all.error,
        all.skip
    );
    out
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Tests as rows, variants as columns.
fn matrix(runs: &[Run]) -> String {
    let mut rows: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        for t in &run.tests {
            let key = (t.suite.clone(), t.name.clone());
            let row = rows.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                vec!["-".to_string(); runs.len()]
            });
            row[i] = t.status.as_str().to_string();
        }
    }
    let w = order
        .iter()
        .map(|(s, n)| s.len() + n.len() + 2)
        .max()
        .unwrap_or(10)
        .min(70);
    let mut out = format!("  {:<w$}", "test");
    for r in runs {
        let _ = write!(out, "  {:<10}", r.variant);
    }
    out.push('\n');
    for key in &order {
        let _ = write!(out, "  {:<w$}", format!("{}: {}", key.0, key.1));
        for s in &rows[key] {
            let _ = write!(out, "  {s:<10}");
        }
        out.push('\n');
    }
    out
}

/// KTAP: one top-level test per variant, a nested one per suite, written
/// with the project's one KTAP writer (`udp_repair_ktap`). An ERROR is a
/// `not ok` whose diagnostics say so.
pub fn ktap(runs: &[Run]) -> String {
    use udp_repair_ktap::{self as ktap, Case};
    let case = |name: &str, ok: bool, message: String| Case {
        name: name.to_string(),
        status: if ok {
            ktap::Status::Pass
        } else {
            ktap::Status::Fail
        },
        message,
        duration_ms: None,
    };
    let mut out = String::new();
    ktap::header(&mut out, 0, runs.len());
    for (vi, run) in runs.iter().enumerate() {
        let mut suites: Vec<&str> = Vec::new();
        for t in &run.tests {
            if !suites.contains(&t.suite.as_str()) {
                suites.push(&t.suite);
            }
        }
        ktap::header(&mut out, 1, suites.len());
        ktap::diagnostic(&mut out, 1, &format!("kernel {}", run.kernel));
        for (si, suite) in suites.iter().enumerate() {
            let tests: Vec<&Record> = run.tests.iter().filter(|t| t.suite == *suite).collect();
            ktap::header(&mut out, 2, tests.len());
            for (ti, t) in tests.iter().enumerate() {
                let (status, message) = match t.status {
                    Status::Pass => (ktap::Status::Pass, String::new()),
                    Status::Skip => (ktap::Status::Skip, first_line(&t.message).to_string()),
                    Status::Fail => (ktap::Status::Fail, head(&t.message, 20)),
                    Status::Error => (
                        ktap::Status::Fail,
                        format!("ERROR: {}", head(&t.message, 19)),
                    ),
                };
                let c = Case {
                    name: t.name.clone(),
                    status,
                    message,
                    duration_ms: t.duration_ms,
                };
                ktap::result(&mut out, 2, ti + 1, &c);
            }
            let tot = Totals::of(tests.iter().copied());
            ktap::result(
                &mut out,
                1,
                si + 1,
                &case(suite, tot.fail + tot.error == 0, String::new()),
            );
        }
        let ok = run.infra_error.is_none()
            && run
                .tests
                .iter()
                .all(|t| !matches!(t.status, Status::Fail | Status::Error));
        let why = run
            .infra_error
            .as_deref()
            .map(|e| format!("infrastructure failure: {}", first_line(e)))
            .unwrap_or_default();
        ktap::result(&mut out, 0, vi + 1, &case(&run.variant, ok, why));
    }
    out
}

/// The first `n` lines of `s`.
fn head(s: &str, n: usize) -> String {
    s.lines().take(n).collect::<Vec<_>>().join("\n")
}

/// JSON: the runs with their infrastructure status, and a flat list with
/// one record per test.
pub fn json(runs: &[Run]) -> serde_json::Value {
    let tests: Vec<&Record> = runs.iter().flat_map(|r| &r.tests).collect();
    serde_json::json!({
        "exit_code": exit_code(runs),
        "runs": runs.iter().map(|r| {
            let t = Totals::of(&r.tests);
            serde_json::json!({
                "variant": r.variant, "kernel": r.kernel, "accel": r.accel,
                "build_s": r.build_s, "boot_s": r.boot_s, "first_result_s": r.first_result_s,
                "infra_error": r.infra_error, "logs": r.logs,
                "splats": r.splats, "figures": r.figures, "totals": {
                    "pass": t.pass, "fail": t.fail, "skip": t.skip, "error": t.error,
                }
            })
        }).collect::<Vec<_>>(),
        "tests": tests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_keeps_its_first_and_last_lines() {
        let short = "a\nb";
        assert_eq!(excerpt(short), ["a", "b"]);
        let long: Vec<String> = (0..22).map(|i| format!("line {i}")).collect();
        let e = excerpt(&long.join("\n"));
        assert_eq!(e.len(), 15);
        assert_eq!(e[0], "line 0");
        assert_eq!(e[3], "line 3");
        assert!(e[4].starts_with("... 8 lines left out"), "{}", e[4]);
        assert_eq!(e[5], "line 12");
        assert_eq!(e[14], "line 21");
    }

    fn rec(variant: &str, name: &str, status: Status) -> Record {
        Record {
            suite: "base".into(),
            name: name.into(),
            variant: variant.into(),
            kernel: "6.12.117".into(),
            status,
            duration_ms: Some(3),
            message: "because\nmore".into(),
        }
    }

    fn run(variant: &str, tests: Vec<Record>) -> Run {
        Run {
            variant: variant.into(),
            kernel: "6.12.117".into(),
            accel: "tcg".into(),
            build_s: None,
            boot_s: None,
            first_result_s: None,
            infra_error: None,
            logs: None,
            splats: None,
            figures: Vec::new(),
            tests,
        }
    }

    #[test]
    fn exit_codes() {
        let ok = run(
            "none",
            vec![
                rec("none", "a", Status::Pass),
                rec("none", "b", Status::Skip),
            ],
        );
        assert_eq!(exit_code(std::slice::from_ref(&ok)), 0);
        let failed = run("none", vec![rec("none", "a", Status::Fail)]);
        assert_eq!(exit_code(&[ok.clone(), failed]), 1);
        let mut infra = ok.clone();
        infra.infra_error = Some("panic".into());
        assert_eq!(exit_code(&[ok, infra]), 2);
    }

    #[test]
    fn ktap_nests_variants_and_suites() {
        let r = run(
            "none",
            vec![
                rec("none", "a", Status::Pass),
                rec("none", "b", Status::Skip),
                rec("none", "c", Status::Fail),
            ],
        );
        let k = ktap(&[r]);
        assert!(k.contains("        ok 2 b # SKIP because\n"), "{k}");
        assert!(
            k.contains(
                "        # because\n        # more\n        # duration_ms 3\n        not ok 3 c\n"
            ),
            "{k}"
        );
        assert!(k.contains("    not ok 1 base\nnot ok 1 none\n"), "{k}");
        let parsed = udp_repair_ktap::parse(&k);
        assert_eq!(parsed.plan, Some(1));
        assert_eq!(parsed.cases[0].status, udp_repair_ktap::Status::Fail);
    }

    #[test]
    fn human_has_matrix_and_closing_line() {
        let a = run("none", vec![rec("none", "a", Status::Skip)]);
        let b = run("recvmsg", vec![rec("recvmsg", "a", Status::Pass)]);
        let h = human(&[a, b]);
        assert!(
            h.contains("base: a") && h.contains("SKIP") && h.contains("PASS"),
            "{h}"
        );
        assert!(
            h.trim_end().ends_with("1 passed, 0 failed, 1 skipped"),
            "{h}"
        );
        let j = json(&[run("none", vec![rec("none", "a", Status::Pass)])]);
        assert_eq!(j["tests"][0]["status"], "PASS");
        assert_eq!(j["tests"][0]["variant"], "none");
    }
}
