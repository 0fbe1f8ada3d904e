//! Build a kernel from a pinned base, a patch series and config fragments,
//! and boot it in QEMU with a test initramfs.
//!
//! The stages mirror KUnit's tool: [`base`] (the pinned source) →
//! [`tree`] (a git worktree with the series applied) → [`kconfig`]
//! (fragments merged on allnoconfig, then validated) → [`build`] (the
//! kernel, its headers and the kselftest programs) → [`initramfs`] →
//! [`qemu`] (a hard deadline, the console kept) → [`console`] (splats,
//! per-unit output, KTAP). Each stage returns a typed [`Error`] and reports
//! progress through [`events::Events`]: the library prints nothing.
#![deny(missing_docs)]

pub mod arch;
pub mod base;
pub mod build;
pub mod console;
pub mod events;
pub mod initramfs;
pub mod kconfig;
pub mod lock;
pub mod qemu;
pub mod tree;
pub mod vng;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use events::{Event, Events};

/// Why a stage failed. Every variant is an infrastructure failure: the
/// caller maps them all to exit status 2.
#[derive(Debug)]
pub enum Error {
    /// A tool or package is missing, or the base is not the pinned one.
    Setup(String),
    /// A patch of the series does not apply.
    Patch {
        /// The patch file.
        patch: PathBuf,
        /// git's account of the failing hunk.
        detail: String,
    },
    /// Options asked for by the fragments are not in the final `.config`.
    Config {
        /// `CONFIG_X=y (got: not set)` per option.
        missing: Vec<String>,
    },
    /// The kernel or a test program failed to build.
    Build {
        /// What was being built.
        what: String,
        /// The full log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// The guest did not run to the end: QEMU failed, the kernel panicked,
    /// or a splat was seen.
    Boot {
        /// What went wrong.
        reason: String,
        /// The console log, kept.
        console: PathBuf,
    },
    /// The guest ran past its deadline and was killed.
    Timeout {
        /// The deadline.
        after: std::time::Duration,
        /// The console log, kept.
        console: PathBuf,
        /// The test unit that was running, if known.
        running: Option<String>,
    },
    /// An I/O error, with what was being done.
    Io(String, io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Setup(m) => write!(f, "setup: {m}"),
            Error::Patch { patch, detail } => {
                write!(f, "patch {} does not apply:\n{detail}", patch.display())
            }
            Error::Config { missing } => write!(
                f,
                "kernel config: {} requested option(s) missing from the final .config, \
                 probably due to unsatisfied dependencies:\n  {}",
                missing.len(),
                missing.join("\n  ")
            ),
            Error::Build { what, log, tail } => {
                write!(
                    f,
                    "building {what} failed (full log: {}):\n{tail}",
                    log.display()
                )
            }
            Error::Boot { reason, console } => {
                write!(f, "guest: {reason} (console log: {})", console.display())
            }
            Error::Timeout {
                after,
                console,
                running,
            } => {
                write!(f, "guest killed after {}s timeout", after.as_secs())?;
                if let Some(u) = running {
                    write!(f, " while running {u}")?;
                }
                write!(f, " (console log: {})", console.display())
            }
            Error::Io(ctx, e) => write!(f, "{ctx}: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// Result of a stage.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds context to an I/O error.
pub(crate) trait IoCtx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoCtx<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Io(what(), e))
    }
}

/// The cache: pristine bases, variant worktrees with their build
/// directories, ccache, run logs. `$UDP_REPAIR_CACHE`, else
/// `$XDG_CACHE_HOME/udp-repair`, else `~/.cache/udp-repair`.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache from the environment.
    pub fn from_env() -> Self {
        let root = if let Some(p) = std::env::var_os("UDP_REPAIR_CACHE") {
            PathBuf::from(p)
        } else if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
            PathBuf::from(p).join("udp-repair")
        } else {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/udp-repair")
        };
        Self { root }
    }

    /// A cache at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// ccache's directory.
    pub fn ccache(&self) -> PathBuf {
        self.root.join("ccache")
    }

    /// Where the logs of one guest run go.
    pub fn run_dir(&self, label: &str) -> Result<PathBuf> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let dir = self.root.join("runs").join(format!("{stamp}-{label}"));
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }
}

/// Runs a command to completion, returning stdout; a failure carries the
/// command line and its stderr. For short commands (git, dpkg); the long
/// kernel build streams instead (see [`build`]).
pub fn run_quiet(cmd: xshell::Cmd<'_>) -> Result<String> {
    let line = cmd.to_string();
    let out = cmd
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| Error::Setup(format!("{line}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Setup(format!(
            "`{line}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// An xshell shell, for git and the other short commands.
pub(crate) fn shell() -> Result<xshell::Shell> {
    xshell::Shell::new().map_err(|e| Error::Setup(format!("cannot start a shell: {e}")))
}
