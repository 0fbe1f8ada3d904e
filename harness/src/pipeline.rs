//! The build → boot → parse pipeline behind `build`, `run` and `test`.

use crate::report::{Record, Run};
use crate::suites::{Format, Program, Unit};
use std::path::{Path, PathBuf};
use std::time::Duration;
use udp_repair_vm::console::{self, Status};
use udp_repair_vm::initramfs::{self, Contents, PlanUnit};
use udp_repair_vm::qemu::{self, Accel, End};
use udp_repair_vm::{base, build, tree, Cache, Error, Result};

/// Options shared by every subcommand.
#[derive(Debug, Clone)]
pub struct Options {
    /// The project's root (holds `kernel-patches/` and `vm/configs/`).
    pub root: PathBuf,
    /// Build this tree as it is instead of base + series.
    pub kernel_tree: Option<PathBuf>,
    /// Config fragment names.
    pub configs: Vec<String>,
    /// Accelerator.
    pub accel: Accel,
    /// Guest deadline override.
    pub timeout: Option<Duration>,
    /// Extra kernel command line words.
    pub cmdline: Vec<String>,
    /// `make -j`.
    pub jobs: usize,
    /// Show make's and the console's output.
    pub verbose: bool,
    /// Guest memory.
    pub memory_mb: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Who boots the guest.
    pub runner: Runner,
}

/// Who boots the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// The project's own QEMU runner and initramfs.
    Qemu,
    /// virtme-ng (`vng --run`), with the host's root shared into the guest.
    Vng,
}

impl std::str::FromStr for Runner {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "qemu" => Ok(Runner::Qemu),
            "vng" => Ok(Runner::Vng),
            _ => Err(format!("unknown runner {s:?}: qemu or vng")),
        }
    }
}

/// Boots the plan with the chosen runner. For vng, the programs run from
/// their host paths instead of the initramfs.
fn boot_plan(
    opts: &Options,
    cache: &Cache,
    k: &Kernel,
    run_dir: &Path,
    contents: &Contents,
    timeout: Duration,
) -> Result<(qemu::Booted, qemu::Spec)> {
    let initrd = run_dir.join("initrd.cpio");
    let spec = boot_spec(opts, k, run_dir, initrd.clone(), timeout);
    if opts.runner == Runner::Vng {
        let plan = contents
            .plan
            .iter()
            .map(|u| {
                Ok(PlanUnit {
                    argv: host_argv(&u.argv, &contents.files)?,
                    timeout_s: u.timeout_s,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let vspec = udp_repair_vm::vng::Spec {
            bzimage: k.built.bzimage.clone(),
            plan,
            script: run_dir.join("vng-plan.sh"),
            memory_mb: opts.memory_mb,
            cpus: opts.cpus,
            accel: opts.accel,
            timeout,
            console: spec.console.clone(),
            verbose: opts.verbose,
        };
        return Ok((udp_repair_vm::vng::boot(cache, &vspec)?, spec));
    }
    initramfs::write(&initrd, contents)?;
    Ok((qemu::boot(cache, &spec, opts.accel)?, spec))
}

/// A plan unit's words for a vng guest, which runs programs from the
/// host's root instead of an initramfs: every guest path of `files`
/// (`/tests/...`, `/kselftest/...`, `/include/NAME`), as a word or inside
/// one (`sh -c '/include/a.out -v'`), becomes the file's absolute host
/// path. vng mounts a fresh tmpfs on `/tmp`, so a file there is refused
/// with the reason instead of going missing in the guest.
fn host_argv(argv: &[String], files: &[(String, PathBuf, u32)]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(argv.len());
    for word in argv {
        let mut w = word.clone();
        for (guest, host, _) in files {
            if !contains_path(&w, guest) {
                continue;
            }
            let abs = std::path::absolute(host)
                .map_err(|e| Error::Io(format!("absolute path of {}", host.display()), e))?;
            if !udp_repair_vm::vng::visible_in_guest(&abs) {
                return Err(Error::Setup(format!(
                    "{} (for {guest}): under --runner vng the guest sees the host's root \
                     but a fresh /tmp, so this file would be missing there; \
                     move it out of /tmp or use --runner qemu",
                    abs.display()
                )));
            }
            w = replace_path(&w, guest, &abs.display().to_string());
        }
        out.push(w);
    }
    Ok(out)
}

/// Whether `word` holds the path `p` as a whole path (not as the prefix of
/// a longer name: `/include/a` is not in `/include/ab`).
fn contains_path(word: &str, p: &str) -> bool {
    replace_path(word, p, "\0") != word
}

/// `word` with every whole occurrence of path `p` replaced by `to`.
fn replace_path(word: &str, p: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(i) = rest.find(p) {
        let end = i + p.len();
        let next = rest[end..].chars().next();
        let whole = !next.is_some_and(|c| c.is_alphanumeric() || "._-+".contains(c));
        out.push_str(&rest[..i]);
        out.push_str(if whole { to } else { p });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A kernel ready to boot.
#[derive(Debug)]
pub struct Kernel {
    /// Its source.
    pub tree: tree::Tree,
    /// The build.
    pub built: build::Built,
}

/// Resolves `all` to every variant present.
pub fn expand_variants(root: &Path, requested: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in requested {
        let add: Vec<String> = if v == "all" {
            tree::variants(&root.join("kernel-patches"))
        } else {
            vec![v.clone()]
        };
        for a in add {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// Makes sure the packages, the base, the tree and the build are there.
pub fn kernel(opts: &Options, cache: &Cache, variant: &str) -> Result<Kernel> {
    let pin = base::Pin::load(&opts.root.join("kernel-patches/BASE"))?;
    base::ensure_packages(&pin)?;
    let tree = match &opts.kernel_tree {
        Some(path) => tree::user_tree(path)?,
        None => {
            let git = base::ensure_base_repo(&pin, cache)?;
            let series = tree::Series::load(&opts.root.join("kernel-patches"), variant)?;
            tree::prepare(cache, &pin, &git, &series)?
        }
    };
    eprintln!(
        "udp-repair: building {} ({})",
        tree.label,
        tree.src.display()
    );
    let built = build::build(
        cache,
        &build::Request {
            tree: &tree,
            configs: opts.configs.clone(),
            configs_dir: opts.root.join("vm/configs"),
            jobs: opts.jobs,
            verbose: opts.verbose,
            ccache: true,
            dir_name: None,
        },
    )?;
    eprintln!(
        "udp-repair: built {} in {:.1}s ({} steps)",
        built.release,
        built.elapsed.as_secs_f64(),
        built.steps
    );
    Ok(Kernel { tree, built })
}

/// Builds the static guest test binary.
pub fn guest_selftests(root: &Path) -> Result<PathBuf> {
    let target_dir = root.join("target/guest");
    let log = target_dir.join("build.log");
    std::fs::create_dir_all(&target_dir)
        .map_err(|e| Error::Io(format!("creating {}", target_dir.display()), e))?;
    eprintln!("udp-repair: building the guest selftests (static)");
    let out =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root)
            .args([
                "build",
                "--release",
                "--target",
                "x86_64-unknown-linux-gnu",
                "-p",
                "udp-repair-selftests",
                "--target-dir",
            ])
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .output()
            .map_err(|e| Error::Setup(format!("cannot run cargo: {e}")))?;
    let mut text = out.stdout;
    text.extend_from_slice(&out.stderr);
    let _ = std::fs::write(&log, &text);
    if !out.status.success() {
        return Err(Error::Build {
            what: "the guest selftests".into(),
            tail: build::tail(&log, 30),
            log,
        });
    }
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release/udp-repair-selftests"))
}

/// A unit as planned for the guest, or already decided on the host.
#[derive(Debug)]
enum Planned {
    /// Runs as plan entry `idx`.
    Runs(usize),
    /// Not run: SKIP with this reason.
    Skip(String),
    /// Not run: ERROR, the program did not build.
    Error(String),
}

/// Default guest deadline: boot allowance plus every unit's own.
fn default_timeout(units: &[&Unit]) -> Duration {
    Duration::from_secs(90 + units.iter().map(|u| u64::from(u.timeout_s)).sum::<u64>())
}

fn boot_spec(
    opts: &Options,
    k: &Kernel,
    run_dir: &Path,
    initrd: PathBuf,
    timeout: Duration,
) -> qemu::Spec {
    qemu::Spec {
        bzimage: k.built.bzimage.clone(),
        initrd,
        cmdline: opts.cmdline.clone(),
        memory_mb: opts.memory_mb,
        cpus: opts.cpus,
        timeout,
        console: run_dir.join("console.log"),
        results: run_dir.join("results.log"),
        verbose: opts.verbose,
    }
}

/// Why a finished boot is an infrastructure failure, if it is.
fn boot_failure(
    b: &qemu::Booted,
    done: bool,
    spec: &qemu::Spec,
    running: Option<String>,
) -> Option<Error> {
    let splats = console::splats(&b.console);
    let console = spec.console.clone();
    match &b.end {
        // QEMU (or KVM under it) failed: the guest never had a chance.
        End::QemuFatal(line) => Some(Error::Boot {
            reason: format!("QEMU failed: {line}"),
            console,
        }),
        End::TimedOut { .. } | End::NoLife => Some(Error::Timeout {
            after: spec.timeout,
            console,
            running,
        }),
        End::Exited(_) if !splats.is_empty() => Some(Error::Boot {
            reason: format!(
                "kernel splat on the console ({} line(s)), first: {}",
                splats.len(),
                splats[0]
            ),
            console,
        }),
        End::Exited(code) if !done => {
            let why = if b.console.contains("udp-repair-init: up") {
                "the guest stopped before the end of its plan"
            } else {
                "the guest never reached its init"
            };
            let qemu_err = b
                .stderr
                .lines()
                .last()
                .map(|l| format!("; qemu: {l}"))
                .unwrap_or_default();
            Some(Error::Boot {
                reason: format!("{why} (qemu exit {code:?}{qemu_err})"),
                console,
            })
        }
        End::Exited(_) => None,
    }
}

/// `test`: builds the variant's kernel and programs, boots, parses.
pub fn test_variant(
    opts: &Options,
    cache: &Cache,
    variant: &str,
    units: &[&Unit],
    selftests: &Path,
) -> Run {
    let mut run = Run {
        variant: variant.to_string(),
        kernel: String::new(),
        accel: String::new(),
        build_s: None,
        boot_s: None,
        first_result_s: None,
        infra_error: None,
        logs: None,
        tests: Vec::new(),
    };
    let k = match kernel(opts, cache, variant) {
        Ok(k) => k,
        Err(e) => {
            run.infra_error = Some(e.to_string());
            return run;
        }
    };
    run.kernel = k.built.release.clone();
    run.variant = k.tree.label.clone();
    run.build_s = Some(k.built.elapsed.as_secs_f64());
    if let Err(e) = boot_and_parse(opts, cache, &k, units, selftests, &mut run) {
        run.infra_error = Some(e.to_string());
    }
    run
}

fn boot_and_parse(
    opts: &Options,
    cache: &Cache,
    k: &Kernel,
    units: &[&Unit],
    selftests: &Path,
    run: &mut Run,
) -> Result<()> {
    let run_dir = cache.run_dir(&k.tree.label)?;
    run.logs = Some(run_dir.display().to_string());
    let mut contents = Contents::default();
    contents.files.push((
        "/tests/udp-repair-selftests".into(),
        selftests.to_path_buf(),
        0o755,
    ));
    let mut planned = Vec::new();
    let ks_dir = k.built.dir.join("kselftest");
    for u in units {
        let prepared = match u.program {
            Program::Selftests { filter } => {
                let mut argv = vec![
                    "/tests/udp-repair-selftests".to_string(),
                    filter.to_string(),
                ];
                argv.extend(u.args.iter().map(|s| s.to_string()));
                Ok(argv)
            }
            Program::Kselftest { src, libs } => {
                match build::kselftest(&k.tree, &k.built, src, libs, &ks_dir) {
                    Ok(Some(bin)) => {
                        let name = bin
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let guest = format!("/kselftest/{name}");
                        if !contents.files.iter().any(|(g, _, _)| *g == guest) {
                            contents.files.push((guest.clone(), bin, 0o755));
                        }
                        let mut argv = vec![guest];
                        argv.extend(u.args.iter().map(|s| s.to_string()));
                        Ok(argv)
                    }
                    Ok(None) => Err(Planned::Skip(format!("{src} is not in this kernel tree"))),
                    // The series' own test does not compile: that test fails,
                    // the other suites still run on the kernel.
                    Err(e) => Err(Planned::Error(e.to_string())),
                }
            }
        };
        match prepared {
            Ok(argv) => {
                planned.push(Planned::Runs(contents.plan.len()));
                contents.plan.push(PlanUnit {
                    argv,
                    timeout_s: u.timeout_s,
                });
            }
            Err(p) => planned.push(p),
        }
    }
    let timeout = opts.timeout.unwrap_or_else(|| default_timeout(units));
    let (booted, spec) = boot_plan(opts, cache, k, &run_dir, &contents, timeout)?;
    run.accel = booted.accel.as_str().to_string();
    run.boot_s = Some(booted.elapsed.as_secs_f64());
    run.first_result_s = booted.first_result.map(|d| d.as_secs_f64());
    let (outputs, done) = console::split_units(&booted.results);
    let running = match booted.end {
        End::TimedOut { running: Some(i) } => contents.plan.get(i).map(|p| p.argv.join(" ")),
        _ => None,
    };
    let infra = boot_failure(&booted, done, &spec, running).map(|e| e.to_string());
    for (u, p) in units.iter().zip(&planned) {
        match p {
            Planned::Skip(reason) => run.tests.push(record(
                u,
                &run.kernel,
                &run.variant,
                u.name,
                Status::Skip,
                None,
                reason.clone(),
            )),
            Planned::Error(why) => run.tests.push(record(
                u,
                &run.kernel,
                &run.variant,
                u.name,
                Status::Error,
                None,
                why.clone(),
            )),
            Planned::Runs(idx) => {
                let out = outputs.iter().find(|o| o.idx == *idx);
                let why_missing = infra
                    .clone()
                    .unwrap_or_else(|| "the guest did not run it".into());
                unit_records(
                    u,
                    out,
                    &why_missing,
                    &run.kernel,
                    &run.variant,
                    &mut run.tests,
                );
            }
        }
    }
    run.infra_error = infra;
    Ok(())
}

fn record(
    u: &Unit,
    kernel: &str,
    variant: &str,
    name: &str,
    status: Status,
    ms: Option<u64>,
    message: String,
) -> Record {
    Record {
        suite: u.suite.to_string(),
        name: name.to_string(),
        variant: variant.to_string(),
        kernel: kernel.to_string(),
        status,
        duration_ms: ms,
        message,
    }
}

/// Exit status of a program killed by the guest's per-unit timeout.
const KILLED: i32 = 137;

fn raw_tail(raw: &str) -> String {
    let lines: Vec<&str> = raw.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Turns one unit's output into records.
fn unit_records(
    u: &Unit,
    out: Option<&console::UnitOutput>,
    why_missing: &str,
    kernel: &str,
    variant: &str,
    recs: &mut Vec<Record>,
) {
    let mk =
        |name: &str, status, ms, msg: String| record(u, kernel, variant, name, status, ms, msg);
    let Some(out) = out else {
        recs.push(mk(
            u.name,
            Status::Error,
            None,
            format!("not run: {why_missing}"),
        ));
        return;
    };
    let Some(rc) = out.rc else {
        recs.push(mk(
            u.name,
            Status::Error,
            None,
            format!("did not finish: {why_missing}\n{}", raw_tail(&out.raw)),
        ));
        return;
    };
    if rc == KILLED {
        recs.push(mk(
            u.name,
            Status::Error,
            out.ms,
            format!(
                "killed after its {}s timeout\n{}",
                u.timeout_s,
                raw_tail(&out.raw)
            ),
        ));
    }
    match u.format {
        Format::ExitCode => {
            if rc == KILLED {
                return;
            }
            let (status, msg) = match rc {
                0 => (Status::Pass, String::new()),
                4 => (
                    Status::Skip,
                    out.raw
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("exit 4")
                        .to_string(),
                ),
                _ => (
                    Status::Fail,
                    format!("exit status {rc}\n{}", raw_tail(&out.raw)),
                ),
            };
            recs.push(mk(u.name, status, out.ms, msg));
        }
        Format::KtapFile | Format::TapStdout => {
            let text = match u.format {
                Format::KtapFile => out.ktap.as_deref(),
                _ => Some(out.raw.as_str()),
            };
            let Some(text) = text else {
                recs.push(mk(
                    u.name,
                    Status::Error,
                    out.ms,
                    format!(
                        "wrote no KTAP report (exit status {rc})\n{}",
                        raw_tail(&out.raw)
                    ),
                ));
                return;
            };
            let tap = udp_repair_ktap::parse(text);
            let prefix = if u.format == Format::TapStdout {
                format!("{}:", u.name)
            } else {
                String::new()
            };
            for c in &tap.cases {
                recs.push(mk(
                    &format!("{prefix}{}", c.name),
                    Status::from(c.status),
                    c.duration_ms,
                    c.message.clone(),
                ));
            }
            let missing = tap.plan.unwrap_or(0).saturating_sub(tap.cases.len());
            if missing > 0 {
                recs.push(mk(
                    u.name,
                    Status::Error,
                    out.ms,
                    format!(
                        "{missing} planned test(s) never reported (exit status {rc})\n{}",
                        raw_tail(&out.raw)
                    ),
                ));
            } else if tap.cases.is_empty() && rc == 4 {
                let why = out
                    .raw
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("exit 4");
                recs.push(mk(u.name, Status::Skip, out.ms, why.to_string()));
            } else if tap.cases.is_empty() && rc != KILLED {
                recs.push(mk(
                    u.name,
                    Status::Error,
                    out.ms,
                    format!(
                        "reported no tests (exit status {rc})\n{}",
                        raw_tail(&out.raw)
                    ),
                ));
            } else if rc != 0
                && rc != KILLED
                && !tap
                    .cases
                    .iter()
                    .any(|c| c.status == udp_repair_ktap::Status::Fail)
            {
                // libtest exits 101 and kselftests 1 on failures; any other
                // non-zero exit without a failing case is a crash.
                recs.push(mk(
                    u.name,
                    Status::Error,
                    out.ms,
                    format!(
                        "exit status {rc} with no failing test\n{}",
                        raw_tail(&out.raw)
                    ),
                ));
            }
        }
    }
}

/// `run`: boots the variant and runs one command, with extra files in
/// `/include`. Returns the command's output and exit status.
pub fn run_command(
    opts: &Options,
    cache: &Cache,
    variant: &str,
    includes: &[PathBuf],
    argv: &[String],
) -> Result<(String, i32, String)> {
    let k = kernel(opts, cache, variant)?;
    let run_dir = cache.run_dir(&format!("{}-run", k.tree.label))?;
    let mut contents = Contents::default();
    for inc in includes {
        let name = inc
            .file_name()
            .ok_or_else(|| Error::Setup(format!("--include {}: not a file name", inc.display())))?
            .to_string_lossy()
            .into_owned();
        if !inc.is_file() {
            return Err(Error::Setup(format!(
                "--include {}: no such file",
                inc.display()
            )));
        }
        let host = std::path::absolute(inc)
            .map_err(|e| Error::Io(format!("--include {}", inc.display()), e))?;
        contents
            .files
            .push((format!("/include/{name}"), host, 0o755));
    }
    let timeout = opts.timeout.unwrap_or(Duration::from_secs(300));
    contents.plan.push(PlanUnit {
        argv: argv.to_vec(),
        // The host's deadline is the one that counts: the guest's own limit
        // only backs it up.
        timeout_s: (timeout.as_secs() + 30) as u32,
    });
    let (booted, spec) = boot_plan(opts, cache, &k, &run_dir, &contents, timeout)?;
    let (outputs, done) = console::split_units(&booted.results);
    let running = matches!(booted.end, End::TimedOut { running: Some(_) }).then(|| argv.join(" "));
    if let Some(e) = boot_failure(&booted, done, &spec, running) {
        if let Some(out) = outputs.first() {
            print!("{}", out.raw);
        }
        return Err(e);
    }
    let out = outputs.into_iter().next().unwrap_or_default();
    Ok((out.raw, out.rc.unwrap_or(-1), k.built.release))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<(String, PathBuf, u32)> {
        vec![
            ("/include/a.out".into(), "/work/p/a.out".into(), 0o755),
            ("/tests/t".into(), "/work/target/t".into(), 0o755),
        ]
    }

    #[test]
    fn vng_plans_run_included_files_from_their_host_paths() {
        let argv: Vec<String> = [
            "/include/a.out",
            "-x",
            "sh -c '/include/a.out -v; /include/a.outer'",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            host_argv(&argv, &files()).unwrap(),
            vec![
                "/work/p/a.out".to_string(),
                "-x".into(),
                "sh -c '/work/p/a.out -v; /include/a.outer'".into()
            ]
        );
        assert_eq!(
            host_argv(&["/tests/t".into(), "base::".into()], &files()).unwrap(),
            vec!["/work/target/t".to_string(), "base::".into()]
        );
    }

    #[test]
    fn vng_refuses_an_included_file_in_tmp() {
        let f = vec![("/include/x".to_string(), PathBuf::from("/tmp/x"), 0o755)];
        let e = host_argv(&["/include/x".into()], &f)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/tmp/x") && e.contains("fresh /tmp"), "{e}");
        // Not named in the plan: nothing to refuse.
        assert!(host_argv(&["true".into()], &f).is_ok());
    }
}
