//! Kernel trees: a git worktree per variant with its series applied, or a
//! user's own tree built as it is.

use crate::base::{hex, Pin};
use crate::{run_quiet, Cache, Error, IoCtx, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

/// A patch series: `kernel-patches/NAME/*.patch` in order, the cover
/// letter (`0000-cover-letter.patch`) left out.
#[derive(Debug, Clone)]
pub struct Series {
    /// The variant's name (`none` for the unpatched base).
    pub name: String,
    /// The patches, in order.
    pub patches: Vec<PathBuf>,
}

impl Series {
    /// The unpatched base.
    pub fn none() -> Self {
        Self {
            name: "none".into(),
            patches: Vec::new(),
        }
    }

    /// Loads `dir/NAME`; `none` is the empty series.
    pub fn load(patches_dir: &Path, name: &str) -> Result<Self> {
        if name == "none" {
            return Ok(Self::none());
        }
        let dir = patches_dir.join(name);
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            Error::Setup(format!(
                "variant {name}: cannot read {}: {e} (variants: {})",
                dir.display(),
                variants(patches_dir).join(", ")
            ))
        })?;
        let mut patches: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "patch"))
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|f| f.to_string_lossy().contains("cover-letter"))
            })
            .collect();
        patches.sort();
        if patches.is_empty() {
            return Err(Error::Setup(format!(
                "variant {name}: no patches in {}",
                dir.display()
            )));
        }
        Ok(Self {
            name: name.into(),
            patches,
        })
    }

    /// Digest of the series' content: a changed patch changes it.
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

/// The variants present: `none` and every directory of `kernel-patches/`
/// holding patches.
pub fn variants(patches_dir: &Path) -> Vec<String> {
    let mut v = vec!["none".to_string()];
    let mut dirs: Vec<String> = std::fs::read_dir(patches_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter(|e| Series::load(patches_dir, &e.file_name().to_string_lossy()).is_ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    v.extend(dirs);
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

/// The worktree of `series` on the pinned base, with the series applied.
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
    for patch in &series.patches {
        let applied = run_quiet(
            cmd!(sh, "git -c user.name=udp-repair -c user.email=udp-repair@localhost am -q --keep-cr {patch}")
                .env("GIT_COMMITTER_DATE", "2000-01-01T00:00:00Z"),
        );
        if let Err(Error::Setup(am_err)) = applied {
            let _ = run_quiet(cmd!(sh, "git am --abort"));
            return Err(Error::Patch {
                patch: patch.clone(),
                detail: failing_hunk(&sh, patch, &am_err),
            });
        }
        applied?;
    }
    std::fs::write(&stamp, &digest).ctx(|| format!("writing {}", stamp.display()))?;
    Ok(Tree {
        src: wt,
        owned: true,
        label: series.name.clone(),
    })
}

/// git's verbose account of where `patch` fails: the hunk it searched for
/// and the file and line.
fn failing_hunk(sh: &Shell, patch: &Path, am_err: &str) -> String {
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

/// A user's tree, built out of tree and never written to. It must be clean
/// for an `O=` build.
pub fn user_tree(path: &Path) -> Result<Tree> {
    let src = path
        .canonicalize()
        .ctx(|| format!("kernel tree {}", path.display()))?;
    if !src.join("Makefile").exists() || !src.join("net/ipv4/udp.c").exists() {
        return Err(Error::Setup(format!(
            "{} is not a Linux source tree",
            src.display()
        )));
    }
    if src.join(".config").exists() || src.join("include/config").exists() {
        return Err(Error::Setup(format!(
            "{} has an in-tree build (.config); out-of-tree builds need a clean tree: \
             run `make mrproper` there yourself (the harness never cleans your tree)",
            src.display()
        )));
    }
    Ok(Tree {
        src,
        owned: false,
        label: "tree".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_empty_and_unknown_variants_are_named() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../kernel-patches"));
        assert!(Series::load(dir, "none").unwrap().patches.is_empty());
        let e = Series::load(dir, "no-such-variant")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no-such-variant") && e.contains("variants: none"),
            "{e}"
        );
    }
}
