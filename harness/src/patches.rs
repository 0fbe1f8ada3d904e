//! `udp-repair patches`: the review checks a series must pass before it is
//! sent: every patch applies in order to the pinned base, and
//! `checkpatch.pl` with netdev CI's flags reports nothing.

use crate::pipeline::Options;
use std::path::{Path, PathBuf};
use udp_repair_vm::{base, tree, Cache, Error, Result};

/// The flags netdev's CI runs checkpatch with, plus UNKNOWN_COMMIT_ID:
/// the base here is Debian's source imported into a one-commit repository,
/// so checkpatch cannot look up the upstream commit a `Fixes:` tag names
/// (netdev's CI, on a real tree, does).
pub const CHECKPATCH_FLAGS: &[&str] = &[
    "--strict",
    "--codespell",
    "--max-line-length=80",
    "--ignore=COMMIT_LOG_LONG_LINE,MACRO_ARG_REUSE,ALLOC_SIZEOF_STRUCT,NO_AUTHOR_SIGN_OFF,\
     GIT_COMMIT_ID,CAMELCASE,FILE_PATH_CHANGES,BAD_REPORTED_BY_LINK,UNKNOWN_COMMIT_ID",
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

/// Checks every series of `req.variants`: it applies (in its worktree),
/// and each patch passes checkpatch. Prints a table; returns whether all
/// is clean.
pub fn check(opts: &Options, cache: &Cache, req: &CheckRequest<'_>) -> Result<bool> {
    let variants = req.variants;
    let patches_dir = opts.root.join("kernel-patches");
    let pin = base::Pin::load(&patches_dir, &opts.base)?;
    base::ensure_packages(&pin, &opts.events)?;
    let git = base::ensure_base_repo(&pin, cache, &opts.events)?;
    let mut all_clean = true;
    for v in variants.iter().filter(|v| *v != "none") {
        let series = tree::Series::load(&patches_dir, v, &pin.name)?;
        for part in &series.parts {
            let cover = part.join("0000-cover-letter.patch");
            if !cover.exists() {
                println!("{v}: no cover letter ({})", cover.display());
                all_clean = false;
            }
        }
        match tree::prepare(cache, &pin, &git, &series) {
            Ok(_) => println!(
                "{v}: {} patch(es) apply in order to base {} ({})",
                series.patches.len(),
                pin.name,
                pin.id()
            ),
            Err(e) => {
                println!("{v}: {e}");
                all_clean = false;
            }
        }
        for p in &series.patches {
            let verdict = checkpatch(&git, p)?;
            // SERIES/BASE/NNNN-*.patch: which series of the stack it is.
            let name = p
                .strip_prefix(&patches_dir)
                .unwrap_or(p)
                .display()
                .to_string();
            println!(
                "  {:<80} {} errors, {} warnings, {} checks",
                name, verdict.errors, verdict.warnings, verdict.checks
            );
            if !verdict.clean() {
                all_clean = false;
                for l in verdict.report.lines() {
                    println!("      {l}");
                }
            }
        }
    }
    Ok(all_clean)
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
}
