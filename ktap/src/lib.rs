//! KTAP version 1 (the kernel's `Documentation/dev-tools/ktap.rst`, a
//! superset of TAP 13 that the kselftest harness prints): the project's one
//! writer and one parser of test reports. The guest binary writes its
//! results with [`write`], the harness prints its `--ktap` report with
//! [`header`], [`diagnostic`] and [`result`], and reads every guest
//! program's report (its own, the kselftests', the kernel's own selftests)
//! with [`parse`].
//!
//! What a result carries through a round trip (`parse(&write(cases))`):
//! its name, [`Status`], duration (`# duration_ms N` before it), and its
//! message: a failure's diagnostics (`# ` lines before it, the last
//! [`MAX_DIAGNOSTICS`]), a skip's reason (after `# SKIP`, one line).
//! Whitespace around a diagnostic line, a name or a reason is not kept.

use std::fmt::Write as _;

/// A result's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `ok`.
    Pass,
    /// `not ok`.
    Fail,
    /// `ok ... # SKIP reason`.
    Skip,
}

/// One result line, with what precedes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The description after the number (no `" # "`, no newline).
    pub name: String,
    /// Its outcome.
    pub status: Status,
    /// SKIP reason, or the diagnostics printed before a failure.
    pub message: String,
    /// `# duration_ms N`, if the producer gave one.
    pub duration_ms: Option<u64>,
}

/// A parsed document: the plan and the top-level results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    /// `1..N`, if present.
    pub plan: Option<usize>,
    /// Results, in order.
    pub cases: Vec<Case>,
}

/// How many diagnostic lines before a failure [`parse`] keeps as its
/// message (the last ones: an assertion's report ends a kselftest case).
pub const MAX_DIAGNOSTICS: usize = 40;

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("    ");
    }
}

/// Writes a (sub)test header at nesting `depth` (0 for the document):
/// `KTAP version 1` and the plan `1..plan`.
pub fn header(out: &mut String, depth: usize, plan: usize) {
    indent(out, depth);
    out.push_str("KTAP version 1\n");
    indent(out, depth);
    let _ = writeln!(out, "1..{plan}");
}

/// Writes `text` as diagnostic lines (`# ...`) at nesting `depth`.
pub fn diagnostic(out: &mut String, depth: usize, text: &str) {
    for line in text.lines() {
        indent(out, depth);
        let _ = writeln!(out, "# {line}");
    }
}

/// Writes result number `n` (from 1) at nesting `depth`: a failure's
/// message as diagnostics first, then its duration, then the result line
/// (a skip's reason on it, newlines turned into spaces).
pub fn result(out: &mut String, depth: usize, n: usize, case: &Case) {
    if case.status == Status::Fail {
        diagnostic(out, depth, &case.message);
    }
    if let Some(ms) = case.duration_ms {
        indent(out, depth);
        let _ = writeln!(out, "# duration_ms {ms}");
    }
    indent(out, depth);
    let name = case.name.replace('\n', " ");
    let _ = match case.status {
        Status::Pass => writeln!(out, "ok {n} {name}"),
        Status::Fail => writeln!(out, "not ok {n} {name}"),
        Status::Skip => writeln!(
            out,
            "ok {n} {name} # SKIP {}",
            case.message.replace('\n', " ")
        ),
    };
}

/// A whole flat document of `cases`.
pub fn write(cases: &[Case]) -> String {
    let mut out = String::new();
    header(&mut out, 0, cases.len());
    for (i, c) in cases.iter().enumerate() {
        result(&mut out, 0, i + 1, c);
    }
    out
}

/// Parses TAP 13 / KTAP 1 top-level results. Indented lines (nested
/// subtests) and other noise are skipped; `# ` lines before a result
/// become its message (a failure's; the last [`MAX_DIAGNOSTICS`]). A
/// truncated document parses as far as it goes: the caller compares the
/// cases with the plan. `# XFAIL` counts as a pass; `not ok ... # SKIP` as
/// a failure.
pub fn parse(text: &str) -> Document {
    let mut doc = Document::default();
    let mut diags: Vec<String> = Vec::new();
    let mut duration = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(plan) = line.strip_prefix("1..") {
            if let Ok(n) = plan.split_whitespace().next().unwrap_or("").parse() {
                doc.plan = Some(n);
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
                let keep = diags.len().saturating_sub(MAX_DIAGNOSTICS);
                (Status::Fail, diags[keep..].join("\n"))
            }
        };
        let status = if status == Status::Skip && !ok {
            Status::Fail
        } else {
            status
        };
        doc.cases.push(Case {
            name: name.to_string(),
            status,
            message,
            duration_ms: duration.take(),
        });
        diags.clear();
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kselftest_harness_output() {
        let text = "TAP version 13\n1..3\n# Starting 3 tests from 2 test cases.\n\
                    #  RUN           udp.v4.cork ...\n#            OK  udp.v4.cork\nok 1 udp.v4.cork\n\
                    #  RUN           udp.v4.peek ...\n# udp_repair.c:88:peek:Expected 3 (3) == n (2)\n\
                    # peek: Test failed\n#          FAIL  udp.v4.peek\nnot ok 2 udp.v4.peek\n\
                    ok 3 udp.v6.repair # SKIP UDP_REPAIR not supported\n# Totals: pass:1 fail:1\n";
        let t = parse(text);
        assert_eq!(t.plan, Some(3));
        assert_eq!(t.cases.len(), 3);
        assert_eq!(t.cases[0].status, Status::Pass);
        assert_eq!(t.cases[1].status, Status::Fail);
        assert!(t.cases[1].message.contains("Expected 3 (3) == n (2)"));
        assert_eq!(t.cases[2].status, Status::Skip);
        assert_eq!(t.cases[2].message, "UDP_REPAIR not supported");
    }

    #[test]
    fn writes_all_three_statuses() {
        let k = write(&[
            Case {
                name: "a::x".into(),
                status: Status::Pass,
                message: String::new(),
                duration_ms: Some(3),
            },
            Case {
                name: "a::y".into(),
                status: Status::Skip,
                message: "no UDP_REPAIR\nhere".into(),
                duration_ms: None,
            },
            Case {
                name: "a::z".into(),
                status: Status::Fail,
                message: "bad\nthing".into(),
                duration_ms: Some(0),
            },
        ]);
        assert_eq!(
            k,
            "KTAP version 1\n1..3\n# duration_ms 3\nok 1 a::x\n\
             ok 2 a::y # SKIP no UDP_REPAIR here\n\
             # bad\n# thing\n# duration_ms 0\nnot ok 3 a::z\n"
        );
    }

    #[test]
    fn nested_subtests_are_not_top_level_results() {
        let mut out = String::new();
        header(&mut out, 0, 1);
        header(&mut out, 1, 1);
        result(
            &mut out,
            1,
            1,
            &Case {
                name: "inner".into(),
                status: Status::Fail,
                message: "why".into(),
                duration_ms: None,
            },
        );
        result(
            &mut out,
            0,
            1,
            &Case {
                name: "outer".into(),
                status: Status::Fail,
                message: String::new(),
                duration_ms: None,
            },
        );
        let d = parse(&out);
        assert_eq!(d.plan, Some(1));
        assert_eq!(d.cases.len(), 1);
        assert_eq!(d.cases[0].name, "outer");
    }

    fn case() -> impl Strategy<Value = Case> {
        // Names and messages as producers write them: no newline in a
        // name or a skip reason, no "#" that would start a directive, and
        // message lines that are not themselves `duration_ms` lines.
        let name = "[a-z][a-z0-9_:.]{0,30}";
        // Trailing whitespace is not kept (documented below).
        let line = "[A-Za-z0-9]([A-Za-z0-9 ()=:.,_-]{0,40}[A-Za-z0-9)])?";
        (
            name,
            prop_oneof![Just(Status::Pass), Just(Status::Fail), Just(Status::Skip)],
            proptest::collection::vec(line, 0..=MAX_DIAGNOSTICS),
            proptest::option::of(0u64..1_000_000),
        )
            .prop_map(|(name, status, lines, duration_ms)| {
                let message = match status {
                    Status::Pass => String::new(),
                    Status::Skip => lines.first().cloned().unwrap_or_default(),
                    Status::Fail => lines.join("\n"),
                };
                Case {
                    name,
                    status,
                    message: message.trim_end().to_string(),
                    duration_ms,
                }
            })
    }

    proptest! {
        #[test]
        fn write_then_parse_round_trips(cases in proptest::collection::vec(case(), 0..12)) {
            let doc = parse(&write(&cases));
            prop_assert_eq!(doc.plan, Some(cases.len()));
            prop_assert_eq!(doc.cases, cases);
        }
    }
}
