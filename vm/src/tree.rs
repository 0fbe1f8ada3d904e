//! Kernel trees: a git worktree per variant with its series applied, or a
//! user's own tree built as it is.

use crate::base::{hex, Pin};
use crate::{run_quiet, Cache, Error, IoCtx, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

/// A variant's patches on one base: the series `kernel-patches/VARIANTS`
/// stacks for it, each from `kernel-patches/SERIES/BASE/*.patch` in order,
/// the cover letters (`0000-cover-letter.patch`) left out.
#[derive(Debug, Clone)]
pub struct Series {
    /// The variant's name (`none` for the unpatched base).
    pub name: String,
    /// The series directories stacked, in order (`SERIES/BASE`).
    pub parts: Vec<PathBuf>,
    /// The patches, in order.
    pub patches: Vec<PathBuf>,
}

impl Series {
    /// The unpatched base.
    pub fn none() -> Self {
        Self {
            name: "none".into(),
            parts: Vec::new(),
            patches: Vec::new(),
        }
    }

    /// Loads variant `name` for base `base` (its series from
    /// `patches_dir/VARIANTS`); `none` is the empty series. An unknown
    /// variant, or a series with no patches for the base, is refused by
    /// name.
    pub fn load(patches_dir: &Path, name: &str, base: &str) -> Result<Self> {
        if name == "none" {
            return Ok(Self::none());
        }
        let stack = stacks(patches_dir)?
            .into_iter()
            .find(|(v, _)| v == name)
            .map(|(_, s)| s)
            .ok_or_else(|| {
                Error::Setup(format!(
                    "no variant {name} in {} (variants: {})",
                    patches_dir.join("VARIANTS").display(),
                    variants(patches_dir).join(", ")
                ))
            })?;
        let mut out = Self {
            name: name.into(),
            parts: Vec::new(),
            patches: Vec::new(),
        };
        for series in stack {
            let dir = patches_dir.join(&series).join(base);
            let mut patches = patch_files(&dir).map_err(|e| {
                Error::Setup(format!(
                    "variant {name}: series {series} has no patches for base {base}: \
                     cannot read {}: {e}",
                    dir.display()
                ))
            })?;
            if patches.is_empty() {
                return Err(Error::Setup(format!(
                    "variant {name}: series {series} has no patches for base {base} in {}",
                    dir.display()
                )));
            }
            out.patches.append(&mut patches);
            out.parts.push(dir);
        }
        Ok(out)
    }

    /// Digest of the series' content on `pin`: a changed patch changes it.
    pub fn digest(&self, pin: &Pin) -> Result<String> {
        let mut h = Sha256::new();
        h.update(pin.sha256.as_bytes());
        for p in &self.patches {
            let bytes = std::fs::read(p).ctx(|| format!("reading {}", p.display()))?;
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
        Ok(hex(&h.finalize()))
    }
}

/// The `NNNN-*.patch` files of `dir` in order, its cover letter left out.
pub fn patch_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut patches: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|f| f.to_string_lossy().contains("cover-letter"))
        })
        .collect();
    patches.sort();
    Ok(patches)
}

/// `patches_dir/VARIANTS` as (variant, series stacked in order), in the
/// file's order. Errors: the file unreadable, or a line that is not
/// `VARIANT = SERIES...` (named with its number).
pub fn stacks(patches_dir: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let path = patches_dir.join("VARIANTS");
    let text = std::fs::read_to_string(&path).ctx(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (variant, series) = line
            .split_once('=')
            .map(|(v, s)| (v.trim(), s.split_whitespace().map(String::from).collect()))
            .filter(|(v, s): &(&str, Vec<String>)| {
                !v.is_empty() && *v != "none" && *v != "all" && !s.is_empty()
            })
            .ok_or_else(|| {
                Error::Setup(format!(
                    "{} line {}: not `VARIANT = SERIES...`: {line}",
                    path.display(),
                    n + 1
                ))
            })?;
        out.push((variant.to_string(), series));
    }
    Ok(out)
}

/// The variants: `none`, then those `kernel-patches/VARIANTS` names, in
/// its order.
pub fn variants(patches_dir: &Path) -> Vec<String> {
    let mut v = vec!["none".to_string()];
    v.extend(
        stacks(patches_dir)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, _)| name),
    );
    v
}

/// A kernel source tree ready to build.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The source.
    pub src: PathBuf,
    /// Whether the project owns it (a variant worktree) or a user does.
    pub owned: bool,
    /// Label for logs and reports: the variant, or `tree`.
    pub label: String,
}

/// The worktree of `series` on the pinned base `pin` (imported at
/// `base_git`), with the series applied.
///
/// The worktree is reused: when the series changed since it was applied,
/// the tree is reset to the base and the series applied again. git only
/// rewrites files whose content differs, so the build that follows is
/// incremental.
pub fn prepare(cache: &Cache, pin: &Pin, base_git: &Path, series: &Series) -> Result<Tree> {
    let trees = cache.root().join("src").join(pin.id()).join("trees");
    let wt = trees.join(&series.name);
    let stamp = trees.join(format!("{}.series", series.name));
    let sh = crate::shell()?;
    if !wt.join("Makefile").exists() {
        std::fs::create_dir_all(&trees).ctx(|| format!("creating {}", trees.display()))?;
        sh.change_dir(base_git);
        let _ = run_quiet(cmd!(sh, "git worktree prune"));
        run_quiet(cmd!(sh, "git worktree add -q --detach {wt} refs/tags/base"))?;
        let _ = std::fs::remove_file(&stamp);
    }
    let digest = series.digest(pin)?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(digest.as_str()) {
        return Ok(Tree {
            src: wt,
            owned: true,
            label: series.name.clone(),
        });
    }
    let _ = std::fs::remove_file(&stamp);
    sh.change_dir(&wt);
    let _ = run_quiet(cmd!(sh, "git am --abort"));
    run_quiet(cmd!(sh, "git reset -q --hard refs/tags/base"))?;
    apply_series(&sh, series)?;
    std::fs::write(&stamp, &digest).ctx(|| format!("writing {}", stamp.display()))?;
    Ok(Tree {
        src: wt,
        owned: true,
        label: series.name.clone(),
    })
}

/// git's verbose account of where `patch` fails: the hunk it searched for
/// and the file and line.
pub fn failing_hunk(sh: &Shell, patch: &Path, am_err: &str) -> String {
    let out = cmd!(sh, "git apply --check -v {patch}")
        .quiet()
        .ignore_status()
        .output();
    let text = match out {
        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Err(_) => String::new(),
    };
    let interesting: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("error:"))
        .take(40)
        .collect();
    if interesting.is_empty() {
        am_err.trim().to_string()
    } else {
        interesting.join("\n")
    }
}

/// `path`, made absolute, if it is a Linux source tree (a top `Makefile`
/// and `net/ipv4/udp.c`).
fn linux_src(path: &Path) -> Result<PathBuf> {
    let src = path
        .canonicalize()
        .ctx(|| format!("kernel tree {}", path.display()))?;
    if !src.join("Makefile").exists() || !src.join("net/ipv4/udp.c").exists() {
        return Err(Error::Setup(format!(
            "{} is not a Linux source tree",
            src.display()
        )));
    }
    Ok(src)
}

/// A user's tree, built out of tree and never written to. It must be clean
/// for an `O=` build.
pub fn user_tree(path: &Path) -> Result<Tree> {
    let src = linux_src(path)?;
    if src.join(".config").exists() || src.join("include/config").exists() {
        return Err(Error::Setup(format!(
            "{} has an in-tree build (.config); out-of-tree builds need a clean tree: \
             run `make mrproper` there yourself (the harness never cleans your tree)",
            src.display()
        )));
    }
    let label = describe(&src).unwrap_or_else(|| "tree".into());
    Ok(Tree {
        src,
        owned: false,
        label,
    })
}

/// `git describe --tags --always` of a git tree (`None` where `src` is
/// not the top of a git work tree), made safe as a file-name part.
pub fn describe(src: &Path) -> Option<String> {
    let sh = crate::shell().ok()?;
    sh.change_dir(src);
    let top = cmd!(sh, "git rev-parse --show-toplevel")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()?;
    if Path::new(top.trim()).canonicalize().ok()? != src.canonicalize().ok()? {
        return None;
    }
    let d = cmd!(sh, "git describe --tags --always")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()?;
    Some(
        d.trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    )
}

/// A user's tree with `series` applied, never writing into the user's
/// repository: a `git clone --shared` of it (its objects borrowed through
/// `alternates`) at its `HEAD`, one per variant, in
/// `CACHE/user-trees/<digest of the path>/<variant>`, the series applied
/// with `git am` and reused while neither the series nor the tree's
/// `HEAD` changes. Uncommitted changes of the user's tree are not in the
/// clone (said on stderr). A tree without git is copied once into
/// `CACHE/user-trees/<digest>/source` and imported as one commit (later
/// changes to it are not seen: remove that directory to copy it again).
/// Labelled `<git describe>+<variant>` (`tree+<variant>` without git).
/// Errors: not a Linux tree; a patch that does not apply names the patch
/// and the failing hunk ([`Error::Patch`]).
pub fn user_tree_with_series(cache: &Cache, path: &Path, series: &Series) -> Result<Tree> {
    let src = linux_src(path)?;
    let key = hex(&Sha256::digest(src.as_os_str().as_encoded_bytes()));
    let root = cache.root().join("user-trees").join(&key[..12]);
    std::fs::create_dir_all(&root).ctx(|| format!("creating {}", root.display()))?;
    let sh = crate::shell()?;
    let (origin, described) = match describe(&src) {
        Some(d) => {
            sh.change_dir(&src);
            let dirty = cmd!(sh, "git status --porcelain --untracked-files=no")
                .quiet()
                .read()
                .unwrap_or_default();
            if !dirty.trim().is_empty() {
                eprintln!(
                    "udp-repair: {} has uncommitted changes; the series is applied to its                      HEAD ({d}) without them",
                    src.display()
                );
            }
            (src.clone(), d)
        }
        None => {
            let copy = root.join("source");
            if !copy.join(".git/udp-repair-ready").exists() {
                let tmp = root.join("source.tmp");
                let _ = std::fs::remove_dir_all(&tmp);
                std::fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
                sh.change_dir(&root);
                let from = src.join(".");
                run_quiet(cmd!(sh, "cp -a {from} {tmp}"))?;
                sh.change_dir(&tmp);
                run_quiet(cmd!(sh, "git init -q -b base ."))?;
                run_quiet(cmd!(sh, "git add -A -f"))?;
                let msg = format!("{} (copied, no git)", src.display());
                run_quiet(cmd!(
                    sh,
                    "git -c user.name=udp-repair -c user.email=udp-repair@localhost commit -q -m {msg}"
                ))?;
                let _ = std::fs::remove_dir_all(&copy);
                std::fs::rename(&tmp, &copy).ctx(|| format!("moving to {}", copy.display()))?;
                std::fs::write(copy.join(".git/udp-repair-ready"), &msg)
                    .ctx(|| format!("writing {}", copy.display()))?;
            }
            (copy, "tree".to_string())
        }
    };
    sh.change_dir(&origin);
    let head = run_quiet(cmd!(sh, "git rev-parse HEAD"))?
        .trim()
        .to_string();
    let wt = root.join(&series.name);
    let stamp = root.join(format!("{}.series", series.name));
    if !wt.join(".git").exists() {
        let _ = std::fs::remove_file(&stamp);
        run_quiet(cmd!(
            sh,
            "git clone -q --shared --no-checkout {origin} {wt}"
        ))?;
    }
    let mut h = Sha256::new();
    h.update(head.as_bytes());
    for p in &series.patches {
        let bytes = std::fs::read(p).ctx(|| format!("reading {}", p.display()))?;
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let digest = hex(&h.finalize());
    let tree = Tree {
        src: wt.clone(),
        owned: true,
        label: format!("{described}+{}", series.name),
    };
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(digest.as_str()) {
        return Ok(tree);
    }
    let _ = std::fs::remove_file(&stamp);
    sh.change_dir(&wt);
    let _ = run_quiet(cmd!(sh, "git am --abort"));
    // The user's HEAD may be newer than the clone's refs: its objects are
    // reachable through alternates.
    run_quiet(cmd!(sh, "git checkout -q --detach -f {head}"))?;
    run_quiet(cmd!(sh, "git reset -q --hard {head}"))?;
    run_quiet(cmd!(sh, "git tag -f base {head}"))?;
    apply_series(&sh, series)?;
    std::fs::write(&stamp, &digest).ctx(|| format!("writing {}", stamp.display()))?;
    Ok(tree)
}

/// `git am` of each patch of `series` in the shell's directory; a patch
/// that does not apply is [`Error::Patch`], with git's account of the
/// failing hunk, and the `am` is aborted.
fn apply_series(sh: &Shell, series: &Series) -> Result<()> {
    for patch in &series.patches {
        let applied = run_quiet(
            cmd!(sh, "git -c user.name=udp-repair -c user.email=udp-repair@localhost am -q --keep-cr {patch}")
                .env("GIT_COMMITTER_DATE", "2000-01-01T00:00:00Z"),
        );
        if let Err(Error::Setup(am_err)) = applied {
            let _ = run_quiet(cmd!(sh, "git am --abort"));
            return Err(Error::Patch {
                patch: patch.clone(),
                detail: failing_hunk(sh, patch, &am_err),
            });
        }
        applied?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../kernel-patches"))
    }

    #[test]
    fn none_is_empty_and_unknown_variants_are_named() {
        assert!(Series::load(dir(), "none", "6.12")
            .unwrap()
            .patches
            .is_empty());
        let e = Series::load(dir(), "no-such-variant", "6.12")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no-such-variant")
                && e.contains("variants: none, getsockopt, recvmsg, pending-lost"),
            "{e}"
        );
        let e = Series::load(dir(), "recvmsg", "5.4")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no patches for base 5.4"), "{e}");
    }

    #[test]
    fn every_variant_exists_on_every_base_and_stacks_in_order() {
        for base in crate::base::names(dir()) {
            for v in variants(dir()) {
                let s = Series::load(dir(), &v, &base).unwrap();
                assert_eq!(s.patches.is_empty(), v == "none", "{v} on {base}");
            }
            let g = Series::load(dir(), "getsockopt", &base).unwrap();
            assert!(
                g.parts[0].ends_with(format!("peek-zerolen/{base}")),
                "{g:?}"
            );
            assert!(g.parts[1].ends_with(format!("getsockopt/{base}")), "{g:?}");
        }
    }
}
