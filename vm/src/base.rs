//! The pinned kernel bases and the system packages the pipeline needs.
//!
//! A base is a named kernel source tarball pinned by digest in
//! `kernel-patches/bases/NAME`: either a Debian source package's tarball
//! (`package =` and `version =`: the embedded default, Debian's
//! `linux-source-6.12`, which apt installs) or a tarball the project was
//! given (mainline 7.1.5 in `../shared/bases/`). On first use it is
//! imported into a git repository (tag `base`) in the cache, from which
//! every variant gets a worktree.

use crate::{run_quiet, Error, IoCtx, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use xshell::cmd;

/// The base the README's two commands use when no `--base` is given.
pub const DEFAULT: &str = "6.12";

/// A pinned base, as `kernel-patches/bases/NAME` states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The base's name (`6.12`, `7.1`): the file's name, `--base`'s value
    /// and the subdirectory of each series directory holding its patches.
    pub name: String,
    /// The Debian package shipping the tarball, for a Debian base; `None`
    /// for a tarball the project was given.
    pub package: Option<String>,
    /// The exact version: the package's, or the kernel's for a tarball.
    pub version: String,
    /// The tarball; a relative `tarball =` is taken from the project root.
    pub tarball: PathBuf,
    /// SHA-256 of the tarball, lowercase hex.
    pub sha256: String,
}

impl Pin {
    /// Parses the `key = value` pin file of base `name`; a relative
    /// tarball path is resolved against `root`.
    pub fn parse(name: &str, text: &str, root: &Path) -> Result<Self> {
        let find = |key: &str| -> Option<String> {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        };
        let get = |key: &str| -> Result<String> {
            find(key).ok_or_else(|| {
                Error::Setup(format!("kernel-patches/bases/{name}: no `{key} =` line"))
            })
        };
        let sha256 = get("sha256")?.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Setup(format!(
                "kernel-patches/bases/{name}: sha256 is not 64 hex digits"
            )));
        }
        Ok(Self {
            name: name.to_string(),
            package: find("package"),
            version: get("version")?,
            tarball: root.join(get("tarball")?),
            sha256,
        })
    }

    /// Reads base `name`'s pin from `patches_dir/bases/` (the project
    /// root is `patches_dir`'s parent). An unknown name is refused with
    /// the list of bases.
    pub fn load(patches_dir: &Path, name: &str) -> Result<Self> {
        let path = patches_dir.join("bases").join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::Setup(format!(
                "base {name}: cannot read {}: {e} (bases: {})",
                path.display(),
                names(patches_dir).join(", ")
            ))
        })?;
        let root = patches_dir.parent().unwrap_or(Path::new("."));
        Self::parse(name, &text, root)
    }

    /// The base's directory name in the cache: its version.
    pub fn id(&self) -> &str {
        &self.version
    }
}

/// The bases `patches_dir/bases/` pins, the default first, then by name.
pub fn names(patches_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(patches_dir.join("bases"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && !n.ends_with(".md"))
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|n| (n != DEFAULT, n.clone()));
    v
}

/// Where Debian's codespell package keeps its dictionary: checkpatch's
/// default path is not it, and without it `--codespell` checks nothing.
pub const CODESPELL_DICT: &str = "/usr/lib/python3/dist-packages/codespell_lib/data/dictionary.txt";

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
    // `patches check`: the uapi headers alone as C++; kernel-doc is Perl
    // on 6.12 and Python on 7.1.
    ("g++", "g++"),
    ("perl", "perl"),
    ("python3", "python3"),
];

/// Files the pipeline needs, and the package providing each (those of the
/// guest architecture come from [`crate::arch`]).
const FILES: &[(&str, &str)] = &[
    ("/bin/busybox", "busybox-static"),
    ("/usr/include/libelf.h", "libelf-dev"),
    ("/usr/include/openssl/ssl.h", "libssl-dev"),
    // checkpatch --codespell reads this dictionary (harness/src/patches.rs);
    // without it the spelling check would be skipped in silence.
    (CODESPELL_DICT, "codespell"),
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
        if let Some((libc, packages)) = a.compat {
            for p in packages {
                if !Path::new(libc).exists() || installed_version(p).is_none() {
                    add(p.to_string());
                }
            }
        }
    }
    if let Some(package) = &pin.package {
        if installed_version(package).as_deref() != Some(pin.version.as_str()) {
            add(format!("{package}={}", pin.version));
        }
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
/// from the tarball on first use (after checking its digest), by one
/// process at a time (`import.lock` beside it: others wait, then use it).
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
    if !pin.tarball.is_file() {
        return Err(Error::Setup(format!(
            "base {}: its tarball {} is not on this machine (kernel-patches/bases/{} pins it; \
             ../shared/bases/README.md says where it comes from)",
            pin.name,
            pin.tarball.display(),
            pin.name
        )));
    }
    // One import at a time per base: a second process (or test thread)
    // waits here, then finds the import done.
    std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let _lock = crate::lock::FileLock::exclusive(&dir.join("import.lock"), events)?;
    if ready.exists() {
        return Ok(git);
    }
    let digest = sha256_file(&pin.tarball)?;
    if digest != pin.sha256 {
        return Err(Error::Setup(format!(
            "{} has sha256 {digest}, but kernel-patches/bases/{} pins {}: not the pinned base",
            pin.tarball.display(),
            pin.name,
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
    let msg = match &pin.package {
        Some(package) => format!("{package} {}", pin.version),
        None => format!("Linux {} (base {})", pin.version, pin.name),
    };
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

    fn patches_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-patches")
    }

    #[test]
    fn parses_the_pin_files() {
        let pin = Pin::load(&patches_dir(), DEFAULT).unwrap();
        assert_eq!(pin.package.as_deref(), Some("linux-source-6.12"));
        assert_eq!(pin.sha256.len(), 64);
        let mainline = Pin::load(&patches_dir(), "7.1").unwrap();
        assert_eq!(
            (mainline.package, mainline.version.as_str()),
            (None, "7.1.5")
        );
        assert!(mainline
            .tarball
            .ends_with("shared/bases/linux-7.1.5.tar.xz"));
        assert_eq!(names(&patches_dir()), ["6.12", "7.1"]);
    }

    /// Four first uses at once of one base, on an empty cache: each gets
    /// the repository, imported once (before the lock, a second import
    /// removed the first's import.tmp under it).
    #[test]
    fn concurrent_first_imports_all_get_one_repository() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path();
        let src = tmp.join("linux-0.1");
        std::fs::create_dir_all(src.join("net")).unwrap();
        for i in 0..200 {
            std::fs::write(
                src.join("net").join(format!("f{i}.c")),
                format!("int f{i};\n"),
            )
            .unwrap();
        }
        let tarball = tmp.join("linux-0.1.tar");
        let ok = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&tarball)
            .arg("-C")
            .arg(tmp)
            .arg("linux-0.1")
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let pin = Pin {
            name: "t".into(),
            package: None,
            version: "0.1".into(),
            sha256: sha256_file(&tarball).unwrap(),
            tarball,
        };
        let cache = crate::Cache::at(tmp.join("cache"));
        let got: Vec<Result<PathBuf>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| ensure_base_repo(&pin, &cache, &crate::Events::none())))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let git = got[0].as_ref().unwrap().clone();
        for g in &got {
            assert_eq!(g.as_ref().unwrap(), &git);
        }
        assert!(git.join("net/f199.c").is_file());
        assert!(git.join(".git/udp-repair-ready").is_file());
    }

    #[test]
    fn a_missing_key_or_base_is_named() {
        let e = Pin::parse("x", "package = x\nversion = 1\n", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256"), "{e}");
        let e = Pin::parse(
            "x",
            "version = 1\ntarball = t\nsha256 = 12\n",
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        let e = Pin::load(&patches_dir(), "5.4").unwrap_err().to_string();
        assert!(
            e.contains("base 5.4") && e.contains("bases: 6.12, 7.1"),
            "{e}"
        );
    }
}
