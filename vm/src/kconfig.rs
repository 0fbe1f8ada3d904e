//! Kconfig fragments: parsing, merging, and checking that the final
//! `.config` holds every option asked for (KUnit's `is_subset_of`).

use crate::{Error, IoCtx, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options by name (`CONFIG_X`) with their value (`y`, `m`, `n`, a string
/// or number as written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kconfig {
    entries: BTreeMap<String, String>,
}

impl Kconfig {
    /// Parses `CONFIG_X=v` and `# CONFIG_X is not set` lines; other
    /// comments and blank lines are ignored.
    pub fn parse(text: &str) -> Self {
        let mut entries = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("# ") {
                if let Some(name) = rest.strip_suffix(" is not set") {
                    if name.starts_with("CONFIG_") {
                        entries.insert(name.to_string(), "n".to_string());
                    }
                }
            } else if let Some((k, v)) = line.split_once('=') {
                if k.starts_with("CONFIG_") {
                    entries.insert(k.to_string(), v.to_string());
                }
            }
        }
        Self { entries }
    }

    /// Merges `other` into `self`. An option both set to different values
    /// is a conflict, reported by name.
    pub fn merge(&mut self, other: &Kconfig) -> std::result::Result<(), Vec<String>> {
        let conflicts: Vec<String> = other
            .entries
            .iter()
            .filter_map(|(k, v)| match self.entries.get(k) {
                Some(old) if old != v => Some(format!("{k}: {old} vs {v}")),
                _ => None,
            })
            .collect();
        if !conflicts.is_empty() {
            return Err(conflicts);
        }
        self.entries
            .extend(other.entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }

    /// Options of `self` that `full` does not hold with the same value
    /// (`n` matches an absent option), as `CONFIG_X=y (got: not set)`.
    pub fn missing_from(&self, full: &Kconfig) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|(k, want)| {
                let got = full.entries.get(k).map(String::as_str).unwrap_or("n");
                (got != want).then(|| {
                    let shown = if got == "n" { "not set" } else { got };
                    format!("{k}={want} (got: {shown})")
                })
            })
            .collect()
    }

    /// The fragment text, one option a line.
    pub fn render(&self) -> String {
        self.entries
            .iter()
            .map(|(k, v)| {
                if v == "n" {
                    format!("# {k} is not set\n")
                } else {
                    format!("{k}={v}\n")
                }
            })
            .collect()
    }

    /// Number of options.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The named fragments `dir/NAME.config`, merged in order; an unknown name
/// is an error listing the ones there are.
pub fn load_fragments(dir: &Path, names: &[String]) -> Result<Kconfig> {
    let mut merged = Kconfig::default();
    for name in names {
        let path: PathBuf = dir.join(format!("{name}.config"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let known: Vec<String> = std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter_map(|e| {
                            e.file_name()
                                .to_string_lossy()
                                .strip_suffix(".config")
                                .map(String::from)
                        })
                        .collect()
                })
                .unwrap_or_default();
            Error::Setup(format!(
                "config fragment {name} ({}): {e}; fragments: {}",
                path.display(),
                known.join(", ")
            ))
        })?;
        merged.merge(&Kconfig::parse(&text)).map_err(|c| {
            Error::Setup(format!(
                "config fragment {name} conflicts with an earlier one: {}",
                c.join(", ")
            ))
        })?;
    }
    Ok(merged)
}

/// Checks the final `.config` in `build_dir` against what was asked for.
pub fn validate(requested: &Kconfig, build_dir: &Path) -> Result<()> {
    let path = build_dir.join(".config");
    let text = std::fs::read_to_string(&path).ctx(|| format!("reading {}", path.display()))?;
    let missing = requested.missing_from(&Kconfig::parse(&text));
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Config { missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_check_names_what_is_missing() {
        let want =
            Kconfig::parse("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=\"x\"\n");
        let got = Kconfig::parse("CONFIG_A=y\nCONFIG_D=\"x\"\n# CONFIG_C is not set\n");
        assert_eq!(
            want.missing_from(&got),
            vec!["CONFIG_C=y (got: not set)".to_string()]
        );
    }

    #[test]
    fn conflicting_fragments_are_refused() {
        let mut a = Kconfig::parse("CONFIG_A=y\n");
        let e = a
            .merge(&Kconfig::parse("# CONFIG_A is not set\n"))
            .unwrap_err();
        assert_eq!(e, vec!["CONFIG_A: y vs n".to_string()]);
        a.merge(&Kconfig::parse("CONFIG_B=y\n")).unwrap();
        assert_eq!(a.render(), "CONFIG_A=y\nCONFIG_B=y\n");
    }

    #[test]
    fn project_fragments_load() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/configs"));
        let k = load_fragments(dir, &["base".into(), "debug".into()]).unwrap();
        assert!(k.len() > 40);
        let e = load_fragments(dir, &["nope".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("fragments:") && e.contains("base"), "{e}");
    }
}
