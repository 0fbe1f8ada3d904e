//! The pinned kernel base and the system packages the pipeline needs.
//!
//! The base is Debian's `linux-source-6.12` tarball, pinned by package
//! version and digest in `kernel-patches/BASE`. On first use it is
//! imported into a git repository (tag `base`) in the cache, from which
//! every variant gets a worktree.

use crate::{run_quiet, Error, IoCtx, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use xshell::cmd;

/// The pinned base, as `kernel-patches/BASE` states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Debian package shipping the tarball.
    pub package: String,
    /// Exact package version.
    pub version: String,
    /// Where the package puts the tarball.
    pub tarball: PathBuf,
    /// SHA-256 of the tarball, lowercase hex.
    pub sha256: String,
}

impl Pin {
    /// Parses the `key = value` pin file.
    pub fn parse(text: &str) -> Result<Self> {
        let get = |key: &str| -> Result<String> {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
                .ok_or_else(|| Error::Setup(format!("kernel-patches/BASE: no `{key} =` line")))
        };
        Ok(Self {
            package: get("package")?,
            version: get("version")?,
            tarball: PathBuf::from(get("tarball")?),
            sha256: get("sha256")?.to_ascii_lowercase(),
        })
    }

    /// Reads the pin file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).ctx(|| format!("reading {}", path.display()))?;
        Self::parse(&text)
    }

    /// The base's directory name in the cache.
    pub fn id(&self) -> &str {
        &self.version
    }
}

/// A command the pipeline runs, and the Debian package providing it (the
/// guest architecture's QEMU comes from [`crate::arch`]).
const TOOLS: &[(&str, &str)] = &[
    ("make", "make"),
    ("gcc", "gcc"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("ccache", "ccache"),
    ("git", "git"),
    // headers_install copies the uapi headers with rsync.
    ("rsync", "rsync"),
    ("xz", "xz-utils"),
    ("protoc", "protobuf-compiler"),
];

/// Files the pipeline needs, and the package providing each (those of the
/// guest architecture come from [`crate::arch`]).
const FILES: &[(&str, &str)] = &[
    ("/bin/busybox", "busybox-static"),
    ("/usr/include/libelf.h", "libelf-dev"),
    ("/usr/include/openssl/ssl.h", "libssl-dev"),
];

/// Packages missing from this machine, for the tools and the pinned base.
pub fn missing_packages(pin: &Pin) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    let mut add = |p: String| {
        if !missing.contains(&p) {
            missing.push(p);
        }
    };
    for (tool, pkg) in TOOLS {
        if which(tool).is_none() {
            add(pkg.to_string());
        }
    }
    for (file, pkg) in FILES {
        if !Path::new(file).exists() {
            add(pkg.to_string());
        }
    }
    // The guest architecture's emulator and static libc (vm/src/arch.rs).
    if let Ok(a) = crate::arch::guest() {
        if which(a.qemu).is_none() {
            add(a.qemu_package.to_string());
        }
        if !Path::new(a.libc_static.0).exists() {
            add(a.libc_static.1.to_string());
        }
    }
    if installed_version(&pin.package).as_deref() != Some(pin.version.as_str()) {
        add(format!("{}={}", pin.package, pin.version));
    }
    missing
}

/// The version of an installed Debian package.
fn installed_version(package: &str) -> Option<String> {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Status} ${Version}", package])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.strip_prefix("install ok installed ")
        .map(|v| v.trim().to_string())
}

/// The first `tool` on `$PATH`.
pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Makes sure the packages are there: installs them with apt-get when
/// running as root on Debian, else says exactly what to run.
pub fn ensure_packages(pin: &Pin, events: &crate::Events) -> Result<()> {
    let missing = missing_packages(pin);
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!(
        "apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    let is_root = rustix::process::geteuid().is_root();
    if !is_root || which("apt-get").is_none() {
        return Err(Error::Setup(format!(
            "missing packages: {}\nInstall them as root on Debian 12: apt-get update && {command}",
            missing.join(", ")
        )));
    }
    events.emit(crate::Event::Installing(&missing));
    let sh = crate::shell()?;
    // An old package list may not have the pinned version yet.
    run_quiet(cmd!(sh, "apt-get update -q"))?;
    run_quiet(
        cmd!(
            sh,
            "apt-get install -y -q --no-install-recommends {missing...}"
        )
        .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still = missing_packages(pin);
    if !still.is_empty() {
        return Err(Error::Setup(format!(
            "still missing after apt-get install: {}",
            still.join(", ")
        )));
    }
    Ok(())
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .ctx(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The git repository holding the pristine base, tagged `base`; imported
/// from the tarball on first use (after checking its digest).
pub fn ensure_base_repo(
    pin: &Pin,
    cache: &crate::Cache,
    events: &crate::Events,
) -> Result<PathBuf> {
    let dir = cache.root().join("src").join(pin.id());
    let git = dir.join("git");
    let ready = git.join(".git/udp-repair-ready");
    if ready.exists() {
        return Ok(git);
    }
    let digest = sha256_file(&pin.tarball)?;
    if digest != pin.sha256 {
        return Err(Error::Setup(format!(
            "{} has sha256 {digest}, but kernel-patches/BASE pins {}: not the pinned base",
            pin.tarball.display(),
            pin.sha256
        )));
    }
    events.emit(crate::Event::Importing {
        tarball: &pin.tarball,
        git: &git,
    });
    let tmp = dir.join("import.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).ctx(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    let sh = crate::shell()?;
    let tarball = &pin.tarball;
    run_quiet(cmd!(sh, "tar -xf {tarball} -C {tmp}"))?;
    let top = std::fs::read_dir(&tmp)
        .ctx(|| format!("reading {}", tmp.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .ok_or_else(|| Error::Setup(format!("{} holds no directory", tarball.display())))?;
    if git.exists() {
        std::fs::remove_dir_all(&git).ctx(|| format!("removing {}", git.display()))?;
    }
    std::fs::rename(&top, &git).ctx(|| format!("moving the source to {}", git.display()))?;
    let _ = std::fs::remove_dir_all(&tmp);
    let msg = format!("{} {}", pin.package, pin.version);
    sh.change_dir(&git);
    run_quiet(cmd!(sh, "git init -q -b base ."))?;
    // Debian's top-level .gitignore ignores everything at the top level
    // (its packaging repository does not carry the source): force.
    run_quiet(cmd!(sh, "git add -A -f"))?;
    run_quiet(cmd!(
        sh,
        "git -c user.name=udp-repair -c user.email=udp-repair@localhost commit -q -m {msg}"
    ))?;
    run_quiet(cmd!(sh, "git tag base"))?;
    std::fs::write(&ready, &msg).ctx(|| format!("writing {}", ready.display()))?;
    Ok(git)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_pin_file() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../kernel-patches/BASE"
        ))
        .unwrap();
        let pin = Pin::parse(&text).unwrap();
        assert_eq!(pin.package, "linux-source-6.12");
        assert_eq!(pin.sha256.len(), 64);
    }

    #[test]
    fn a_missing_key_is_named() {
        let e = Pin::parse("package = x\nversion = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tarball"), "{e}");
    }
}
