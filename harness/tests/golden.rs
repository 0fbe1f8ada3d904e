//! `udp-repair parse` on the golden logs of `tests/golden/`: each run
//! directory must give exactly the records of its hand-written
//! `expected.json` (see `tests/golden/README.md`), with no boot.

use std::path::{Path, PathBuf};
use udp_repair::report::{self, Run};
use udp_repair::results;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn expected(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let text = text.replace("{dir}", &dir.display().to_string());
    serde_json::from_str(&text).unwrap()
}

/// Compares `run` with `want` field by field, naming the first difference.
fn check(case: &str, run: &Run, want: &serde_json::Value) {
    assert_eq!(
        serde_json::json!(report::exit_code(std::slice::from_ref(run))),
        want["exit_code"],
        "{case}: exit code"
    );
    assert_eq!(
        serde_json::json!(run.infra_error),
        want["infra_error"],
        "{case}: infrastructure error"
    );
    let tests = want["tests"].as_array().unwrap();
    assert_eq!(run.tests.len(), tests.len(), "{case}: number of records");
    for (i, (got, w)) in run.tests.iter().zip(tests).enumerate() {
        let got_v = serde_json::json!({
            "suite": got.suite,
            "name": got.name,
            "status": got.status.as_str(),
            "duration_ms": got.duration_ms,
            "message": got.message,
        });
        for field in ["suite", "name", "status", "duration_ms", "message"] {
            assert_eq!(
                got_v[field], w[field],
                "{case}: record {i} ({}): {field}",
                got.name
            );
        }
        assert_eq!(got.variant, "getsockopt", "{case}: record {i}: variant");
        assert_eq!(got.kernel, "6.12.117+", "{case}: record {i}: kernel");
    }
}

#[test]
fn every_golden_run_directory_parses_to_its_expected_records() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(golden()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let case = dir.file_name().unwrap().to_string_lossy().into_owned();
        let run = results::parse_dir(&dir).unwrap_or_else(|e| panic!("{case}: {e}"));
        check(&case, &run, &expected(&dir));
        seen.push(case);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "failing-test",
            "panic-mid-test",
            "pass",
            "splat",
            "timeout",
            "vng"
        ]
    );
}

/// A log alone (stdin): the units come from their labels; the unit the
/// host decided (a kselftest missing from the tree) is not in the log.
#[test]
fn a_vng_log_alone_gives_the_guest_records() {
    let dir = golden().join("vng");
    let text = std::fs::read_to_string(dir.join("console.log")).unwrap();
    let run = results::parse_log(&text).unwrap();
    let mut want = expected(&dir);
    let tests = want["tests"].as_array_mut().unwrap();
    tests.retain(|t| t["name"] != "udp_repair");
    assert_eq!(run.kernel, "6.12.117+");
    assert_eq!(run.infra_error, None);
    assert_eq!(run.tests.len(), tests.len());
    for (got, w) in run.tests.iter().zip(tests.iter()) {
        assert_eq!(got.name, w["name"].as_str().unwrap());
        assert_eq!(got.status.as_str(), w["status"].as_str().unwrap());
        assert_eq!(got.message, w["message"].as_str().unwrap());
    }
}

#[test]
fn a_log_without_labels_is_refused_with_the_reason() {
    let e = results::parse_log("@@udp-repair unit-begin 0\nhello\n").unwrap_err();
    assert!(e.contains("no label"), "{e}");
    let e = results::parse_log("just a console\n").unwrap_err();
    assert!(e.contains("unit-begin"), "{e}");
}

#[test]
fn the_cli_parses_a_run_directory() {
    let dir = golden().join("failing-test");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_udp-repair"))
        .arg("parse")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("3 failed"), "{stdout}");
}
