//! `udp-repair patches edit | refresh | export`: a series as git commits
//! and back, and as a numbered mbox series for the list.
//!
//! - [`edit`] makes branch `edit/VARIANT` of the cached base repository,
//!   in a worktree of its own: for each series the variant stacks, an
//!   empty commit holding the series' cover letter (subject, body, then a
//!   `Series: NAME` trailer: b4's convention of a cover-letter commit),
//!   then the series' patches applied with `git am`.
//! - [`refresh`] turns that branch back into `kernel-patches/SERIES/BASE/`,
//!   split at the cover commits, with `git format-patch` and the options
//!   that reproduce the files (`--abbrev=9`, the placeholder identity, the
//!   subject prefix of the series' existing cover letter).
//! - [`export`] writes each series as `git format-patch` output for a
//!   posting: `[PATCH TREE vN M/T]`, the sender's identity in place of the
//!   placeholder, `To:`/`Cc:` from `scripts/get_maintainer.pl`.
//!
//! The text handling (cover letters, subject prefixes, the placeholder,
//! notes under `---`) is pure and unit-tested; git does the rest. Every git
//! command that writes files or commits runs with the user's and the
//! system's git configuration ignored, so that `format.*` or `diff.*`
//! settings cannot change the files.

use std::path::{Path, PathBuf};
use udp_repair_vm::base::Pin;
use udp_repair_vm::{tree, Error, Result};
use xshell::{cmd, Cmd, Shell};

/// The project's marked placeholder identity: the author and the
/// `Signed-off-by:` of every patch file. The person who sends a series
/// replaces it with their own ([`export`] does, from `git config`).
pub const PLACEHOLDER: &str = "UDP Repair Project <udp-repair@example.org>";

/// The trailer that marks a cover-letter commit and names its series:
/// `Series: peek-zerolen`.
pub const SERIES_TRAILER: &str = "Series";

/// The hash abbreviation of the `index` lines of the patch files: what git
/// picks for a packed kernel-sized repository, given explicitly so that the
/// output does not depend on whether the base repository is packed (a
/// fresh import, all loose objects, would give 7).
pub const ABBREV: &str = "--abbrev=9";

/// The committer of the commits `edit` makes (as the variant worktrees'
/// `git am` in vm/src/tree.rs): never in a patch file.
const COMMITTER: (&str, &str, &str) =
    ("udp-repair", "udp-repair@localhost", "2000-01-01T00:00:00Z");

/// The placeholders `git format-patch --cover-letter` writes.
const SUBJECT_HERE: &str = "*** SUBJECT HERE ***";
const BLURB_HERE: &str = "*** BLURB HERE ***";

// ---------------------------------------------------------------------
// Text: subjects, cover letters, identities, notes.
// ---------------------------------------------------------------------

/// The bracketed tag of a patch subject, `[RFC PATCH net-next v2 1/3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// The words before the numbers, `RFC PATCH net-next v2`.
    pub prefix: String,
    /// The patch's number, 0 for a cover letter.
    pub number: u32,
    /// The number of patches of the series.
    pub total: u32,
}

impl Tag {
    /// Whether the prefix says RFC.
    pub fn rfc(&self) -> bool {
        self.prefix.split_whitespace().any(|w| w == "RFC")
    }

    /// The netdev tree the prefix names (`net`, `net-next`), if any.
    pub fn tree(&self) -> Option<&str> {
        self.prefix
            .split_whitespace()
            .find(|w| *w == "net" || *w == "net-next")
    }
}

/// Splits `[PREFIX M/T] rest` into its tag and the rest; `None` when the
/// subject has no such tag.
pub fn parse_subject(subject: &str) -> Option<(Tag, &str)> {
    let inner = subject.strip_prefix('[')?;
    let (tag, rest) = inner.split_once(']')?;
    let (prefix, numbers) = tag.rsplit_once(' ')?;
    let (number, total) = numbers.split_once('/')?;
    Some((
        Tag {
            prefix: prefix.to_string(),
            number: number.parse().ok()?,
            total: total.parse().ok()?,
        },
        rest.trim_start(),
    ))
}

/// The subject prefix of an exported series (without the version, which
/// `git format-patch -v` adds): `PATCH net-next`, `RFC PATCH net`.
pub fn export_prefix(tree: &str, rfc: bool) -> String {
    if rfc {
        format!("RFC PATCH {tree}")
    } else {
        format!("PATCH {tree}")
    }
}

/// A series' cover letter, as `SERIES/BASE/0000-cover-letter.patch` holds
/// it: headers, the body the author wrote, then the shortlog and diffstat
/// git generates (not kept: [`refresh`] generates them again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cover {
    /// The `From:` header, `Name <email>`.
    pub from: String,
    /// The `Date:` header (RFC 2822).
    pub date: String,
    /// The subject's tag (`[PATCH net 0/4]`).
    pub tag: Tag,
    /// The subject without its tag.
    pub subject: String,
    /// The body, between the headers and the shortlog, without the blank
    /// lines that end it.
    pub body: String,
}

/// Parses a cover letter: `From <sha> ...`, `From:`, `Date:`, `Subject:
/// [PREFIX 0/N] ...` (possibly folded), a blank line, the body, then the
/// shortlog of N patches (`Name (k):` blocks of two-space entries), the
/// diffstat and the signature. The body ends where a shortlog of exactly N
/// patches followed by a diffstat and the signature begins, so that a body
/// quoting names or indented lines is kept whole.
///
/// Errors say which part is missing.
pub fn parse_cover(text: &str) -> std::result::Result<Cover, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    if lines.first().is_some_and(|l| l.starts_with("From ")) {
        i = 1;
    }
    while i < lines.len() && !lines[i].is_empty() {
        let l = lines[i];
        if l.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push_str(l);
            }
        } else if let Some((k, v)) = l.split_once(": ") {
            headers.push((k.to_string(), v.to_string()));
        } else {
            return Err(format!("header line {} is not `Key: value`: {l}", i + 1));
        }
        i += 1;
    }
    let header = |k: &str| {
        headers
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("no {k}: header"))
    };
    let subject_line = header("Subject")?;
    let (tag, subject) = parse_subject(&subject_line)
        .ok_or_else(|| format!("subject {subject_line:?} has no [PREFIX 0/N] tag"))?;
    if tag.number != 0 {
        return Err(format!(
            "subject {subject_line:?} is patch {}, not a cover letter (0/N)",
            tag.number
        ));
    }
    let body_start = i + 1;
    let end = (body_start..=lines.len())
        .find(|&s| tail_parses(&lines[s..], tag.total))
        .ok_or_else(|| {
            format!(
                "no shortlog of {} patch(es), diffstat and signature after the body",
                tag.total
            )
        })?;
    let mut body: Vec<&str> = lines[body_start.min(end)..end].to_vec();
    while body.last().is_some_and(|l| l.trim().is_empty()) {
        body.pop();
    }
    Ok(Cover {
        from: header("From")?,
        date: header("Date")?,
        subject: subject.to_string(),
        tag,
        body: body.join("\n"),
    })
}

/// Whether `lines` are exactly: shortlog blocks naming `total` patches,
/// a diffstat, the signature.
fn tail_parses(lines: &[&str], total: u32) -> bool {
    let mut i = 0;
    let mut counted = 0u32;
    // Shortlog blocks: `Name (k):`, entries, a blank line.
    loop {
        let Some(head) = lines.get(i) else {
            return false;
        };
        let Some(k) = head
            .strip_suffix("):")
            .and_then(|h| h.rsplit_once(" ("))
            .filter(|(name, _)| !name.is_empty() && !name.starts_with(' '))
            .and_then(|(_, k)| k.parse::<u32>().ok())
        else {
            break;
        };
        i += 1;
        let mut entries = 0;
        while let Some(l) = lines.get(i) {
            if l.starts_with("    ") {
                // A wrapped entry's continuation.
            } else if l.starts_with("  ") && !l[2..].starts_with(' ') {
                entries += 1;
            } else {
                break;
            }
            i += 1;
        }
        if entries != k || lines.get(i) != Some(&"") {
            return false;
        }
        i += 1;
        counted += k;
    }
    if counted != total || counted == 0 {
        return false;
    }
    // The diffstat: ` path | n ++--` lines, ` N files changed, ...`,
    // ` create mode ...`; then a blank line and `-- `.
    let stat = lines[i..].iter().take_while(|l| l.starts_with(' ')).count();
    if stat == 0 || !lines[i..i + stat].iter().any(|l| l.contains(" changed")) {
        return false;
    }
    i += stat;
    let rest: Vec<&str> = lines[i..].to_vec();
    matches!(
        rest.as_slice(),
        ["", "-- ", _version] | ["", "-- ", _version, ""]
    )
}

/// The message of a cover-letter commit: subject, body, the trailer
/// naming the series.
pub fn cover_message(series: &str, subject: &str, body: &str) -> String {
    if body.is_empty() {
        format!("{subject}\n\n{SERIES_TRAILER}: {series}\n")
    } else {
        format!("{subject}\n\n{body}\n\n{SERIES_TRAILER}: {series}\n")
    }
}

/// Reads a commit message written by [`cover_message`] (or amended by the
/// developer): `(series, subject, body)`, `None` when its last line is not
/// a `Series:` trailer.
pub fn parse_cover_message(message: &str) -> Option<(String, String, String)> {
    let trimmed = message.trim_end();
    let (rest, last) = trimmed.rsplit_once('\n')?;
    let series = last
        .strip_prefix(SERIES_TRAILER)?
        .strip_prefix(": ")?
        .trim()
        .to_string();
    if series.is_empty() {
        return None;
    }
    let rest = rest.trim_end();
    let (subject, body) = match rest.split_once('\n') {
        Some((s, b)) => (s, b.trim_start_matches('\n').trim_end()),
        None => (rest, ""),
    };
    Some((series, subject.trim().to_string(), body.to_string()))
}

/// Puts a cover's subject and body in place of the placeholders of
/// `git format-patch --cover-letter`'s output.
pub fn fill_cover(generated: &str, subject: &str, body: &str) -> Result<String> {
    if !generated.contains(SUBJECT_HERE) || !generated.contains(BLURB_HERE) {
        return Err(Error::Setup(
            "git format-patch --cover-letter wrote no *** SUBJECT HERE *** / \
             *** BLURB HERE *** placeholders (format.coverFromDescription?)"
                .into(),
        ));
    }
    Ok(generated
        .replacen(SUBJECT_HERE, subject, 1)
        .replacen(BLURB_HERE, body, 1))
}

/// A sender: `git config user.name` and `user.email`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `user.name`.
    pub name: String,
    /// `user.email`.
    pub email: String,
}

impl Identity {
    /// `Name <email>`.
    pub fn ident(&self) -> String {
        format!("{} <{}>", self.name, self.email)
    }

    /// The identity git would use in `dir` (its repository's config, the
    /// user's, the system's). Refused, with the exact `git config` commands
    /// to run, when either is unset, or when it is the placeholder.
    pub fn from_git_config(dir: &Path) -> Result<Self> {
        let sh = shell()?;
        sh.change_dir(dir);
        let get = |key: &str| -> String {
            cmd!(sh, "git config {key}")
                .quiet()
                .ignore_status()
                .read()
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let (name, email) = (get("user.name"), get("user.email"));
        let mut missing = Vec::new();
        if name.is_empty() {
            missing.push("git config --global user.name \"Your Name\"");
        }
        if email.is_empty() {
            missing.push("git config --global user.email you@example.org");
        }
        if !missing.is_empty() {
            return Err(Error::Setup(format!(
                "no sender identity: the exported patches are signed and sent by you, \
                 and git config has no user.name/user.email here; run:\n  {}",
                missing.join("\n  ")
            )));
        }
        let me = Self { name, email };
        if me.ident() == PLACEHOLDER {
            return Err(Error::Setup(format!(
                "git config's identity is the project's placeholder {PLACEHOLDER}: \
                 set your own with git config --global user.name/user.email"
            )));
        }
        Ok(me)
    }
}

/// `text` with every `Signed-off-by:` of the placeholder made `who`'s.
pub fn replace_placeholder(text: &str, who: &Identity) -> String {
    let from = format!("Signed-off-by: {PLACEHOLDER}");
    let to = format!("Signed-off-by: {}", who.ident());
    text.lines()
        .map(|l| if l == from { to.as_str() } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + if text.ends_with('\n') { "\n" } else { "" }
}

/// Splits `Name <email>` into its parts.
pub fn split_ident(ident: &str) -> Option<(&str, &str)> {
    let (name, rest) = ident.split_once(" <")?;
    let email = rest.strip_suffix('>')?;
    Some((name.trim().trim_matches('"'), email))
}

/// Whether a cover letter's body has a changelog for version `v`: a line
/// `Changes in vN` (any case, any ending) or one starting `vN:`.
pub fn has_changelog(body: &str, v: u32) -> bool {
    let prev = v.saturating_sub(1);
    // `Changes in v2:`, `Changes since v1:`, `v1 -> v2:`, `v2:` (a
    // number followed by anything but a digit, so v20 is not v2).
    let heads = [
        format!("changes in v{v}"),
        format!("changes since v{prev}"),
        format!("v{prev} -> v{v}"),
        format!("v{prev}->v{v}"),
        format!("v{v}:"),
    ];
    body.lines().map(str::trim).any(|l| {
        let lower = l.to_ascii_lowercase();
        heads.iter().any(|h| {
            lower
                .strip_prefix(h.as_str())
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
        })
    })
}

/// The notes a patch file carries under its `---` line, before the
/// diffstat (per-patch changelog, trimmed), if any.
pub fn patch_notes(patch: &str) -> Option<String> {
    let start = patch.find("\n---\n")? + 5;
    let after = &patch[start..];
    let end = after
        .lines()
        .scan(0usize, |pos, l| {
            let at = *pos;
            *pos += l.len() + 1;
            Some((at, l))
        })
        .find(|(_, l)| is_stat_line(l) || l.starts_with("diff --git "))
        .map(|(at, _)| at)
        .unwrap_or(after.len());
    let notes = after[..end].trim();
    (!notes.is_empty()).then(|| notes.to_string())
}

fn is_stat_line(l: &str) -> bool {
    l.starts_with(' ')
        && (l.contains(" | ")
            || l.trim_start()
                .split_once(' ')
                .is_some_and(|(n, rest)| n.parse::<u32>().is_ok() && rest.starts_with("file")))
}

/// `patch` with `notes` put under its `---` line, a blank line after them.
pub fn insert_notes(patch: &str, notes: &str) -> String {
    match patch.find("\n---\n") {
        Some(at) => {
            let split = at + 5;
            format!("{}{}\n\n{}", &patch[..split], notes.trim(), &patch[split..])
        }
        None => patch.to_string(),
    }
}

/// Whether two patch files are the same apart from their first line (`From
/// <commit> Mon Sep 17 ...`: commit ids differ between imports of a base).
pub fn same_but_commit_line(a: &str, b: &str) -> bool {
    let rest = |s: &str| s.split_once('\n').map(|(_, r)| r.to_string());
    rest(a).is_some() && rest(a) == rest(b)
}

// ---------------------------------------------------------------------
// git.
// ---------------------------------------------------------------------

/// A shell whose git ignores the user's and the system's configuration.
fn shell() -> Result<Shell> {
    Shell::new().map_err(|e| Error::Setup(format!("cannot start a shell: {e}")))
}

fn pristine(dir: &Path) -> Result<Shell> {
    let sh = pristine_now(dir)?;
    sh.set_var("GIT_COMMITTER_NAME", COMMITTER.0);
    sh.set_var("GIT_COMMITTER_EMAIL", COMMITTER.1);
    sh.set_var("GIT_COMMITTER_DATE", COMMITTER.2);
    Ok(sh)
}

/// [`pristine`] without the fixed committer: dates are now.
fn pristine_now(dir: &Path) -> Result<Shell> {
    let sh = shell()?;
    sh.set_var("GIT_CONFIG_GLOBAL", "/dev/null");
    sh.set_var("GIT_CONFIG_NOSYSTEM", "1");
    sh.change_dir(dir);
    Ok(sh)
}

/// Runs `c`; its stdout, or an error with the command, its status and
/// output (vm's [`udp_repair_vm::run_quiet`]).
fn run(c: Cmd<'_>) -> Result<String> {
    udp_repair_vm::run_quiet(c)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Setup(format!("reading {}: {e}", path.display())))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::Setup(format!("writing {}: {e}", path.display())))
}

/// A temporary directory `under`, its name starting with `what`, removed
/// on drop.
fn temp_dir(under: &Path, what: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{what}."))
        .tempdir_in(under)
        .map_err(|e| Error::Setup(format!("creating a directory in {}: {e}", under.display())))
}

/// Where a variant's series are: the project, the pinned base and its
/// imported repository.
#[derive(Debug, Clone)]
pub struct Project {
    /// `kernel-patches/` of the project.
    pub patches_dir: PathBuf,
    /// The base.
    pub pin: Pin,
    /// The base's git repository (tag `base`), from
    /// [`udp_repair_vm::base::ensure_base_repo`].
    pub git: PathBuf,
}

impl Project {
    /// The series directory `SERIES/BASE`.
    pub fn series_dir(&self, series: &str) -> PathBuf {
        self.patches_dir.join(series).join(&self.pin.name)
    }

    /// The series `variant` stacks, in order (`kernel-patches/VARIANTS`).
    pub fn stack(&self, variant: &str) -> Result<Vec<String>> {
        stack(&self.patches_dir, &self.pin.name, variant)
    }
}

/// The series `variant` stacks, in order, as `kernel-patches/VARIANTS`
/// names them; `none` and unknown variants are refused by name. Each
/// series must have a directory for base `base` (`SERIES/BASE`), which may
/// hold no patch (refresh writes them).
pub fn stack(patches_dir: &Path, base: &str, variant: &str) -> Result<Vec<String>> {
    if variant == "none" {
        return Err(Error::Setup(
            "variant none is the unpatched base: it has no series".into(),
        ));
    }
    let series: Vec<String> = tree::stacks(patches_dir)?
        .into_iter()
        .find(|(v, _)| v == variant)
        .map(|(_, s)| s)
        .ok_or_else(|| {
            Error::Setup(format!(
                "no variant {variant} in {} (variants: {})",
                patches_dir.join("VARIANTS").display(),
                tree::variants(patches_dir).join(", ")
            ))
        })?;
    for s in &series {
        let dir = patches_dir.join(s).join(base);
        if !dir.is_dir() {
            return Err(Error::Setup(format!(
                "variant {variant}: series {s} has no directory for base {base} ({})",
                dir.display()
            )));
        }
    }
    Ok(series)
}

/// Reads and parses `SERIES/BASE/0000-cover-letter.patch`.
pub fn load_cover(dir: &Path) -> Result<Cover> {
    let path = dir.join("0000-cover-letter.patch");
    let text = read(&path)?;
    parse_cover(&text).map_err(|e| Error::Setup(format!("{}: {e}", path.display())))
}

/// The edit branch of a variant and its worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditTarget {
    /// The branch in the base repository, `edit/VARIANT`.
    pub branch: String,
    /// Its worktree.
    pub worktree: PathBuf,
}

impl EditTarget {
    /// `edit/VARIANT`, checked out at `CACHE/src/<base id>/edit/VARIANT`.
    pub fn for_variant(cache: &udp_repair_vm::Cache, pin: &Pin, variant: &str) -> Self {
        Self {
            branch: format!("edit/{variant}"),
            worktree: cache
                .root()
                .join("src")
                .join(pin.id())
                .join("edit")
                .join(variant),
        }
    }
}

/// What [`edit`] made.
#[derive(Debug, Clone)]
pub struct Edited {
    /// The branch and its worktree.
    pub target: EditTarget,
    /// Per series: its name and how many patches it applied.
    pub series: Vec<(String, usize)>,
}

fn branch_exists(sh: &Shell, branch: &str) -> bool {
    let r = format!("refs/heads/{branch}");
    run(cmd!(sh, "git rev-parse --verify -q {r}")).is_ok()
}

/// Makes `target.branch` from the base with the variant's series applied
/// as commits, in `target.worktree`: per series, an empty commit with the
/// cover letter (author and date of the cover letter's `From:`/`Date:`),
/// then `git am` of its patches; notes under a patch's `---` become git
/// notes of its commit (`notes.rewriteRef` is set so that amend and rebase
/// keep them).
///
/// With `force`, an existing branch is thrown away; an existing worktree
/// of the target is reset in place (`git checkout -f -B`, `git clean -f
/// -d`: untracked files go, ignored ones such as a build stay), so that
/// only the files the series touch are rewritten.
///
/// Errors: the branch or worktree already exists (it may hold edits) and
/// `force` is not set; a series has no cover letter or one that does not parse; a
/// patch does not apply ([`Error::Patch`] with git's account).
pub fn edit(project: &Project, variant: &str, target: &EditTarget, force: bool) -> Result<Edited> {
    let stack = project.stack(variant)?;
    let mut plan = Vec::new();
    for s in &stack {
        let dir = project.series_dir(s);
        let cover = load_cover(&dir)?;
        let patches = tree::patch_files(&dir)
            .map_err(|e| Error::Setup(format!("reading {}: {e}", dir.display())))?;
        plan.push((s.clone(), cover, patches));
    }
    let sh = pristine(&project.git)?;
    let _ = run(cmd!(sh, "git worktree prune"));
    let branch = &target.branch;
    let wt = &target.worktree;
    let exists = branch_exists(&sh, branch) || wt.exists();
    if exists && !force {
        return Err(Error::Setup(format!(
            "branch {branch} already exists in {} (worktree {}): it may hold your edits; \
             `udp-repair patches refresh --variant {variant} --base {}` writes them back \
             to the series files, and --force throws them away and starts again from the files",
            project.git.display(),
            wt.display(),
            project.pin.name
        )));
    }
    run(cmd!(sh, "git config notes.rewriteRef refs/notes/commits"))?;
    if exists && wt.join(".git").is_file() {
        // --force on a worktree of ours: reset it in place, so that git
        // rewrites only the files the series touch (a fresh checkout of a
        // kernel takes tens of seconds). Ignored files (builds) stay.
        sh.change_dir(wt);
        let _ = run(cmd!(sh, "git am --abort"));
        let _ = run(cmd!(sh, "git rebase --abort"));
        run(cmd!(sh, "git checkout -q -f -B {branch} refs/tags/base"))?;
        run(cmd!(sh, "git clean -q -f -d"))?;
    } else {
        if wt.exists() {
            std::fs::remove_dir_all(wt)
                .map_err(|e| Error::Setup(format!("removing {}: {e}", wt.display())))?;
            let _ = run(cmd!(sh, "git worktree prune"));
        }
        if branch_exists(&sh, branch) {
            run(cmd!(sh, "git branch -q -D {branch}"))?;
        }
        if let Some(parent) = wt.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::Setup(format!("creating {}: {e}", parent.display())))?;
        }
        run(cmd!(
            sh,
            "git worktree add -q -b {branch} {wt} refs/tags/base"
        ))?;
    }
    sh.change_dir(wt);
    let tmp = temp_dir(&project.git.join(".git"), "udp-repair-edit")?;
    let mut done = Vec::new();
    for (name, cover, patches) in &plan {
        let (aname, aemail) = split_ident(&cover.from).ok_or_else(|| {
            Error::Setup(format!(
                "{}: From: {:?} is not `Name <email>`",
                project.series_dir(name).display(),
                cover.from
            ))
        })?;
        let msg = tmp.path().join("cover-message");
        write(&msg, &cover_message(name, &cover.subject, &cover.body))?;
        run(cmd!(
            sh,
            "git commit -q --allow-empty --no-verify --cleanup=verbatim -F {msg}"
        )
        .env("GIT_AUTHOR_NAME", aname)
        .env("GIT_AUTHOR_EMAIL", aemail)
        .env("GIT_AUTHOR_DATE", &cover.date))?;
        for patch in patches {
            if let Err(e) = run(cmd!(sh, "git am -q --keep-cr {patch}")) {
                let _ = run(cmd!(sh, "git am --abort"));
                return Err(Error::Patch {
                    patch: patch.clone(),
                    detail: e.to_string(),
                });
            }
            if let Some(notes) = patch_notes(&read(patch)?) {
                let f = tmp.path().join("notes");
                write(&f, &notes)?;
                run(cmd!(sh, "git notes add -f -F {f} HEAD"))?;
            }
        }
        done.push((name.clone(), patches.len()));
    }
    Ok(Edited {
        target: target.clone(),
        series: done,
    })
}

/// How [`refresh`] left one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Written anew.
    Added,
    /// Rewritten with other content.
    Changed,
    /// The same but for its `From <commit>` line: left as it was.
    Unchanged,
    /// No longer part of the series (a dropped patch): removed.
    Removed,
}

/// What [`refresh`] did: per file of each series directory, how it changed.
#[derive(Debug, Clone, Default)]
pub struct Refreshed {
    /// Files, in order, with their change.
    pub files: Vec<(PathBuf, Change)>,
    /// (changed file, a file of another series that held the same patch
    /// before the change and was not changed with it).
    pub copies: Vec<(PathBuf, PathBuf)>,
}

/// The patch files of the other series of base `base` whose content is
/// `old` (the `From <commit>` line aside).
fn copies_of(patches_dir: &Path, base: &str, dir: &Path, old: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(patches_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.filter_map(|e| e.ok()) {
        let other = e.path().join(base);
        if other == dir || !other.is_dir() {
            continue;
        }
        for f in tree::patch_files(&other).unwrap_or_default() {
            if let Ok(text) = std::fs::read_to_string(&f) {
                if text == old || same_but_commit_line(&text, old) {
                    out.push(f);
                }
            }
        }
    }
    out.sort();
    out
}

/// One series of an edit branch: its cover commit and its last commit.
#[derive(Debug, Clone)]
struct Segment {
    series: String,
    cover: String,
    subject: String,
    body: String,
    commits: Vec<String>,
}

/// The commits of `branch` above the base, split at its cover commits.
fn segments(sh: &Shell, branch: &str, git: &Path) -> Result<Vec<Segment>> {
    let r = format!("refs/heads/{branch}");
    if !branch_exists(sh, branch) {
        return Err(Error::Setup(format!(
            "no branch {branch} in {}: run `udp-repair patches edit` first",
            git.display()
        )));
    }
    if run(cmd!(sh, "git merge-base --is-ancestor refs/tags/base {r}")).is_err() {
        return Err(Error::Setup(format!(
            "branch {branch} does not descend from the base (tag base)"
        )));
    }
    let range = format!("refs/tags/base..{r}");
    let list = run(cmd!(sh, "git rev-list --reverse --topo-order {range}"))?;
    let mut out: Vec<Segment> = Vec::new();
    for c in list.lines() {
        let raw = run(cmd!(sh, "git cat-file commit {c}"))?;
        if raw.lines().filter(|l| l.starts_with("parent ")).count() > 1 {
            return Err(Error::Setup(format!(
                "branch {branch}: commit {c} is a merge; a series is a line of commits"
            )));
        }
        let message = raw.split_once("\n\n").map(|(_, m)| m).unwrap_or("");
        let (own, parent) = (format!("{c}^{{tree}}"), format!("{c}^^{{tree}}"));
        let tree = run(cmd!(sh, "git rev-parse {own} {parent}"))?;
        let empty = tree.lines().next() == tree.lines().nth(1);
        match parse_cover_message(message) {
            Some((series, subject, body)) if empty => out.push(Segment {
                series,
                cover: c.to_string(),
                subject,
                body,
                commits: Vec::new(),
            }),
            Some((series, ..)) => {
                return Err(Error::Setup(format!(
                    "branch {branch}: cover commit {c} of series {series} changes files: \
                     move the change into a patch of the series"
                )))
            }
            None => match out.last_mut() {
                Some(seg) => seg.commits.push(c.to_string()),
                None => {
                    return Err(Error::Setup(format!(
                        "branch {branch}: commit {c} comes before any cover commit \
                         (an empty commit ending `{SERIES_TRAILER}: NAME`)"
                    )))
                }
            },
        }
    }
    if out.is_empty() {
        return Err(Error::Setup(format!(
            "branch {branch} has no cover commits (empty commits ending \
             `{SERIES_TRAILER}: NAME`): it is not one `udp-repair patches edit` made"
        )));
    }
    Ok(out)
}

/// How [`format_series`] writes a series.
#[derive(Debug)]
struct Format<'a> {
    /// `--subject-prefix`.
    prefix: &'a str,
    /// More `git format-patch` options.
    extra: &'a [String],
    /// Environment: GIT_COMMITTER_* set the cover letter's `From:`/`Date:`.
    env: &'a [(&'a str, String)],
    /// The cover letter's subject and body.
    cover: (&'a str, &'a str),
    /// Each commit's notes, put under its `---`.
    notes: &'a [Option<String>],
}

/// Writes `git format-patch` output of `range` (after the commit `.0`, up
/// to the last of `.1`) into `out` as `how` says, the cover letter filled
/// in; returns the files in order.
fn format_series(
    sh: &Shell,
    range: (&str, &[String]),
    how: &Format<'_>,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let Format {
        prefix,
        extra,
        env,
        cover,
        notes,
    } = how;
    let (from, commits) = range;
    let tip = commits.last().ok_or_else(|| {
        Error::Setup(format!(
            "no patches after cover commit {from}: nothing to format"
        ))
    })?;
    let spec = format!("{from}..{tip}");
    let prefix = format!("--subject-prefix={prefix}");
    let extra = extra.iter();
    let mut c = cmd!(
        sh,
        "git format-patch -q --cover-letter --numbered {ABBREV} {prefix} {extra...} -o {out} {spec}"
    );
    for (k, v) in env.iter() {
        c = c.env(k, v);
    }
    run(c)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(|e| Error::Setup(format!("reading {}: {e}", out.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    files.sort();
    if files.len() != commits.len() + 1 {
        return Err(Error::Setup(format!(
            "git format-patch wrote {} files for {} commits and a cover letter",
            files.len(),
            commits.len()
        )));
    }
    let generated = read(&files[0])?;
    let rest = generated.split_once('\n').map(|(_, r)| r).unwrap_or("");
    let cover_text = fill_cover(&format!("{COVER_FROM_LINE}\n{rest}"), cover.0, cover.1)?;
    write(&files[0], &cover_text)?;
    for (file, note) in files[1..].iter().zip(notes.iter()) {
        if let Some(n) = note {
            let text = insert_notes(&read(file)?, n);
            write(file, &text)?;
        }
    }
    Ok(files)
}

fn git_notes(sh: &Shell, commit: &str) -> Option<String> {
    run(cmd!(sh, "git notes show {commit}"))
        .ok()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
}

/// A series stacked on another one, applied to the base alone, as it is
/// kept and posted (`kernel-patches/README.md`): `(base, commits)`; a
/// series whose cover commit sits on the base is returned as it is
/// (`(cover, its commits)`).
fn on_base_alone(sh: &Shell, seg: &Segment, tmp: &Path) -> Result<(String, Vec<String>)> {
    let c = &seg.cover;
    let parent = format!("{c}^");
    let parent = run(cmd!(sh, "git rev-parse {parent}"))?;
    let base = run(cmd!(sh, "git rev-parse refs/tags/base^0"))?;
    if parent == base {
        return Ok((c.clone(), seg.commits.clone()));
    }
    let dir = tmp.join("stacked");
    let tip = seg.commits.last().map(String::as_str).unwrap_or(c);
    let range = format!("{c}..{tip}");
    run(cmd!(sh, "git format-patch -q {ABBREV} -o {dir} {range}"))?;
    let patches = tree::patch_files(&dir)
        .map_err(|e| Error::Setup(format!("reading {}: {e}", dir.display())))?;
    match commit_patches(sh, "refs/tags/base", &patches, None, tmp) {
        Ok((commits, _)) => Ok((base.trim().to_string(), commits)),
        Err(Error::Patch { patch, detail }) => Err(Error::Setup(format!(
            "series {}: {} does not apply to the base alone, as the series is kept and \
             posted (kernel-patches/README.md: each series applies to its base alone):\n{detail}",
            seg.series,
            patch.file_name().unwrap_or_default().to_string_lossy()
        ))),
        Err(e) => Err(e),
    }
}

/// The first line of a cover letter: the cover letter is no commit of
/// the series, and the project's files say so with the null id (git would
/// write the tip's id, which differs between imports of a base).
const COVER_FROM_LINE: &str =
    "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001";

/// Refuses a worktree with work not on its branch: a rebase, merge,
/// cherry-pick, revert or `git am` in progress, or uncommitted changes to
/// tracked files (refresh reads the branch, so they would be left out in
/// silence). A missing worktree is not refused (the branch may be used
/// without one).
fn unfinished(worktree: &Path) -> Result<()> {
    if !worktree.join(".git").exists() {
        return Ok(());
    }
    let git = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(worktree)
            .args(args)
            .output()
            .map_err(|e| Error::Setup(format!("running git in {}: {e}", worktree.display())))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    for (marker, what) in [
        ("rebase-merge", "a rebase"),
        ("rebase-apply", "a rebase or git am"),
        ("MERGE_HEAD", "a merge"),
        ("CHERRY_PICK_HEAD", "a cherry-pick"),
        ("REVERT_HEAD", "a revert"),
    ] {
        let path = git(&["rev-parse", "--git-path", marker])?;
        let path = if Path::new(&path).is_absolute() {
            PathBuf::from(path)
        } else {
            worktree.join(path)
        };
        if path.exists() {
            return Err(Error::Setup(format!(
                "{}: {what} is in progress there: finish it (--continue) or abort it, \
                 then refresh",
                worktree.display()
            )));
        }
    }
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])?;
    if !dirty.is_empty() {
        return Err(Error::Setup(format!(
            "{} has uncommitted changes, which refresh would leave out: commit \
             (or amend) them, or `git stash`, then refresh:\n{dirty}",
            worktree.display()
        )));
    }
    Ok(())
}

/// Turns `target.branch` back into the series files of `variant`: per
/// cover commit, `SERIES/BASE/0000-cover-letter.patch` (its `From:`,
/// `Date:`, subject and body from the cover commit, the subject prefix
/// from the series' existing cover letter, shortlog and diffstat from
/// git) and the patches as `git format-patch` writes them. A file that
/// differs only in its `From <commit>` line is left as it was; a patch file
/// of the directory that is no longer part of the series is removed.
///
/// Errors: the branch is missing or has no cover commits; a commit comes
/// before the first cover commit; a cover commit changes files; the
/// series are not the ones `kernel-patches/VARIANTS` stacks, in order; a
/// series has no existing cover letter to take its prefix from.
pub fn refresh(project: &Project, variant: &str, target: &EditTarget) -> Result<Refreshed> {
    let stack = project.stack(variant)?;
    unfinished(&target.worktree)?;
    let sh = pristine(&project.git)?;
    let segs = segments(&sh, &target.branch, &project.git)?;
    let names: Vec<&str> = segs.iter().map(|s| s.series.as_str()).collect();
    if names != stack.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(Error::Setup(format!(
            "branch {} holds the series {} but variant {variant} stacks {} \
             (kernel-patches/VARIANTS): fix the `{SERIES_TRAILER}:` trailers or VARIANTS",
            target.branch,
            names.join(", "),
            stack.join(", ")
        )));
    }
    let mut done = Refreshed::default();
    for seg in &segs {
        let dir = project.series_dir(&seg.series);
        let old = load_cover(&dir)?;
        if seg.commits.is_empty() {
            return Err(Error::Setup(format!(
                "branch {}: series {} has a cover commit but no patches",
                target.branch, seg.series
            )));
        }
        let c = &seg.cover;
        let who = run(cmd!(sh, "git log -1 --format=%an%x00%ae%x00%aD {c}"))?;
        let who: Vec<&str> = who.trim_end().split('\0').collect();
        let [name, email, date] = who.as_slice() else {
            return Err(Error::Setup(format!("cannot read the author of {c}")));
        };
        let env = [
            ("GIT_COMMITTER_NAME", name.to_string()),
            ("GIT_COMMITTER_EMAIL", email.to_string()),
            ("GIT_COMMITTER_DATE", date.to_string()),
        ];
        let notes: Vec<Option<String>> = seg.commits.iter().map(|c| git_notes(&sh, c)).collect();
        let tmp = temp_dir(&project.git.join(".git"), "udp-repair-refresh")?;
        let (from, commits) = on_base_alone(&sh, seg, tmp.path())?;
        let how = Format {
            prefix: &old.tag.prefix,
            extra: &[],
            env: &env,
            cover: (&seg.subject, &seg.body),
            notes: &notes,
        };
        let files = format_series(&sh, (&from, &commits), &how, tmp.path())?;
        let mut keep = Vec::new();
        for f in &files {
            let name = f.file_name().unwrap_or_default();
            let dest = dir.join(name);
            let new = read(f)?;
            let current = std::fs::read_to_string(&dest).ok();
            let change = match &current {
                Some(cur) if *cur == new || same_but_commit_line(cur, &new) => Change::Unchanged,
                Some(_) => Change::Changed,
                None => Change::Added,
            };
            if change != Change::Unchanged {
                write(&dest, &new)?;
            }
            // The same patch kept in another series (UDP_REPAIR's 0001
            // in getsockopt, recvmsg and pending-lost) is not changed
            // with it: say where, so the copies do not drift apart.
            if let (Change::Changed, Some(old)) = (change, &current) {
                done.copies.extend(
                    copies_of(&project.patches_dir, &project.pin.name, &dir, old)
                        .into_iter()
                        .map(|c| (dest.clone(), c)),
                );
            }
            keep.push(dest.clone());
            done.files.push((dest, change));
        }
        let stale = std::fs::read_dir(&dir)
            .map_err(|e| Error::Setup(format!("reading {}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "patch") && !keep.contains(p));
        for p in stale.collect::<Vec<_>>() {
            std::fs::remove_file(&p)
                .map_err(|e| Error::Setup(format!("removing {}: {e}", p.display())))?;
            done.files.push((p, Change::Removed));
        }
    }
    Ok(done)
}

/// What [`export`] is asked to write.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The version, `N` of `vN` (1: no `v1` in the subjects).
    pub version: u32,
    /// The netdev tree for the subjects (`net`, `net-next`); `None`: each
    /// series' current prefix's.
    pub tree: Option<String>,
    /// `RFC` in the subjects.
    pub rfc: bool,
    /// The output directory; each series goes to `out/SERIES/`.
    pub out: PathBuf,
    /// The sender, replacing the placeholder.
    pub identity: Identity,
    /// A real base commit for `base-commit:` (a user's tree with history);
    /// `None` for the project's imported bases, which are synthetic.
    pub base_commit: Option<String>,
    /// Export only these series of the variant (empty: all of them), so
    /// that one series can go out as v2 while another stays at v1.
    pub series: Vec<String>,
}

/// One exported series.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The series.
    pub series: String,
    /// Its directory, `out/SERIES`.
    pub dir: PathBuf,
    /// The files, cover letter first, with their subjects.
    pub files: Vec<(PathBuf, String)>,
    /// `To:` (maintainers).
    pub to: Vec<String>,
    /// `Cc:` (reviewers and lists).
    pub cc: Vec<String>,
}

/// The checks of [`export`] that need neither the base nor git: the
/// stack, the cover letters, the changelog of a version above 1, the
/// output directories. Returns per series its name, cover and prefix.
pub fn export_plan(
    patches_dir: &Path,
    base: &str,
    variant: &str,
    req: &ExportRequest,
) -> Result<Vec<(String, Cover, String)>> {
    if req.version == 0 {
        return Err(Error::Setup("--version starts at 1".into()));
    }
    let mut plan = Vec::new();
    let stacked = stack(patches_dir, base, variant)?;
    if let Some(bad) = req.series.iter().find(|s| !stacked.contains(s)) {
        return Err(Error::Setup(format!(
            "--series {bad}: variant {variant} stacks {}",
            stacked.join(", ")
        )));
    }
    for s in stacked {
        if !req.series.is_empty() && !req.series.contains(&s) {
            continue;
        }
        let dir = patches_dir.join(&s).join(base);
        let cover = load_cover(&dir)?;
        let tree = match &req.tree {
            Some(t) => t.clone(),
            None => cover.tag.tree().map(str::to_string).ok_or_else(|| {
                Error::Setup(format!(
                    "series {s}: its prefix [{}] names no tree: pass --tree net or net-next",
                    cover.tag.prefix
                ))
            })?,
        };
        if req.version > 1 && !has_changelog(&cover.body, req.version) {
            return Err(Error::Setup(format!(
                "series {s}: v{v} needs a changelog in its cover letter ({}): add a \
                 `Changes in v{v}:` section (or lines starting `v{v}:`) saying what changed \
                 since v{p} (`udp-repair patches edit`, amend the cover commit, \
                 `udp-repair patches refresh`)",
                dir.join("0000-cover-letter.patch").display(),
                v = req.version,
                p = req.version - 1
            )));
        }
        let out = req.out.join(&s);
        if out.read_dir().is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::Setup(format!(
                "{} is not empty: export writes a fresh directory",
                out.display()
            )));
        }
        plan.push((s, cover, export_prefix(&tree, req.rfc)));
    }
    Ok(plan)
}

/// `scripts/get_maintainer.pl` of the base on `patches`: (maintainers,
/// reviewers and lists), git history not consulted (the base has none).
pub fn maintainers(git: &Path, patches: &[PathBuf]) -> Result<(Vec<String>, Vec<String>)> {
    let sh = pristine(git)?;
    let common = ["--no-git", "--no-git-fallback", "--no-rolestats"];
    let lines = |s: String| -> Vec<String> {
        s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    };
    let to = run(cmd!(
        sh,
        "perl scripts/get_maintainer.pl {common...} --m --no-r --no-l {patches...}"
    ))?;
    let cc = run(cmd!(
        sh,
        "perl scripts/get_maintainer.pl {common...} --no-m --r --l {patches...}"
    ))?;
    Ok((lines(to), lines(cc)))
}

/// Applies `patches` on `parent` as commits, without a worktree (a
/// temporary index: `git mailinfo`, `git apply --cached`, `git
/// commit-tree`), the placeholder author and sign-off made `who`'s.
/// Returns the commits and each patch's notes.
fn commit_patches(
    sh: &Shell,
    parent: &str,
    patches: &[PathBuf],
    who: Option<&Identity>,
    tmp: &Path,
) -> Result<(Vec<String>, Vec<Option<String>>)> {
    let index = tmp.join("index");
    let (msg, diff) = (tmp.join("msg"), tmp.join("diff"));
    let spec = format!("{parent}^{{commit}}");
    let mut parent = run(cmd!(sh, "git rev-parse {spec}"))?.trim().to_string();
    let ptree = format!("{parent}^{{tree}}");
    run(cmd!(sh, "git read-tree {ptree}").env("GIT_INDEX_FILE", &index))?;
    let (mut commits, mut notes) = (Vec::new(), Vec::new());
    for p in patches {
        let text = read(p)?;
        let info = run(cmd!(sh, "git mailinfo {msg} {diff}").stdin(&text))?;
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(": "))
                .unwrap_or("")
                .to_string()
        };
        let (mut aname, mut aemail) = (field("Author"), field("Email"));
        if let Some(who) = who.filter(|_| format!("{aname} <{aemail}>") == PLACEHOLDER) {
            aname.clone_from(&who.name);
            aemail.clone_from(&who.email);
        }
        if let Err(e) = run(cmd!(sh, "git apply --cached {diff}").env("GIT_INDEX_FILE", &index)) {
            return Err(Error::Patch {
                patch: p.clone(),
                detail: e.to_string(),
            });
        }
        let tree = run(cmd!(sh, "git write-tree").env("GIT_INDEX_FILE", &index))?;
        let tree = tree.trim();
        let mut message = format!("{}\n\n{}", field("Subject"), read(&msg)?);
        let mut c = cmd!(sh, "git commit-tree {tree} -p {parent}")
            .env("GIT_AUTHOR_NAME", aname)
            .env("GIT_AUTHOR_EMAIL", aemail)
            .env("GIT_AUTHOR_DATE", field("Date"));
        if let Some(who) = who {
            message = replace_placeholder(&message, who);
            c = c
                .env("GIT_COMMITTER_NAME", &who.name)
                .env("GIT_COMMITTER_EMAIL", &who.email)
                .env_remove("GIT_COMMITTER_DATE");
        }
        let c = run(c.stdin(message))?;
        parent = c.trim().to_string();
        commits.push(parent.clone());
        notes.push(patch_notes(&text));
    }
    Ok((commits, notes))
}

/// Writes each series of `variant` as a numbered mbox series in
/// `req.out/SERIES/` (`git format-patch --cover-letter`, `vN-` names for
/// N > 1): subjects `[PREFIX vN M/T]`, the cover letter from the series'
/// one, notes under `---` kept, the sender in place of the placeholder in
/// `From:` and `Signed-off-by:`, `To:` the maintainers and `Cc:` the
/// reviewers and lists `get_maintainer.pl` names on the base tree,
/// `base-commit:` only for `req.base_commit`. Each series is applied to
/// the base alone, as it will be posted.
///
/// Errors: those of [`export_plan`]; a patch that does not apply to the
/// base alone; the placeholder still in an output file (where no rule
/// replaces it, say so rather than send it).
pub fn export(project: &Project, variant: &str, req: &ExportRequest) -> Result<Vec<Exported>> {
    let plan = export_plan(&project.patches_dir, &project.pin.name, variant, req)?;
    let sh = pristine(&project.git)?;
    let mut done = Vec::new();
    for (series, cover, prefix) in plan {
        let dir = project.series_dir(&series);
        let patches = tree::patch_files(&dir)
            .map_err(|e| Error::Setup(format!("reading {}: {e}", dir.display())))?;
        let (to, cc) = maintainers(&project.git, &patches)?;
        let tmp = temp_dir(&project.git.join(".git"), "udp-repair-export")?;
        let (commits, notes) = commit_patches(
            &sh,
            "refs/tags/base",
            &patches,
            Some(&req.identity),
            tmp.path(),
        )?;
        let mut extra: Vec<String> = Vec::new();
        if req.version > 1 {
            extra.push(format!("--reroll-count={}", req.version));
        }
        extra.extend(to.iter().map(|a| format!("--to={a}")));
        extra.extend(cc.iter().map(|a| format!("--cc={a}")));
        if let Some(b) = &req.base_commit {
            extra.push(format!("--base={b}"));
        }
        let env = [
            ("GIT_COMMITTER_NAME", req.identity.name.clone()),
            ("GIT_COMMITTER_EMAIL", req.identity.email.clone()),
        ];
        let out = req.out.join(&series);
        std::fs::create_dir_all(&out)
            .map_err(|e| Error::Setup(format!("creating {}: {e}", out.display())))?;
        let sh_now = pristine_now(&project.git)?;
        let base = run(cmd!(sh, "git rev-parse refs/tags/base^0"))?;
        let body = replace_placeholder(&cover.body, &req.identity);
        let how = Format {
            prefix: &prefix,
            extra: &extra,
            env: &env,
            cover: (&cover.subject, &body),
            notes: &notes,
        };
        let files = format_series(&sh_now, (base.trim(), &commits), &how, &out)?;
        let mut listed = Vec::new();
        for f in files {
            let text = read(&f)?;
            if let Some((n, l)) = text
                .lines()
                .enumerate()
                .find(|(_, l)| l.contains(PLACEHOLDER))
            {
                return Err(Error::Setup(format!(
                    "{} line {}: the placeholder identity is still there ({l:?}): \
                     only From: and Signed-off-by: are replaced; edit the series so that \
                     no other line names {PLACEHOLDER}",
                    f.display(),
                    n + 1
                )));
            }
            let subject = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("")
                .to_string();
            let cover = f
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains("cover-letter"));
            let message = text.split("\n---\n").next().unwrap_or("");
            let sob = format!(
                "Signed-off-by: {} <{}>",
                req.identity.name, req.identity.email
            );
            if !cover && !message.lines().any(|l| l == sob) {
                return Err(Error::Setup(format!(
                    "{}: no `{sob}` in its commit message: the patch carries no sign-off \
                     (the series' files need the placeholder's, which export replaces); \
                     nothing of it should be sent",
                    f.display()
                )));
            }
            listed.push((f, subject));
        }
        done.push(Exported {
            series,
            dir: out,
            files: listed,
            to,
            cc,
        });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patches_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-patches")
    }

    #[test]
    fn subjects_split_into_tag_and_text() {
        let (t, rest) = parse_subject("[RFC PATCH net-next 0/3] udp: read it").unwrap();
        assert_eq!(
            (t.prefix.as_str(), t.number, t.total, rest),
            ("RFC PATCH net-next", 0, 3, "udp: read it")
        );
        assert!(t.rfc());
        assert_eq!(t.tree(), Some("net-next"));
        let (t, _) = parse_subject("[PATCH net v2 4/4] x").unwrap();
        assert_eq!(
            (t.prefix.as_str(), t.tree(), t.rfc()),
            ("PATCH net v2", Some("net"), false)
        );
        assert_eq!(parse_subject("udp: no tag"), None);
        assert_eq!(parse_subject("[PATCH] no numbers"), None);
        assert_eq!(export_prefix("net", false), "PATCH net");
        assert_eq!(export_prefix("net-next", true), "RFC PATCH net-next");
    }

    const COVER: &str = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: UDP Repair Project <udp-repair@example.org>
Date: Wed, 2 Dec 2026 01:30:00 +0000
Subject: [PATCH net 0/2] net: a long subject that git would fold
 here

Body line one.

Cc: (quoted)
  Someone (1):
  indented

UDP Repair Project (2):
  udp: one
  selftests: two, a long subject
    wrapped

 net/ipv4/udp.c | 1 +
 1 file changed, 1 insertion(+)

-- 
2.47.3
";

    #[test]
    fn a_cover_letter_splits_into_headers_body_and_generated_tail() {
        let c = parse_cover(COVER).unwrap();
        assert_eq!(c.from, PLACEHOLDER);
        assert_eq!(c.date, "Wed, 2 Dec 2026 01:30:00 +0000");
        assert_eq!(c.tag.prefix, "PATCH net");
        assert_eq!(c.tag.total, 2);
        assert_eq!(c.subject, "net: a long subject that git would fold here");
        // `Someone (1):` inside the body is not taken for the shortlog: it
        // does not name the series' 2 patches.
        assert_eq!(
            c.body,
            "Body line one.\n\nCc: (quoted)\n  Someone (1):\n  indented"
        );
        let e = parse_cover(&COVER.replace("(2):", "(3):")).unwrap_err();
        assert!(e.contains("no shortlog of 2"), "{e}");
        let e = parse_cover(&COVER.replace(" 0/2]", " 1/2]")).unwrap_err();
        assert!(e.contains("not a cover letter"), "{e}");
    }

    #[test]
    fn every_cover_letter_of_the_project_parses() {
        for base in udp_repair_vm::base::names(&patches_dir()) {
            for s in ["peek-zerolen", "getsockopt", "recvmsg", "pending-lost"] {
                let dir = patches_dir().join(s).join(&base);
                let c = load_cover(&dir).unwrap();
                let n = tree::patch_files(&dir).unwrap().len() as u32;
                assert_eq!(c.tag.total, n, "{s}/{base}");
                assert!(c.body.len() > 100 && !c.body.ends_with('\n'), "{s}/{base}");
                assert!(!c.body.contains("\n-- \n"), "{s}/{base}");
                assert_eq!(c.from, PLACEHOLDER);
            }
        }
    }

    #[test]
    fn cover_commit_messages_round_trip() {
        let m = cover_message("peek-zerolen", "net: subject", "Body.\n\n# not a comment");
        assert_eq!(
            m,
            "net: subject\n\nBody.\n\n# not a comment\n\nSeries: peek-zerolen\n"
        );
        assert_eq!(
            parse_cover_message(&m),
            Some((
                "peek-zerolen".into(),
                "net: subject".into(),
                "Body.\n\n# not a comment".into()
            ))
        );
        assert_eq!(
            parse_cover_message(&cover_message("s", "only", "")),
            Some(("s".into(), "only".into(), String::new()))
        );
        assert_eq!(
            parse_cover_message("udp: a patch\n\nSigned-off-by: x\n"),
            None
        );
        let filled = fill_cover(
            "Subject: [PATCH net 0/1] *** SUBJECT HERE ***\n\n*** BLURB HERE ***\n\nA (1):\n",
            "s",
            "b",
        )
        .unwrap();
        assert_eq!(filled, "Subject: [PATCH net 0/1] s\n\nb\n\nA (1):\n");
        assert!(fill_cover("no placeholders", "s", "b").is_err());
    }

    #[test]
    fn the_placeholder_sign_off_becomes_the_senders() {
        let me = Identity {
            name: "Jane Doe".into(),
            email: "jane@example.com".into(),
        };
        let text = format!(
            "udp: x\n\nSee {PLACEHOLDER} in text.\nSigned-off-by: {PLACEHOLDER}\n\
             Signed-off-by: Other <o@example.com>\n"
        );
        let out = replace_placeholder(&text, &me);
        assert!(out.contains("Signed-off-by: Jane Doe <jane@example.com>\n"));
        assert!(out.contains("Signed-off-by: Other <o@example.com>\n"));
        // Only sign-offs are rewritten: export refuses what is left.
        assert!(out.contains(&format!("See {PLACEHOLDER} in text.")));
        assert_eq!(
            split_ident(PLACEHOLDER),
            Some(("UDP Repair Project", "udp-repair@example.org"))
        );
        assert_eq!(split_ident("\"A, B\" <a@b>"), Some(("A, B", "a@b")));
    }

    #[test]
    fn changelogs_and_notes_are_found() {
        assert!(has_changelog("x\n\nChanges in v2:\n- y", 2));
        assert!(has_changelog("x\n\nv3: rebased\nv2: y", 2));
        assert!(!has_changelog("v1: first posting", 2));
        assert!(!has_changelog("Changes in v20:\n- y", 2));
        assert!(has_changelog("Changes since v1:\n- y", 2));
        assert!(has_changelog("v1 -> v2:\n- y", 2));
        let patch = "Subject: x\n\nmsg\n\nSigned-off-by: a <b>\n---\nv2: renamed\n\n \
                     net/x.c | 1 +\n 1 file changed, 1 insertion(+)\n\ndiff --git a/x b/x\n";
        assert_eq!(patch_notes(patch).as_deref(), Some("v2: renamed"));
        let bare = patch.replace("v2: renamed\n\n", "");
        assert_eq!(patch_notes(&bare), None);
        assert_eq!(insert_notes(&bare, "v2: renamed"), patch);
        assert!(same_but_commit_line("From a Mon\nx\n", "From b Mon\nx\n"));
        assert!(!same_but_commit_line("From a Mon\nx\n", "From a Mon\ny\n"));
    }

    #[test]
    fn none_and_unknown_variants_have_no_stack() {
        let e = stack(&patches_dir(), "6.12", "none")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no series"), "{e}");
        assert_eq!(
            stack(&patches_dir(), "6.12", "getsockopt").unwrap(),
            ["peek-zerolen", "getsockopt"]
        );
    }
}
