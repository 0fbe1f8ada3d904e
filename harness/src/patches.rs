//! `udp-repair patches check`: the review checks a series must pass before
//! it is sent, each with its own verdict, as netdev's CI (NIPA) runs them
//! where this machine can:
//!
//! - per series (`SERIES/BASE/`): the cover letter names its base and the
//!   series has at most 15 patches; the series applies in order with
//!   `git am` to its base alone; per patch: `checkpatch.pl --strict` with
//!   netdev's flags, a `Signed-off-by:`, a netdev subject, well-formed
//!   `Fixes:` tags naming commits of the tree's history (where it has one);
//! - per variant (the series stacked, on the variant's worktree): the
//!   stack applies; a `W=1` build of the objects the series touches
//!   reports no warning the base does not also report (per patch with
//!   `--each`); `kernel-doc -none -Wall` reports nothing new on the changed
//!   C files and headers; the changed uapi headers compile alone as C and
//!   as C++; each new selftest is in its `Makefile` and `.gitignore`, in
//!   the format the base uses.
//!
//! What NIPA does and this does not is printed with every report
//! ([`NOT_DONE`]).

use crate::pipeline::{self, Options};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use udp_repair_vm::{base, build, tree, Cache, Error, Result};

/// The flags netdev's CI runs checkpatch with, plus UNKNOWN_COMMIT_ID:
/// the base here is Debian's source imported into a one-commit repository,
/// so checkpatch cannot look up the upstream commit a `Fixes:` tag names
/// (netdev's CI, on a real tree, does; the `fixes` check here does where
/// the tree has history).
pub const CHECKPATCH_FLAGS: &[&str] = &[
    "--strict",
    "--codespell",
    "--max-line-length=80",
    "--ignore=COMMIT_LOG_LONG_LINE,MACRO_ARG_REUSE,ALLOC_SIZEOF_STRUCT,NO_AUTHOR_SIGN_OFF,\
     GIT_COMMIT_ID,CAMELCASE,FILE_PATH_CHANGES,BAD_REPORTED_BY_LINK,UNKNOWN_COMMIT_ID",
];

/// What netdev's CI checks and `patches check` does not: a pass here is
/// not a NIPA pass.
pub const NOT_DONE: &str = "not done here, as netdev's CI (NIPA) does: allmodconfig \
     and allyesconfig builds, 32-bit (i386) and clang/LLVM builds, sparse and smatch, \
     the build of every patch under those configs, the full kselftest and kunit runs \
     on many machines, and its maintainer/CC and tree-selection checks; W=1 here builds \
     only the touched objects under the project's minimal config";

/// Most patches netdev takes in one series (Documentation/process/
/// maintainer-netdev.rst: "do not post large series (> 15 patches)").
pub const MAX_PATCHES: usize = 15;

/// Subject prefixes (the words before the last `: `) a series' patches
/// may carry: the netdev subsystems of the files these series touch.
pub const SUBJECT_PREFIXES: &[&str] = &[
    "udp",
    "udp6",
    "ipv4",
    "ipv6",
    "inet",
    "net",
    "af_unix",
    "selftests: net",
    "selftests: net: af_unix",
    "selftests: af_unix",
];

/// One patch's checkpatch verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The patch file.
    pub patch: PathBuf,
    /// `total: E errors, W warnings, C checks`.
    pub errors: u32,
    /// Warnings.
    pub warnings: u32,
    /// Checks (--strict).
    pub checks: u32,
    /// checkpatch's report lines when not clean.
    pub report: String,
}

impl Verdict {
    /// Nothing reported.
    pub fn clean(&self) -> bool {
        self.errors == 0 && self.warnings == 0 && self.checks == 0
    }
}

/// Parses checkpatch's `total: 0 errors, 1 warnings, 2 checks, 40 lines
/// checked` line.
pub fn parse_total(output: &str) -> Option<(u32, u32, u32)> {
    let line = output.lines().find(|l| l.starts_with("total: "))?;
    let (mut errors, mut warnings, mut checks) = (None, None, Some(0));
    for part in line.trim_start_matches("total: ").split(", ") {
        let mut words = part.split_whitespace();
        let n: Option<u32> = words.next().and_then(|w| w.parse().ok());
        match words.next() {
            Some("errors") => errors = n,
            Some("warnings") => warnings = n,
            Some("checks") => checks = n,
            _ => {}
        }
    }
    Some((errors?, warnings?, checks?))
}

/// Runs checkpatch on `patch` from the base tree.
pub fn checkpatch(base_git: &Path, patch: &Path) -> Result<Verdict> {
    let mut cmd = std::process::Command::new("perl");
    cmd.current_dir(base_git)
        .arg("scripts/checkpatch.pl")
        .args(CHECKPATCH_FLAGS);
    if Path::new(base::CODESPELL_DICT).exists() {
        cmd.arg(format!("--codespellfile={}", base::CODESPELL_DICT));
    }
    let out = cmd
        .arg(patch)
        .output()
        .map_err(|e| Error::Setup(format!("running checkpatch.pl: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (errors, warnings, checks) = parse_total(&text).ok_or_else(|| {
        Error::Setup(format!(
            "checkpatch.pl gave no totals for {}:\n{}{}",
            patch.display(),
            text,
            String::from_utf8_lossy(&out.stderr)
        ))
    })?;
    let report = text
        .lines()
        .filter(|l| {
            l.starts_with("ERROR:")
                || l.starts_with("WARNING:")
                || l.starts_with("CHECK:")
                || l.starts_with('#')
        })
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Verdict {
        patch: patch.to_path_buf(),
        errors,
        warnings,
        checks,
        report,
    })
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Checked and clean.
    Pass,
    /// Checked and found wanting.
    Fail,
    /// Could not be checked here; the detail says why.
    Skip,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One check's verdict on a series, a variant or one patch.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `series SERIES/BASE` or `variant V on BASE`.
    pub subject: String,
    /// The patch file's name, for per-patch checks.
    pub patch: Option<String>,
    /// The check's name (`applies`, `checkpatch`, `w1-build`, ...).
    pub check: &'static str,
    /// Its verdict.
    pub status: Status,
    /// One line on what was checked and found.
    pub summary: String,
    /// The first lines of the tool's output, when there is something to
    /// show (at most [`DETAIL_LINES`]).
    pub detail: Vec<String>,
}

/// How many lines of a tool's output an outcome keeps.
pub const DETAIL_LINES: usize = 25;

fn first_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .take(DETAIL_LINES)
        .map(String::from)
        .collect()
}

/// What `patches check` is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct CheckRequest<'a> {
    /// The variants whose series are checked (`none` has none).
    pub variants: &'a [String],
    /// Build each patch in turn rather than the series as a whole.
    pub each: bool,
    /// Where to write the verdicts as JSON.
    pub json: Option<&'a Path>,
}

/// Collects outcomes and prints each as it comes.
struct Report {
    outcomes: Vec<Outcome>,
}

impl Report {
    fn heading(&self, what: &str) {
        println!("{what}");
    }

    /// A check that could not run, with the reason.
    fn skip(&mut self, subject: &str, check: &'static str, why: String) {
        self.add(subject, None, check, Status::Skip, why, Vec::new());
    }

    fn add(
        &mut self,
        subject: &str,
        patch: Option<&str>,
        check: &'static str,
        status: Status,
        summary: String,
        detail: Vec<String>,
    ) {
        let name = patch
            .map(|p| format!("{check} {p}"))
            .unwrap_or(check.into());
        println!("  {} {:<28} {}", status.word(), name, summary);
        if status != Status::Pass {
            for l in &detail {
                println!("        {l}");
            }
        }
        self.outcomes.push(Outcome {
            subject: subject.to_string(),
            patch: patch.map(String::from),
            check,
            status,
            summary,
            detail,
        });
    }
}

/// Checks every series of `req.variants` (each series once, however many
/// variants stack it), then each variant's stack on its worktree. Prints
/// one line per check; returns whether none failed. Errors: the base or
/// a tool is missing, a build directory cannot be made.
pub fn check(opts: &Options, cache: &Cache, req: &CheckRequest<'_>) -> Result<bool> {
    let patches_dir = opts.root.join("kernel-patches");
    let pin = base::Pin::load(&patches_dir, &opts.base)?;
    base::ensure_packages(&pin, &opts.events)?;
    // The tree the series go on: the pinned base, or the user's.
    let git = match &opts.kernel_tree {
        Some(path) => path
            .canonicalize()
            .map_err(|e| Error::Io(format!("kernel tree {}", path.display()), e))?,
        None => base::ensure_base_repo(&pin, cache, &opts.events)?,
    };
    let target = Target {
        cache,
        pin: &pin,
        git: &git,
        user: opts.kernel_tree.as_deref(),
    };
    let mut report = Report {
        outcomes: Vec::new(),
    };
    let history = tree_history(&git);
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut stacks: Vec<tree::Series> = Vec::new();
    for v in req.variants.iter().filter(|v| *v != "none") {
        let series = tree::Series::load(&patches_dir, v, &pin.name)?;
        for part in &series.parts {
            if seen.contains(part) {
                continue;
            }
            seen.push(part.clone());
            check_series(&mut report, &target, &patches_dir, part, history.as_deref())?;
        }
        stacks.push(series);
    }
    if !stacks.is_empty() {
        let baseline = Baseline::new(opts, cache, &stacks)?;
        for series in &stacks {
            check_variant(&mut report, opts, &target, &baseline, series, req.each)?;
        }
    }
    let failed = report
        .outcomes
        .iter()
        .filter(|o| o.status == Status::Fail)
        .count();
    let skipped = report
        .outcomes
        .iter()
        .filter(|o| o.status == Status::Skip)
        .count();
    println!(
        "patches check: {} checks, {} failed, {} skipped, on base {} ({})",
        report.outcomes.len(),
        failed,
        skipped,
        pin.name,
        pin.id()
    );
    println!("{NOT_DONE}");
    if let Some(path) = req.json {
        let doc = serde_json::json!({
            "base": pin.name,
            "base_version": pin.id(),
            "each": req.each,
            "not_done": NOT_DONE,
            "outcomes": report.outcomes,
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        std::fs::write(path, text)
            .map_err(|e| Error::Io(format!("writing {}", path.display()), e))?;
    }
    Ok(failed == 0)
}

/// Where the series are applied: the pinned base's repository, or a
/// clone of the user's tree (`--kernel-tree`).
struct Target<'a> {
    cache: &'a Cache,
    pin: &'a base::Pin,
    /// The base repository, or the user's tree.
    git: &'a Path,
    user: Option<&'a Path>,
}

impl Target<'_> {
    fn apply(&self, series: &tree::Series) -> Result<tree::Tree> {
        match self.user {
            Some(path) => tree::user_tree_with_series(self.cache, path, series),
            None => tree::prepare(self.cache, self.pin, self.git, series),
        }
    }

    /// `base 7.1 (7.1.5)` or `v7.1-rc2-10-gabc (your tree)`.
    fn name(&self) -> String {
        match self.user {
            Some(p) => format!(
                "{} ({})",
                tree::describe(p).unwrap_or_else(|| "tree".into()),
                p.display()
            ),
            None => format!("base {} ({})", self.pin.name, self.pin.id()),
        }
    }
}

/// The tree's history for `Fixes:` lookups: `git` itself when it has more
/// than the one commit of a tarball import, else `None`.
fn tree_history(git: &Path) -> Option<PathBuf> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(git)
        .args(["rev-list", "--count", "--max-count=2", "HEAD"])
        .output()
        .ok()?;
    let n: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    // A shallow clone's history stops short: a commit missing from it
    // may still exist.
    let shallow = std::process::Command::new("git")
        .arg("-C")
        .arg(git)
        .args(["rev-parse", "--is-shallow-repository"])
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true");
    (n > 1 && !shallow).then(|| git.to_path_buf())
}

/// The per-series checks of `dir` (`SERIES/BASE`).
fn check_series(
    report: &mut Report,
    target: &Target<'_>,
    patches_dir: &Path,
    dir: &Path,
    history: Option<&Path>,
) -> Result<()> {
    let rel = dir
        .strip_prefix(patches_dir)
        .unwrap_or(dir)
        .display()
        .to_string();
    let subject = format!("series {rel}");
    let patches =
        tree::patch_files(dir).map_err(|e| Error::Io(format!("reading {}", dir.display()), e))?;
    report.heading(&format!("{subject} ({} patches)", patches.len()));

    // The cover letter: present, naming its base; the series' size.
    let cover = dir.join("0000-cover-letter.patch");
    match std::fs::read_to_string(&cover) {
        Err(e) => report.add(
            &subject,
            None,
            "cover-letter",
            Status::Fail,
            format!("no cover letter: {}: {e}", cover.display()),
            Vec::new(),
        ),
        Ok(text) => {
            let (status, summary) = cover_verdict(&text, target.pin, patches.len());
            report.add(&subject, None, "cover-letter", status, summary, Vec::new());
        }
    }

    // Applies alone, in order, to the base (a scratch worktree).
    let alone = tree::Series {
        name: "_check".into(),
        parts: vec![dir.to_path_buf()],
        patches: patches.clone(),
    };
    match target.apply(&alone) {
        Ok(_) => report.add(
            &subject,
            None,
            "applies",
            Status::Pass,
            format!(
                "{} patches apply in order with git am to {} alone",
                patches.len(),
                target.name()
            ),
            Vec::new(),
        ),
        Err(Error::Patch { patch, detail }) => report.add(
            &subject,
            None,
            "applies",
            Status::Fail,
            format!("{} does not apply to {}", file_name(&patch), target.name()),
            first_lines(&detail),
        ),
        Err(e) => return Err(e),
    }

    for p in &patches {
        let name = file_name(p);
        let verdict = checkpatch(target.git, p)?;
        report.add(
            &subject,
            Some(&name),
            "checkpatch",
            if verdict.clean() {
                Status::Pass
            } else {
                Status::Fail
            },
            format!(
                "{} errors, {} warnings, {} checks",
                verdict.errors, verdict.warnings, verdict.checks
            ),
            first_lines(&verdict.report),
        );
        let text = std::fs::read_to_string(p)
            .map_err(|e| Error::Io(format!("reading {}", p.display()), e))?;
        let mail = Mail::parse(&text);
        let (status, summary) = signoff_verdict(&mail);
        report.add(
            &subject,
            Some(&name),
            "signed-off-by",
            status,
            summary,
            Vec::new(),
        );
        let (status, summary) = subject_verdict(&mail.subject);
        report.add(
            &subject,
            Some(&name),
            "subject",
            status,
            summary,
            Vec::new(),
        );
        for (status, summary) in fixes_verdicts(&mail.message, history) {
            report.add(&subject, Some(&name), "fixes", status, summary, Vec::new());
        }
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A `git format-patch` mail: its subject and its commit message (the
/// body up to the first `---` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The `Subject:` header, continuation lines joined.
    pub subject: String,
    /// The commit message: the body before the first `---` line.
    pub message: String,
}

impl Mail {
    /// Parses the headers up to the first empty line, then the body.
    pub fn parse(text: &str) -> Self {
        let mut subject = String::new();
        let mut lines = text.lines();
        let mut in_subject = false;
        for l in lines.by_ref() {
            if l.is_empty() {
                break;
            }
            if let Some(s) = l.strip_prefix("Subject: ") {
                subject = s.trim().to_string();
                in_subject = true;
            } else if in_subject && l.starts_with([' ', '\t']) {
                subject.push(' ');
                subject.push_str(l.trim());
            } else {
                in_subject = false;
            }
        }
        let message = lines
            .take_while(|l| *l != "---")
            .collect::<Vec<_>>()
            .join("\n");
        Self { subject, message }
    }
}

/// The cover letter's verdict: it names its base (a `base-commit:`
/// trailer, or the base's version where the base is no git tree), and
/// the series has at most [`MAX_PATCHES`] patches.
pub fn cover_verdict(text: &str, pin: &base::Pin, patches: usize) -> (Status, String) {
    let upstream = pin.version.split(['-', '~']).next().unwrap_or(&pin.version);
    let names_base =
        text.lines().any(|l| l.starts_with("base-commit: ")) || text.contains(upstream);
    let mut problems = Vec::new();
    if !names_base {
        problems.push(format!(
            "names no base: no `base-commit:` trailer and no mention of {upstream}"
        ));
    }
    if patches > MAX_PATCHES {
        problems.push(format!(
            "{patches} patches: netdev takes at most {MAX_PATCHES} in one series"
        ));
    }
    if patches == 0 {
        problems.push("no patches".into());
    }
    if problems.is_empty() {
        (
            Status::Pass,
            format!("names its base ({upstream}); {patches} patches (at most {MAX_PATCHES})"),
        )
    } else {
        (Status::Fail, problems.join("; "))
    }
}

/// A `Signed-off-by:` line with a name and an address in the commit
/// message.
pub fn signoff_verdict(mail: &Mail) -> (Status, String) {
    let sob = mail.message.lines().find(|l| {
        l.strip_prefix("Signed-off-by: ")
            .is_some_and(|who| who.contains('<') && who.trim_end().ends_with('>'))
    });
    match sob {
        Some(l) => (Status::Pass, l.trim().to_string()),
        None => (
            Status::Fail,
            "no `Signed-off-by: Name <address>` in the commit message \
             (Documentation/process/submitting-patches.rst: the DCO)"
                .into(),
        ),
    }
}

/// The subject after its `[PATCH ...]` tag: a netdev subsystem prefix of
/// [`SUBJECT_PREFIXES`] (the longest that fits), optionally one more
/// component naming a file or test (`selftests: net: udpgro: ...`), then
/// a summary with no trailing period.
pub fn subject_verdict(subject: &str) -> (Status, String) {
    let rest = match subject.strip_prefix('[').and_then(|s| s.split_once(']')) {
        Some((_tag, rest)) => rest.trim(),
        None => subject.trim(),
    };
    // A revert carries the reverted commit's subject.
    let rest = rest
        .strip_prefix("Revert \"")
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(rest);
    let prefix = SUBJECT_PREFIXES
        .iter()
        .filter(|p| rest.starts_with(&format!("{p}: ")))
        .max_by_key(|p| p.len());
    let Some(prefix) = prefix else {
        let got = rest.split_once(": ").map_or("", |(p, _)| p);
        return (
            Status::Fail,
            format!(
                "{rest:?}: prefix {got:?} is not in this project's list of netdev prefixes \
                 for the files its series touch ({}; patches::SUBJECT_PREFIXES)",
                SUBJECT_PREFIXES.join(", ")
            ),
        );
    };
    let mut summary = &rest[prefix.len() + 2..];
    // One more component: a file or test name (no spaces).
    if let Some((component, after)) = summary.split_once(": ") {
        if !component.is_empty()
            && component
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b))
        {
            summary = after;
        }
    }
    if summary.trim().is_empty() || summary.ends_with('.') {
        return (
            Status::Fail,
            format!("summary {summary:?} is empty or ends with a period"),
        );
    }
    (Status::Pass, rest.to_string())
}

/// One verdict per `Fixes:` tag of `message`: the form netdev wants
/// (`Fixes: <12+ hex digits> ("subject")`), and where `history` is a git
/// tree with history, that the commit exists there and has that subject.
/// Without history each well-formed tag is [`Status::Skip`], saying why.
/// A message without tags gives no verdict.
pub fn fixes_verdicts(message: &str, history: Option<&Path>) -> Vec<(Status, String)> {
    let mut out = Vec::new();
    for line in message.lines() {
        let Some(rest) = line.strip_prefix("Fixes:") else {
            continue;
        };
        let rest = rest.trim();
        let (id, title) = match rest.split_once(' ') {
            Some((id, title)) => (id, title.trim()),
            None => (rest, ""),
        };
        let title = title
            .strip_prefix("(\"")
            .and_then(|t| t.strip_suffix("\")"));
        let hex_ok = id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
        let Some(title) = title.filter(|_| hex_ok) else {
            out.push((
                Status::Fail,
                format!("{line:?} is not `Fixes: <at least 12 hex digits> (\"subject\")`"),
            ));
            continue;
        };
        let Some(git) = history else {
            out.push((
                Status::Skip,
                format!(
                    "{id} cannot be looked up: the tree has no full git history (a \
                     tarball import, or a shallow clone; use --kernel-tree with a full git tree)"
                ),
            ));
            continue;
        };
        let found = std::process::Command::new("git")
            .arg("-C")
            .arg(git)
            .args(["log", "-1", "--format=%s"])
            .arg(format!("{id}^{{commit}}"))
            .arg("--")
            .output();
        match found {
            Ok(o) if o.status.success() => {
                let real = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if real == title {
                    out.push((Status::Pass, format!("{id} (\"{title}\") is in the tree")));
                } else {
                    out.push((
                        Status::Fail,
                        format!("{id} is in the tree, but its subject is {real:?}, not {title:?}"),
                    ));
                }
            }
            _ => out.push((
                Status::Fail,
                format!("{id} (\"{title}\") is not a commit of {}", git.display()),
            )),
        }
    }
    out
}

/// The base's kernel (variant `none`, as `test` builds it) and its `W=1`
/// diagnostics for every object any of the variants touches, made once
/// for all variants.
struct Baseline {
    kernel: pipeline::Kernel,
    w1: BTreeMap<String, usize>,
}

impl Baseline {
    fn new(opts: &Options, cache: &Cache, stacks: &[tree::Series]) -> Result<Self> {
        let kernel = pipeline::kernel(opts, cache, "none")?;
        let mut changed = Vec::new();
        for s in stacks {
            for p in &s.patches {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Error::Io(format!("reading {}", p.display()), e))?;
                changed.extend(patch_files_changed(&text));
            }
        }
        changed.sort();
        changed.dedup();
        let objects: Vec<String> = touched_objects(&changed)
            .into_iter()
            .filter(|o| kernel.built.dir.join(o).exists())
            .collect();
        let w1 = if objects.is_empty() {
            BTreeMap::new()
        } else {
            let out = build::make_targets(
                cache,
                &kernel.tree,
                &kernel.built.dir,
                &["W=1"],
                &objects,
                &opts.events,
            )?;
            if !out.ok {
                return Err(Error::Setup(format!(
                    "the base's W=1 build of {} failed:\n{}",
                    objects.join(" "),
                    first_lines(&out.output).join("\n")
                )));
            }
            diagnostics(&out.output)
        };
        Ok(Self { kernel, w1 })
    }
}

/// The files a `git format-patch` patch changes (`diff --git a/X b/Y`:
/// Y).
pub fn patch_files_changed(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("diff --git a/"))
        .filter_map(|l| l.split_once(" b/").map(|(_, b)| b.to_string()))
        .collect()
}

/// The per-variant checks: the stack applies (the variant's worktree), a
/// `W=1` build of the touched objects, kernel-doc, the uapi headers and
/// the selftests' Makefile entries.
fn check_variant(
    report: &mut Report,
    opts: &Options,
    target: &Target<'_>,
    baseline: &Baseline,
    series: &tree::Series,
    each: bool,
) -> Result<()> {
    let (cache, pin) = (target.cache, target.pin);
    let stack: Vec<String> = series
        .parts
        .iter()
        .filter_map(|p| p.parent().and_then(|s| s.file_name()))
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let subject = match target.user {
        Some(_) => format!("variant {} on {}", series.name, target.name()),
        None => format!("variant {} on {}", series.name, pin.name),
    };
    report.heading(&format!("{subject} ({})", stack.join(" + ")));
    let vtree = match target.apply(series) {
        Ok(t) => t,
        Err(Error::Patch { patch, detail }) => {
            report.add(
                &subject,
                None,
                "applies",
                Status::Fail,
                format!("{} does not apply on the stack", file_name(&patch)),
                first_lines(&detail),
            );
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    report.add(
        &subject,
        None,
        "applies",
        Status::Pass,
        format!(
            "{} patches of {} apply in order to {}",
            series.patches.len(),
            stack.join(" + "),
            target.name()
        ),
        Vec::new(),
    );
    let changed = git_lines(
        &vtree.src,
        &["diff", "--name-only", "refs/tags/base", "HEAD"],
    )?;
    let added = git_lines(
        &vtree.src,
        &[
            "diff",
            "--name-only",
            "--diff-filter=A",
            "refs/tags/base",
            "HEAD",
        ],
    )?;

    // The trees built as `test` builds them: the base's and the variant's.
    let kbase = &baseline.kernel;
    let kvar = pipeline::kernel(opts, cache, &series.name)?;
    w1_check(
        report,
        &subject,
        opts,
        cache,
        &baseline.w1,
        &kvar,
        series,
        &changed,
        each,
    )?;
    kerneldoc_check(report, &subject, &kbase.tree.src, &vtree.src, &changed)?;
    uapi_check(report, &subject, &kvar.built.headers, &changed)?;
    selftests_check(report, &subject, &kbase.tree.src, &vtree.src, &added)?;
    Ok(())
}

/// `git ARGS` in `dir`, its output lines.
fn git_lines(dir: &Path, args: &[&str]) -> Result<Vec<String>> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| Error::Setup(format!("running git: {e}")))?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "git {} in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect())
}

/// The kernel objects built from the changed C files (`net/ipv4/udp.c` →
/// `net/ipv4/udp.o`), tools, scripts and documentation left out.
pub fn touched_objects(changed: &[String]) -> Vec<String> {
    changed
        .iter()
        .filter(|f| f.ends_with(".c"))
        .filter(|f| {
            !["tools/", "scripts/", "Documentation/", "samples/", "usr/"]
                .iter()
                .any(|d| f.starts_with(d))
        })
        .map(|f| format!("{}.o", &f[..f.len() - 2]))
        .collect()
}

/// Compiler diagnostics of a make run, the line and column taken out so
/// that a warning that moved is the same warning: `file: warning: text
/// [-Wflag]`, counted.
pub fn diagnostics(output: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in output.lines() {
        let Some(pos) = line.find(": warning: ").or_else(|| line.find(": error: ")) else {
            continue;
        };
        let (loc, what) = line.split_at(pos);
        let file = loc
            .split(':')
            .next()
            .unwrap_or(loc)
            .trim_start_matches("./")
            .trim_start_matches("../");
        *out.entry(format!("{file}{what}")).or_insert(0) += 1;
    }
    out
}

/// Entries of `now` beyond their count in `before`.
fn new_entries(before: &BTreeMap<String, usize>, now: &BTreeMap<String, usize>) -> Vec<String> {
    now.iter()
        .filter(|(k, n)| before.get(*k).copied().unwrap_or(0) < **n)
        .map(|(k, _)| k.clone())
        .collect()
}

/// `W=1` on the objects the stack touches, on the base and then on the
/// variant (the whole stack, or each patch in turn with `each`): no
/// warning the base does not also produce, and no error.
#[allow(clippy::too_many_arguments)]
fn w1_check(
    report: &mut Report,
    subject: &str,
    opts: &Options,
    cache: &Cache,
    before: &BTreeMap<String, usize>,
    kvar: &pipeline::Kernel,
    series: &tree::Series,
    changed: &[String],
    each: bool,
) -> Result<()> {
    let objects = touched_objects(changed);
    let in_config: Vec<String> = objects
        .iter()
        .filter(|o| kvar.built.dir.join(o).exists())
        .cloned()
        .collect();
    let outside: Vec<&String> = objects.iter().filter(|o| !in_config.contains(o)).collect();
    if in_config.is_empty() {
        report.skip(
            subject,
            "w1-build",
            format!("no touched object is built in this config ({objects:?})"),
        );
        return Ok(());
    }
    let note = if outside.is_empty() {
        String::new()
    } else {
        format!(
            "; not in this config: {}",
            outside
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let verdict = |report: &mut Report, patch: Option<&str>, out: &build::TargetsOutput| {
        let now = diagnostics(&out.output);
        // A warning in a file the series does not change, first seen
        // because a new object includes it, is the base's (the baseline
        // builds only objects the base has): shown, not counted.
        let (new, elsewhere): (Vec<String>, Vec<String>) = new_entries(before, &now)
            .into_iter()
            .partition(|w| changed.iter().any(|f| w.starts_with(&format!("{f}:"))));
        let note = if elsewhere.is_empty() {
            note.clone()
        } else {
            format!(
                "{note}; {} in files the series does not change, not counted: {}",
                elsewhere.len(),
                elsewhere.join(" | ")
            )
        };
        let (status, summary, detail) = if !out.ok {
            let errors: Vec<String> = out
                .output
                .lines()
                .filter(|l| l.contains("error") || l.contains("***"))
                .map(String::from)
                .collect();
            (
                Status::Fail,
                format!("W=1 build of {} failed", in_config.join(" ")),
                errors.into_iter().take(DETAIL_LINES).collect(),
            )
        } else if new.is_empty() {
            (
                Status::Pass,
                format!(
                    "W=1 {}: no new warning (the base has {}){note}",
                    in_config.join(" "),
                    before.values().sum::<usize>()
                ),
                Vec::new(),
            )
        } else {
            (
                Status::Fail,
                format!("W=1: {} warning(s) the base does not have", new.len()),
                new.into_iter().take(DETAIL_LINES).collect(),
            )
        };
        report.add(subject, patch, "w1-build", status, summary, detail);
    };
    if !each {
        let out = build::make_targets(
            cache,
            &kvar.tree,
            &kvar.built.dir,
            &["W=1"],
            &in_config,
            &opts.events,
        )?;
        verdict(report, None, &out);
        return Ok(());
    }
    // Each patch in turn: the worktree's commits are the series' patches
    // (git am), checked out one after another, then the tip again.
    let commits = git_lines(
        &kvar.tree.src,
        &["rev-list", "--reverse", "refs/tags/base..HEAD"],
    )?;
    if commits.len() != series.patches.len() {
        return Err(Error::Setup(format!(
            "{}: {} commits over the base, but the series has {} patches",
            kvar.tree.src.display(),
            commits.len(),
            series.patches.len()
        )));
    }
    let tip = commits.last().cloned().unwrap_or_default();
    let _restore = Checkout::new(&kvar.tree.src, &tip, series);
    for (commit, patch) in commits.iter().zip(&series.patches) {
        git_lines(&kvar.tree.src, &["checkout", "-q", "--detach", commit])?;
        let present: Vec<String> = in_config
            .iter()
            .filter(|o| {
                kvar.tree
                    .src
                    .join(format!("{}.c", &o[..o.len() - 2]))
                    .exists()
            })
            .cloned()
            .collect();
        let out = build::make_targets(
            cache,
            &kvar.tree,
            &kvar.built.dir,
            &["W=1"],
            &present,
            &opts.events,
        )?;
        verdict(report, Some(&file_name(patch)), &out);
    }
    Ok(())
}

/// Puts a variant's worktree back at its tip when dropped, and keeps the
/// series stamp away meanwhile, so an interrupted `--each` run makes the
/// next `prepare` apply the series again instead of trusting a tree left
/// at an intermediate patch.
struct Checkout {
    src: PathBuf,
    tip: String,
    stamp: PathBuf,
    saved: Option<String>,
}

impl Checkout {
    fn new(src: &Path, tip: &str, series: &tree::Series) -> Self {
        let stamp = src
            .parent()
            .map(|p| p.join(format!("{}.series", series.name)))
            .unwrap_or_default();
        let saved = std::fs::read_to_string(&stamp).ok();
        let _ = std::fs::remove_file(&stamp);
        Self {
            src: src.to_path_buf(),
            tip: tip.to_string(),
            stamp,
            saved,
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let back = git_lines(&self.src, &["checkout", "-q", "--detach", &self.tip]);
        if back.is_ok() {
            if let Some(s) = &self.saved {
                let _ = std::fs::write(&self.stamp, s);
            }
        }
    }
}

/// `scripts/kernel-doc -none -Wall` on each changed C file and header
/// (outside tools/), in the variant's tree and, where the file exists
/// there, in the base's: no warning the base does not also have.
fn kerneldoc_check(
    report: &mut Report,
    subject: &str,
    base_src: &Path,
    var_src: &Path,
    changed: &[String],
) -> Result<()> {
    let files: Vec<&String> = changed
        .iter()
        .filter(|f| f.ends_with(".c") || f.ends_with(".h"))
        .filter(|f| !f.starts_with("tools/"))
        .filter(|f| var_src.join(f).exists())
        .collect();
    if files.is_empty() {
        report.skip(
            subject,
            "kernel-doc",
            "no C file or header changed outside tools/".into(),
        );
        return Ok(());
    }
    let run = |src: &Path, f: &str| -> Result<BTreeMap<String, usize>> {
        let out = std::process::Command::new(src.join("scripts/kernel-doc"))
            .current_dir(src)
            .args(["-none", "-Wall", f])
            .output()
            .map_err(|e| Error::Setup(format!("running scripts/kernel-doc: {e}")))?;
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        if !out.status.success() && !text.contains("warning") {
            return Err(Error::Setup(format!(
                "scripts/kernel-doc -none -Wall {f} failed in {}: {}",
                src.display(),
                text.trim()
            )));
        }
        let mut m = BTreeMap::new();
        for l in text
            .lines()
            .filter(|l| l.contains("warning:") || l.contains("error:"))
        {
            // `file:123: warning: text`: the line number taken out.
            let key = match l
                .split_once(": warning:")
                .or_else(|| l.split_once(": error:"))
            {
                Some((loc, what)) => {
                    format!("{}:{what}", loc.split(':').next().unwrap_or(loc))
                }
                None => l.to_string(),
            };
            *m.entry(key).or_insert(0) += 1;
        }
        Ok(m)
    };
    let mut new = Vec::new();
    for f in &files {
        let before = if base_src.join(f).exists() {
            run(base_src, f)?
        } else {
            BTreeMap::new()
        };
        new.extend(new_entries(&before, &run(var_src, f)?));
    }
    let names = files
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if new.is_empty() {
        report.add(
            subject,
            None,
            "kernel-doc",
            Status::Pass,
            format!("-none -Wall {names}: no new warning"),
            Vec::new(),
        );
    } else {
        report.add(
            subject,
            None,
            "kernel-doc",
            Status::Fail,
            format!("{} warning(s) the base does not have", new.len()),
            new.into_iter().take(DETAIL_LINES).collect(),
        );
    }
    Ok(())
}

/// Each changed uapi header (`include/uapi/linux/udp.h`), as
/// `headers_install` left it in `headers`, included alone by a C and by
/// a C++ translation unit (`gcc -fsyntax-only`, `g++ -fsyntax-only`).
fn uapi_check(
    report: &mut Report,
    subject: &str,
    headers: &Path,
    changed: &[String],
) -> Result<()> {
    let uapi: Vec<String> = changed
        .iter()
        .filter_map(|f| {
            f.strip_prefix("include/uapi/")
                .or_else(|| f.strip_prefix("arch/x86/include/uapi/"))
        })
        .filter(|f| f.ends_with(".h"))
        .map(String::from)
        .collect();
    if uapi.is_empty() {
        report.skip(subject, "uapi-headers", "no uapi header changed".into());
        return Ok(());
    }
    let mut failures = Vec::new();
    for h in &uapi {
        if !headers.join(h).exists() {
            failures.push(format!(
                "{h}: not in {} (headers_install)",
                headers.display()
            ));
            continue;
        }
        for (compiler, lang) in [("gcc", "c"), ("g++", "c++")] {
            let mut child = std::process::Command::new(compiler)
                .args(["-fsyntax-only", "-Wall", "-x", lang, "-I"])
                .arg(headers)
                .arg("-")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| {
                    Error::Setup(format!(
                        "running {compiler}: {e} (the C++ check needs g++: apt-get install g++)"
                    ))
                })?;
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write;
                let _ = writeln!(stdin, "#include <{h}>");
            }
            let out = child
                .wait_with_output()
                .map_err(|e| Error::Setup(format!("running {compiler}: {e}")))?;
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() || err.contains("warning:") {
                failures.push(format!("{h} as {lang}:"));
                failures.extend(err.lines().take(8).map(String::from));
            }
        }
    }
    if failures.is_empty() {
        report.add(
            subject,
            None,
            "uapi-headers",
            Status::Pass,
            format!("{} compile alone as C and as C++", uapi.join(" ")),
            Vec::new(),
        );
    } else {
        report.add(
            subject,
            None,
            "uapi-headers",
            Status::Fail,
            "a uapi header does not compile alone".into(),
            failures.into_iter().take(DETAIL_LINES).collect(),
        );
    }
    Ok(())
}

/// Each selftest the stack adds (`tools/testing/selftests/DIR/NAME.c`, or
/// an executable script) is named in `DIR/Makefile` and, for a compiled
/// program, in `DIR/.gitignore` where the directory has one; where the
/// base lists those one entry per line in sorted order, the new entry
/// keeps it so.
fn selftests_check(
    report: &mut Report,
    subject: &str,
    base_src: &Path,
    var_src: &Path,
    added: &[String],
) -> Result<()> {
    let tests: Vec<&String> = added
        .iter()
        .filter(|f| f.starts_with("tools/testing/selftests/"))
        // BPF objects are built by wildcard, not listed.
        .filter(|f| (f.ends_with(".c") && !f.ends_with(".bpf.c")) || is_script(f))
        .collect();
    if tests.is_empty() {
        report.skip(subject, "selftests", "no selftest added".into());
        return Ok(());
    }
    let mut problems = Vec::new();
    let mut fine = Vec::new();
    for t in &tests {
        let path = Path::new(t.as_str());
        let dir = path.parent().unwrap_or(Path::new(""));
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let script = is_script(t);
        let entry = if script {
            file_name(path)
        } else {
            stem.clone()
        };
        let read = |root: &Path, f: &str| std::fs::read_to_string(root.join(dir).join(f)).ok();
        let Some(makefile) = read(var_src, "Makefile") else {
            problems.push(format!("{}: no Makefile", dir.display()));
            continue;
        };
        let base_makefile = read(base_src, "Makefile").unwrap_or_default();
        match makefile_verdict(&base_makefile, &makefile, &entry) {
            Ok(()) => fine.push(format!("{}/Makefile: {entry}", dir.display())),
            Err(why) => problems.push(format!("{}/Makefile: {why}", dir.display())),
        }
        // The nearest .gitignore at or above the test's directory in the
        // patched tree, within the selftests (6.12 lists af_unix's
        // programs in net/'s; a new directory may bring its own).
        let ignore_dir = dir
            .ancestors()
            .take_while(|d| d.starts_with("tools/testing/selftests"))
            .find(|d| var_src.join(d).join(".gitignore").exists());
        if let (false, Some(idir)) = (script, ignore_dir) {
            let at = |root: &Path| std::fs::read_to_string(root.join(idir).join(".gitignore")).ok();
            let base_ignore = at(base_src).unwrap_or_default();
            let ignore = at(var_src).unwrap_or_default();
            // The test's path below the .gitignore's directory.
            let rel = dir.strip_prefix(idir).unwrap_or(Path::new("")).join(&entry);
            match gitignore_verdict(&base_ignore, &ignore, &rel.to_string_lossy()) {
                Ok(()) => fine.push(format!("{}/.gitignore: {entry}", idir.display())),
                Err(why) => problems.push(format!("{}/.gitignore: {why}", idir.display())),
            }
        }
    }
    if problems.is_empty() {
        report.add(
            subject,
            None,
            "selftests",
            Status::Pass,
            fine.join("; "),
            Vec::new(),
        );
    } else {
        report.add(
            subject,
            None,
            "selftests",
            Status::Fail,
            format!("{} problem(s) with the new tests' entries", problems.len()),
            problems,
        );
    }
    Ok(())
}

/// A selftest that runs as it is (listed with its suffix in
/// `TEST_PROGS`): a shell or Python script.
fn is_script(f: &str) -> bool {
    f.ends_with(".sh") || f.ends_with(".py")
}

/// `entry` is a word of a `TEST_GEN_PROGS`/`TEST_PROGS`/`TEST_GEN_FILES`
/// list of `makefile`; when `base` lists its entries one per line
/// (`TEST_GEN_PROGS += name`, or one name per continuation line) in
/// sorted order, the new line is in its sorted place.
pub fn makefile_verdict(
    base: &str,
    makefile: &str,
    entry: &str,
) -> std::result::Result<(), String> {
    // The lists kselftest builds or runs (TEST_FILES are only copied).
    let lists = [
        "TEST_GEN_PROGS_EXTENDED",
        "TEST_GEN_PROGS",
        "TEST_PROGS_EXTENDED",
        "TEST_PROGS",
        "TEST_GEN_FILES",
        "YNL_GEN_PROGS",
    ];
    let found = logical_lines(makefile)
        .iter()
        .any(|l| list_words(l, &lists).is_some_and(|(_, words)| words.iter().any(|w| w == entry)));
    if !found {
        return Err(format!(
            "{entry} is in no TEST_GEN_PROGS/TEST_PROGS list: the test would not be built or run"
        ));
    }
    // Where the base keeps a list one name per line in sorted order (a
    // `VAR := \` block, or `VAR += name` lines), the new name must be in
    // its place.
    for var in lists {
        let old = sorted_names(base, var);
        let new = sorted_names(makefile, var);
        for (block_old, block_new) in old.iter().zip(&new) {
            if !block_new.iter().any(|n| n == entry) || block_old.len() < 3 {
                continue;
            }
            let sorted = |v: &[String]| v.windows(2).all(|w| w[0] <= w[1]);
            if sorted(block_old) && !sorted(block_new) {
                return Err(format!(
                    "the base lists {var} one name per line in sorted order; {entry} is out of place"
                ));
            }
        }
    }
    Ok(())
}

/// Makefile lines with their continuations joined.
fn logical_lines(makefile: &str) -> Vec<String> {
    let mut logical = Vec::new();
    let mut cur = String::new();
    for line in makefile.lines() {
        match line.trim_end().strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(line);
                logical.push(std::mem::take(&mut cur));
            }
        }
    }
    logical.push(cur);
    logical
}

/// `VAR := words`, `VAR += words` or `VAR = words` for a VAR of `lists`:
/// the variable and the words.
fn list_words<'a>(line: &'a str, lists: &[&'a str]) -> Option<(&'a str, Vec<String>)> {
    let l = line.trim_start();
    lists.iter().find_map(|var| {
        let rest = l.strip_prefix(var)?.trim_start();
        let rest = ["+=", ":=", "="]
            .iter()
            .find_map(|op| rest.strip_prefix(op))?;
        Some((*var, rest.split_whitespace().map(String::from).collect()))
    })
}

/// The one-name-per-line lists of `var` in `makefile`: each `VAR := \`
/// block whose continuation lines hold one name each, and the run of
/// single-name `VAR += name` lines (as one block), in order.
fn sorted_names(makefile: &str, var: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let lines: Vec<&str> = makefile.lines().collect();
    let mut singles = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if let Some((_, words)) = list_words(l, &[var]) {
            if l.trim_end().ends_with('\\') && words.iter().all(|w| w == "\\") {
                let mut block = Vec::new();
                i += 1;
                while i < lines.len() {
                    let t = lines[i].trim();
                    let name = t.trim_end_matches('\\').trim();
                    if !name.is_empty() && !name.contains(' ') {
                        block.push(name.to_string());
                    }
                    if !t.ends_with('\\') {
                        break;
                    }
                    i += 1;
                }
                blocks.push(block);
            } else if words.len() == 1 && l.contains("+=") {
                singles.push(words[0].clone());
            }
        }
        i += 1;
    }
    if !singles.is_empty() {
        blocks.push(singles);
    }
    blocks
}

/// `entry` (the test's path below the `.gitignore`'s directory) is
/// ignored by a line of `.gitignore`: its name alone, or its path
/// (`sub/name`, `/sub/name`); `/name` covers only a test beside the
/// file. Where the base's is sorted, it stays sorted.
pub fn gitignore_verdict(base: &str, ignore: &str, entry: &str) -> std::result::Result<(), String> {
    let lines: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // `entry` is the test's path below the .gitignore's directory
    // (`so_peek_off`, or `af_unix/so_peek_off` in net/'s): a pattern
    // without a slash matches the name at any depth; one with a slash
    // matches that path from the .gitignore's directory.
    let name = entry.rsplit('/').next().unwrap_or(entry);
    if !lines
        .iter()
        .any(|l| *l == name || l.trim_start_matches('/') == entry)
    {
        return Err(format!(
            "{entry} is not listed: the built binary shows in git status"
        ));
    }
    let old: Vec<&str> = base
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let key = |l: &&str| l.trim_start_matches('/').to_string();
    let sorted = |v: &[&str]| v.windows(2).all(|w| key(&w[0]) <= key(&w[1]));
    if old.len() >= 3 && sorted(&old) && !sorted(&lines) {
        return Err(format!(
            "the base's list is sorted; {entry} is out of place"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_parse() {
        let out = "WARNING: x\n\ntotal: 0 errors, 1 warnings, 2 checks, 40 lines checked\n";
        assert_eq!(parse_total(out), Some((0, 1, 2)));
        assert_eq!(
            parse_total("total: 3 errors, 0 warnings, 10 lines checked"),
            Some((3, 0, 0))
        );
        assert_eq!(parse_total("nothing"), None);
    }

    const PATCH: &str = "From 0 Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\n\
        Subject: [PATCH net-next 1/3] udp: add UDP_REPAIR\n socket option\n\n\
        Body.\n\nSigned-off-by: A <a@b>\n---\n net/ipv4/udp.c | 1 +\n";

    #[test]
    fn mails_split_into_subject_and_message() {
        let m = Mail::parse(PATCH);
        assert_eq!(
            m.subject,
            "[PATCH net-next 1/3] udp: add UDP_REPAIR socket option"
        );
        assert_eq!(m.message, "Body.\n\nSigned-off-by: A <a@b>");
        assert_eq!(signoff_verdict(&m).0, Status::Pass);
        let unsigned = Mail::parse(&PATCH.replace("Signed-off-by: A <a@b>\n", ""));
        assert_eq!(signoff_verdict(&unsigned).0, Status::Fail);
        // A sign-off below `---` is no sign-off.
        let below = PATCH.replace(
            "Signed-off-by: A <a@b>\n---\n",
            "---\nSigned-off-by: A <a@b>\n",
        );
        assert_eq!(signoff_verdict(&Mail::parse(&below)).0, Status::Fail);
    }

    #[test]
    fn subjects_need_a_netdev_prefix() {
        for ok in [
            "[PATCH net-next 1/3] udp: add UDP_REPAIR socket option",
            "[RFC PATCH net-next v2 3/3] selftests: net: add udp_repair test",
            "[PATCH net 2/4] af_unix: let a new SO_PEEK_OFF walk return zero-length",
            "[PATCH net 4/4] selftests: af_unix: test SO_PEEK_OFF walks",
            "[PATCH net 3/4] selftests: net: sk_so_peek_off: test zero-length walks",
            "[PATCH net] Revert \"udp: add UDP_REPAIR socket option\"",
        ] {
            assert_eq!(subject_verdict(ok).0, Status::Pass, "{ok}");
        }
        for bad in [
            "[PATCH] add UDP_REPAIR",
            "[PATCH] tcp: add UDP_REPAIR",
            "[PATCH] udp: add UDP_REPAIR.",
            "[PATCH] udp: x: .",
            "[PATCH] udpx: add",
        ] {
            assert_eq!(subject_verdict(bad).0, Status::Fail, "{bad}");
        }
    }

    fn pin(version: &str) -> base::Pin {
        base::Pin {
            name: "x".into(),
            package: None,
            version: version.into(),
            tarball: PathBuf::from("/t"),
            sha256: "0".repeat(64),
        }
    }

    #[test]
    fn cover_letters_name_their_base_and_size() {
        let p = pin("6.12.117-1~deb12u1");
        assert_eq!(cover_verdict("applies to 6.12.117", &p, 3).0, Status::Pass);
        assert_eq!(cover_verdict("base-commit: abc\n", &p, 3).0, Status::Pass);
        let (s, why) = cover_verdict("no base", &p, 3);
        assert!(s == Status::Fail && why.contains("6.12.117"), "{why}");
        let (s, why) = cover_verdict("6.12.117", &p, 16);
        assert!(s == Status::Fail && why.contains("at most 15"), "{why}");
    }

    #[test]
    fn diagnostics_ignore_line_numbers() {
        let a = diagnostics("../net/ipv4/udp.c:10:5: warning: unused [-Wunused]\n  CC x\n");
        let b = diagnostics(
            "../net/ipv4/udp.c:12:5: warning: unused [-Wunused]\n\
             ../net/ipv4/udp.c:40:1: warning: no previous prototype [-Wmissing-prototypes]\n",
        );
        assert_eq!(
            new_entries(&a, &b),
            ["net/ipv4/udp.c: warning: no previous prototype [-Wmissing-prototypes]"]
        );
        assert!(new_entries(&b, &a).is_empty());
    }

    #[test]
    fn patches_name_the_files_they_change() {
        let text = "Subject: x\n\n---\n\ndiff --git a/net/ipv4/udp.c b/net/ipv4/udp.c\n\
            index 1..2\n--- a/net/ipv4/udp.c\n+++ b/net/ipv4/udp.c\n\
            diff --git a/tools/x/old.c b/tools/x/new.c\n";
        assert_eq!(
            patch_files_changed(text),
            ["net/ipv4/udp.c", "tools/x/new.c"]
        );
    }

    #[test]
    fn touched_objects_are_kernel_c_files() {
        let changed = [
            "net/ipv4/udp.c",
            "include/uapi/linux/udp.h",
            "tools/testing/selftests/net/udp_repair.c",
        ]
        .map(String::from);
        assert_eq!(touched_objects(&changed), ["net/ipv4/udp.o"]);
    }

    #[test]
    fn makefile_and_gitignore_entries() {
        let base = "TEST_GEN_PROGS += a\nTEST_GEN_PROGS += c\nTEST_GEN_PROGS += d\n";
        let good =
            "TEST_GEN_PROGS += a\nTEST_GEN_PROGS += b\nTEST_GEN_PROGS += c\nTEST_GEN_PROGS += d\n";
        assert_eq!(makefile_verdict(base, good, "b"), Ok(()));
        let unsorted =
            "TEST_GEN_PROGS += a\nTEST_GEN_PROGS += c\nTEST_GEN_PROGS += d\nTEST_GEN_PROGS += b\n";
        assert!(makefile_verdict(base, unsorted, "b")
            .unwrap_err()
            .contains("sorted"));
        assert!(makefile_verdict(base, base, "b")
            .unwrap_err()
            .contains("no TEST_GEN_PROGS"));
        // 6.12's style: continuation lines, several names each.
        let old = "TEST_GEN_FILES := a b \\\n\tc d\nTEST_PROGS := x.sh\n";
        let new = "TEST_GEN_FILES := a b \\\n\tc d e\nTEST_PROGS := x.sh\n";
        assert_eq!(makefile_verdict(old, new, "e"), Ok(()));
        assert!(makefile_verdict(old, old, "e").is_err());
        // A name in another variable is not a test entry.
        assert!(makefile_verdict("", "CFLAGS += e\n", "e").is_err());

        // 7.1's style: one name per continuation line, sorted.
        let block = "TEST_GEN_PROGS := \\\n\ta \\\n\tc \\\n\td \\\n\nTEST_PROGS := x.sh\n";
        let good = block.replace("\tc \\\n", "\tb \\\n\tc \\\n");
        assert_eq!(makefile_verdict(block, &good, "b"), Ok(()));
        let bad = block.replace("\td \\\n", "\td \\\n\tb \\\n");
        assert!(makefile_verdict(block, &bad, "b")
            .unwrap_err()
            .contains("out of place"));
        assert_eq!(
            makefile_verdict("", "TEST_GEN_PROGS_EXTENDED := helper\n", "helper"),
            Ok(())
        );
        assert!(makefile_verdict("", "TEST_FILES := x\n", "x").is_err());

        // Paths below the .gitignore's directory.
        assert_eq!(
            gitignore_verdict("", "/so_peek_off\n", "so_peek_off"),
            Ok(())
        );
        assert!(gitignore_verdict("", "/foo\n", "sub/foo").is_err());
        assert_eq!(gitignore_verdict("", "foo\n", "sub/foo"), Ok(()));
        assert_eq!(gitignore_verdict("", "sub/foo\n", "sub/foo"), Ok(()));
        assert!(gitignore_verdict("", "other/foo\n", "sub/foo").is_err());

        let ig = "a\nc\nd\n";
        assert_eq!(gitignore_verdict(ig, "a\nb\nc\nd\n", "b"), Ok(()));
        assert!(gitignore_verdict(ig, "a\nc\nd\nb\n", "b")
            .unwrap_err()
            .contains("sorted"));
        assert!(gitignore_verdict(ig, ig, "b")
            .unwrap_err()
            .contains("not listed"));
    }

    /// A `Fixes:` tag is looked up in a tree with history: a synthetic
    /// repository of two commits.
    #[test]
    fn fixes_tags_are_looked_up_where_there_is_history() {
        let dir = std::env::temp_dir().join(format!("udp-repair-fixes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(&dir)
                .args([
                    "-c",
                    "user.name=T",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "commit.gpgsign=false",
                ])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{:?}", out);
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        git(&["init", "-q"]);
        git(&["commit", "-q", "--allow-empty", "-m", "udp: first"]);
        git(&["commit", "-q", "--allow-empty", "-m", "udp: second"]);
        let id = git(&["rev-parse", "HEAD~1"]);
        assert_eq!(tree_history(&dir).as_deref(), Some(dir.as_path()));
        let short = &id[..12];
        let msg = |t: &str| format!("Body.\n\nFixes: {t}\nSigned-off-by: A <a@b>");
        let v = fixes_verdicts(&msg(&format!("{short} (\"udp: first\")")), Some(&dir));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, Status::Pass, "{v:?}");
        let v = fixes_verdicts(&msg(&format!("{short} (\"udp: other\")")), Some(&dir));
        assert!(
            v[0].0 == Status::Fail && v[0].1.contains("udp: first"),
            "{v:?}"
        );
        let v = fixes_verdicts(&msg("0123456789ab (\"udp: none\")"), Some(&dir));
        assert!(
            v[0].0 == Status::Fail && v[0].1.contains("not a commit"),
            "{v:?}"
        );
        let v = fixes_verdicts(&msg("0123 (\"udp: short\")"), Some(&dir));
        assert!(v[0].0 == Status::Fail && v[0].1.contains("12 hex"), "{v:?}");
        let v = fixes_verdicts(&msg(&format!("{short} (\"udp: first\")")), None);
        assert!(
            v[0].0 == Status::Skip && v[0].1.contains("no full git"),
            "{v:?}"
        );
        assert!(fixes_verdicts("no tags", Some(&dir)).is_empty());
        // A one-commit repository (a tarball import) has no history.
        let one = dir.join("one");
        std::fs::create_dir_all(&one).unwrap();
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg("git init -q && git -c user.name=T -c user.email=t@t commit -q --allow-empty -m base")
            .current_dir(&one)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(tree_history(&one), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
