//! The kernel build: configuration, `make` with progress, headers, and the
//! kselftest programs of the tree.
//!
//! A variant's build directory sits one level inside its worktree, where
//! kbuild uses the relative `srctree := ..`: every compiler command is then
//! the same in every variant's tree, so ccache serves one variant's objects
//! to the next and a first build of a new variant costs little more than
//! an incremental one.

use crate::kconfig::{self, Kconfig};
use crate::tree::Tree;
use crate::{Cache, Error, IoCtx, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What to build.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The source tree.
    pub tree: &'a Tree,
    /// Fragment names, in merge order (`base`, `debug`).
    pub configs: Vec<String>,
    /// Where the fragments live.
    pub configs_dir: PathBuf,
    /// `make -j`.
    pub jobs: usize,
    /// Where progress and make's output go.
    pub events: crate::Events,
    /// Compile through ccache (off: a true cold build, for benchmarks).
    pub ccache: bool,
    /// Build directory name inside an owned tree, instead of the default
    /// `_build+<configs>` (a scratch directory for benchmarks).
    pub dir_name: Option<String>,
}

/// A built kernel.
#[derive(Debug, Clone)]
pub struct Built {
    /// The `O=` directory.
    pub dir: PathBuf,
    /// The bootable image (`arch/x86/boot/bzImage`: [`crate::arch`]).
    pub bzimage: PathBuf,
    /// The sanitised uapi headers (`usr/include`).
    pub headers: PathBuf,
    /// `uname -r` of the kernel.
    pub release: String,
    /// Wall time of the make run.
    pub elapsed: Duration,
    /// Number of kbuild steps make ran (0: nothing to do).
    pub steps: usize,
}

/// The build directory of a tree and config set.
pub fn build_dir(cache: &Cache, tree: &Tree, configs: &[String]) -> PathBuf {
    let name = format!("_build+{}", configs.join("+"));
    if tree.owned {
        tree.src.join(name)
    } else {
        use sha2::{Digest, Sha256};
        let h = crate::base::hex(&Sha256::digest(tree.src.as_os_str().as_encoded_bytes()));
        cache
            .root()
            .join("build")
            .join(format!("tree-{}{}", &h[..12], &name[6..]))
    }
}

/// An exclusive lock held for the duration of a kernel build: two builds
/// at once on a small machine make both slow.
#[derive(Debug)]
pub struct BuildLock(#[allow(dead_code)] crate::lock::FileLock);

impl BuildLock {
    /// Takes the machine-wide build lock (`$UDP_REPAIR_BUILD_LOCK`, else
    /// `build.lock` in the cache), waiting for it.
    pub fn take(cache: &Cache, events: &crate::Events) -> Result<Self> {
        std::fs::create_dir_all(cache.root())
            .ctx(|| format!("creating {}", cache.root().display()))?;
        let path = std::env::var_os("UDP_REPAIR_BUILD_LOCK")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache.root().join("build.lock"));
        crate::lock::FileLock::exclusive(&path, events).map(Self)
    }
}

fn make_cmd(cache: &Cache, tree: &Tree, dir: &Path, arch: &crate::arch::Arch) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(&tree.src)
        .arg(format!("O={}", dir.display()))
        // The guest's, which is the host's: kbuild's own default, said.
        .arg(format!("ARCH={}", arch.kernel_arch));
    c.env("CCACHE_DIR", cache.ccache())
        .env("CCACHE_BASEDIR", cache.root())
        .env("CCACHE_NOHASHDIR", "1")
        .env("CCACHE_MAXSIZE", "5G")
        // Reproducible version strings: a rebuild does not recompile
        // init/version.o just because time passed.
        .env("KBUILD_BUILD_TIMESTAMP", "2000-01-01")
        .env("KBUILD_BUILD_USER", "udp-repair")
        .env("KBUILD_BUILD_HOST", "udp-repair")
        .env_remove("ARCH")
        .env_remove("CROSS_COMPILE");
    c
}

/// Configures (only when the fragments changed), validates and builds the
/// kernel and its headers. Holds the build lock throughout.
pub fn build(cache: &Cache, req: &Request<'_>) -> Result<Built> {
    let requested = kconfig::load_fragments(&req.configs_dir, &req.configs)?;
    let dir = match (&req.dir_name, req.tree.owned) {
        (Some(name), true) => req.tree.src.join(name),
        _ => build_dir(cache, req.tree, &req.configs),
    };
    std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let arch = crate::arch::guest()?;
    let _lock = BuildLock::take(cache, &req.events)?;
    configure(cache, req.tree, &dir, &requested, arch)?;
    let cc = if req.ccache {
        "CC=ccache gcc"
    } else {
        "CC=gcc"
    };

    let log_path = dir.join("make.log");
    let mut log =
        std::fs::File::create(&log_path).ctx(|| format!("creating {}", log_path.display()))?;
    let mut cmd = make_cmd(cache, req.tree, &dir, arch);
    cmd.arg(format!("-j{}", req.jobs.max(1)))
        .arg(cc)
        .arg(arch.image_target)
        .arg("headers_install");
    let estimate = std::fs::read_to_string(dir.join("udp-repair.full-steps"))
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    let cold = !dir.join("vmlinux").exists();
    let start = Instant::now();
    let (steps, ok) = stream(
        cmd,
        &mut log,
        if cold {
            estimate.or(Some(COLD_STEPS))
        } else {
            None
        },
        &req.events,
    )
    .ctx(|| "running make".into())?;
    let elapsed = start.elapsed();
    if !ok {
        return Err(Error::Build {
            what: format!("kernel ({})", req.tree.label),
            tail: tail(&log_path, 30),
            log: log_path,
        });
    }
    if cold {
        let _ = std::fs::write(dir.join("udp-repair.full-steps"), steps.to_string());
    }
    let release_path = dir.join("include/config/kernel.release");
    let release = std::fs::read_to_string(&release_path)
        .ctx(|| format!("reading {}", release_path.display()))?;
    Ok(Built {
        bzimage: dir.join(arch.image_path),
        headers: dir.join("usr/include"),
        release: release.trim().to_string(),
        dir,
        elapsed,
        steps,
    })
}

/// What `make` said when asked for single targets ([`make_targets`]).
#[derive(Debug, Clone)]
pub struct TargetsOutput {
    /// Whether make succeeded.
    pub ok: bool,
    /// make's stdout and stderr, interleaved as they came.
    pub output: String,
}

/// Runs `make [args...] targets...` in the configured build directory
/// `dir` of `tree` (as [`build`] left it: the same `O=`, `ARCH=`, ccache
/// and reproducible-version environment), under the build lock, and
/// returns its output. For `W=1` builds of the objects a series touches
/// (`net/ipv4/udp.o`): kbuild recompiles an object whose command line
/// changed, so the next [`build`] recompiles those objects again (ccache
/// serves them) and relinks. Errors: `dir` not configured, or make not
/// runnable.
pub fn make_targets(
    cache: &Cache,
    tree: &Tree,
    dir: &Path,
    args: &[&str],
    targets: &[String],
    events: &crate::Events,
) -> Result<TargetsOutput> {
    if !dir.join(".config").exists() {
        return Err(Error::Setup(format!(
            "{} is not a configured build directory (no .config)",
            dir.display()
        )));
    }
    let arch = crate::arch::guest()?;
    let _lock = BuildLock::take(cache, events)?;
    let mut cmd = make_cmd(cache, tree, dir, arch);
    cmd.arg("CC=ccache gcc").args(args).args(targets);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .ctx(|| "running make".into())?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(TargetsOutput {
        ok: out.status.success(),
        output,
    })
}

/// Steps of a cold build of the base config, for the first estimate.
const COLD_STEPS: usize = 2400;

/// Runs `make allnoconfig` with the fragments when they changed since the
/// last configuration, then checks every requested option is there.
fn configure(
    cache: &Cache,
    tree: &Tree,
    dir: &Path,
    requested: &Kconfig,
    arch: &crate::arch::Arch,
) -> Result<()> {
    let fragment = dir.join("udp-repair.config");
    let rendered = requested.render();
    let current = std::fs::read_to_string(&fragment).ok();
    if current.as_deref() != Some(rendered.as_str()) || !dir.join(".config").exists() {
        std::fs::write(&fragment, &rendered).ctx(|| format!("writing {}", fragment.display()))?;
        let log_path = dir.join("config.log");
        let mut log =
            std::fs::File::create(&log_path).ctx(|| format!("creating {}", log_path.display()))?;
        let mut cmd = make_cmd(cache, tree, dir, arch);
        cmd.arg(format!("KCONFIG_ALLCONFIG={}", fragment.display()))
            .arg("allnoconfig");
        let (_, ok) = stream(cmd, &mut log, None, &crate::Events::none())
            .ctx(|| "running make allnoconfig".into())?;
        if !ok {
            let _ = std::fs::remove_file(&fragment);
            return Err(Error::Build {
                what: "the kernel config".into(),
                tail: tail(&log_path, 30),
                log: log_path,
            });
        }
    }
    kconfig::validate(requested, dir)
}

/// Runs `cmd` with stdout and stderr into `log`, counting kbuild steps
/// (`  CC      net/ipv4/udp.o`) for a progress line. Returns the step count
/// and whether it succeeded.
fn stream(
    mut cmd: Command,
    log: &mut std::fs::File,
    estimate: Option<usize>,
    events: &crate::Events,
) -> std::io::Result<(usize, bool)> {
    let (reader, writer) = std::io::pipe()?;
    cmd.stdout(writer.try_clone()?)
        .stderr(writer)
        .stdin(std::process::Stdio::null());
    let mut child = cmd.spawn()?;
    drop(cmd); // close our copies of the pipe's write end
    let start = Instant::now();
    let mut steps = 0usize;
    for line in BufReader::new(reader).lines() {
        let line = line?;
        writeln!(log, "{line}")?;
        events.emit(crate::Event::MakeOutput(&line));
        let Some(what) = kbuild_step(&line) else {
            continue;
        };
        steps += 1;
        events.emit(crate::Event::BuildStep {
            steps,
            estimate,
            elapsed: start.elapsed(),
            target: what,
        });
    }
    events.emit(crate::Event::BuildEnded);
    let status = child.wait()?;
    Ok((steps, status.success()))
}

/// The step of a kbuild quiet-mode line (`  CC      net/ipv4/udp.o`).
fn kbuild_step(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("  ")?;
    let (tag, what) = rest.split_once(' ')?;
    (!tag.is_empty()
        && tag.len() <= 8
        && tag
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-'))
    .then(|| what.trim())
}

/// `4m05s` style.
pub fn fmt_secs(s: u64) -> String {
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// What a failed build's log says: its error lines (with a parallel make
/// the first error is often far from the end), then its last `n` lines.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let last = &lines[lines.len().saturating_sub(n)..];
    let errors: Vec<&str> = lines[..lines.len() - last.len()]
        .iter()
        .copied()
        .filter(|l| is_error_line(l))
        .take(20)
        .collect();
    if errors.is_empty() {
        last.join("\n")
    } else {
        format!("{}\n...\n{}", errors.join("\n"), last.join("\n"))
    }
}

fn is_error_line(l: &str) -> bool {
    l.contains("error:")
        || l.contains("*** ")
        || l.contains(": not found")
        || l.contains("Error ")
        || l.contains("undefined reference")
}

/// Compiles a C kselftest of the tree statically against the built
/// headers, for i386 with `m32` (`gcc -m32`: gcc-multilib and
/// libc6-dev-i386; the binary is NAME-i386). `Ok(None)` when the tree does
/// not have it.
pub fn kselftest(
    tree: &Tree,
    built: &Built,
    src_rel: &str,
    libs: &[&str],
    m32: bool,
    out_dir: &Path,
) -> Result<Option<PathBuf>> {
    let src = tree.src.join(src_rel);
    if !src.exists() {
        return Ok(None);
    }
    let mut name = src
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if m32 {
        name.push_str("-i386");
    }
    std::fs::create_dir_all(out_dir).ctx(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join(&name);
    let log_path = out_dir.join(format!("{name}.log"));
    let selftests = tree.src.join("tools/testing/selftests");
    // The flags of the selftests' lib.mk: `-D_GNU_SOURCE=` (empty), as
    // the programs define _GNU_SOURCE themselves.
    let output = Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-D_GNU_SOURCE="])
        .args(m32.then_some("-m32"))
        .arg("-isystem")
        .arg(&built.headers)
        .arg("-I")
        .arg(&selftests)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .args(libs)
        .output()
        .ctx(|| "running gcc".into())?;
    let mut text = output.stdout.clone();
    text.extend_from_slice(&output.stderr);
    std::fs::write(&log_path, &text).ctx(|| format!("writing {}", log_path.display()))?;
    if !output.status.success() {
        return Err(Error::Build {
            what: format!("kselftest {src_rel}"),
            tail: tail(&log_path, 30),
            log: log_path,
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kbuild_steps_are_recognised() {
        assert_eq!(
            kbuild_step("  CC      net/ipv4/udp.o"),
            Some("net/ipv4/udp.o")
        );
        assert_eq!(
            kbuild_step("  HOSTCC  scripts/basic/fixdep"),
            Some("scripts/basic/fixdep")
        );
        assert_eq!(kbuild_step("  AR      lib/lib.a"), Some("lib/lib.a"));
        assert_eq!(kbuild_step("make[1]: Entering directory"), None);
        assert_eq!(kbuild_step("net/ipv4/udp.c:12: warning: x"), None);
    }

    #[test]
    fn tail_shows_the_first_error_of_a_parallel_build() {
        let dir = std::env::temp_dir().join(format!("udp-repair-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("make.log");
        let mut text = String::from("  INSTALL ./usr/include\n/bin/sh: 1: rsync: not found\n");
        for i in 0..50 {
            text.push_str(&format!("  CC      obj{i}.o\n"));
        }
        std::fs::write(&log, text).unwrap();
        let t = tail(&log, 5);
        assert!(t.starts_with("/bin/sh: 1: rsync: not found\n...\n"), "{t}");
        assert!(t.ends_with("obj49.o"), "{t}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn build_dirs_sit_inside_owned_trees() {
        let cache = Cache::at("/c");
        let owned = Tree {
            src: "/c/src/v/trees/none".into(),
            owned: true,
            label: "none".into(),
        };
        assert_eq!(
            build_dir(&cache, &owned, &["base".into()]),
            Path::new("/c/src/v/trees/none/_build+base")
        );
        let user = Tree {
            src: "/home/u/linux".into(),
            owned: false,
            label: "tree".into(),
        };
        let d = build_dir(&cache, &user, &["base".into(), "debug".into()]);
        assert!(
            d.starts_with("/c/build") && d.to_string_lossy().ends_with("+base+debug"),
            "{}",
            d.display()
        );
    }
}
