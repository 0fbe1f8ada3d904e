//! The conductor behind `build`, `run` and `test`: kernel (vm's base →
//! tree → kconfig → build), guest binary ([`crate::guest`]), plan
//! ([`crate::plan`]), boot (QEMU or vng), results ([`crate::results`]).
//! Each stage is a module of its own; this one only calls them in order,
//! keeps the run's record beside its logs, and adapts the plan for vng.

use crate::plan;
use crate::report::Run;
use crate::results::{self, BootRecord, EndRecord, RunRecord};
use crate::suites::Unit;
use std::path::{Path, PathBuf};
use std::time::Duration;
use udp_repair_vm::console;
use udp_repair_vm::initramfs::{self, Contents, PlanUnit};
use udp_repair_vm::qemu::{self, Accel, End};
use udp_repair_vm::{base, build, tree, Cache, Error, Result};

/// Options shared by every subcommand.
#[derive(Debug, Clone)]
pub struct Options {
    /// The project's root (holds `kernel-patches/` and `vm/configs/`).
    pub root: PathBuf,
    /// The base's name (`kernel-patches/bases/NAME`: `6.12`, `7.1`).
    pub base: String,
    /// The user's kernel tree: built as it is for variant `none`; for
    /// another variant, the series of `--base` applied to a clone of it
    /// ([`tree::user_tree_with_series`]).
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
    /// Where the vm stages report progress (the CLI renders them).
    pub events: udp_repair_vm::Events,
    /// Guest memory.
    pub memory_mb: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Who boots the guest.
    pub runner: Runner,
    /// `test --fuzz-secs`: the fuzz suite's random calls run this long,
    /// with no call bound, instead of their default (see
    /// [`plan::plan`]).
    pub fuzz_secs: Option<u32>,
}

/// Who boots the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// The project's own QEMU runner and initramfs.
    Qemu,
    /// virtme-ng (`vng --run`), with the host's root shared into the guest.
    Vng,
}

impl Runner {
    /// `qemu` or `vng`.
    pub fn as_str(self) -> &'static str {
        match self {
            Runner::Qemu => "qemu",
            Runner::Vng => "vng",
        }
    }
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
                    label: u.label.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let vspec = udp_repair_vm::vng::Spec {
            bzimage: k.built.bzimage.clone(),
            plan,
            script: run_dir.join("vng-plan.sh"),
            cmdline: opts.cmdline.clone(),
            memory_mb: opts.memory_mb,
            cpus: opts.cpus,
            accel: opts.accel,
            timeout,
            console: spec.console.clone(),
            events: opts.events.clone(),
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
    let patches_dir = opts.root.join("kernel-patches");
    let pin = base::Pin::load(&patches_dir, &opts.base)?;
    base::ensure_packages(&pin, &opts.events)?;
    let tree = match &opts.kernel_tree {
        // The user's tree as it is, built out of tree.
        Some(path) if variant == "none" => tree::user_tree(path)?,
        // The variant's series (for --base) applied to a clone of it.
        Some(path) => {
            let series = tree::Series::load(&patches_dir, variant, &pin.name)?;
            tree::user_tree_with_series(cache, path, &series)?
        }
        None => {
            let git = base::ensure_base_repo(&pin, cache, &opts.events)?;
            let series = tree::Series::load(&patches_dir, variant, &pin.name)?;
            tree::prepare(cache, &pin, &git, &series)?
        }
    };
    eprintln!(
        "udp-repair: building {} ({})",
        tree.label,
        tree.src.display()
    );
    let built = build::build(cache, &build_request(opts, &tree))?;
    eprintln!(
        "udp-repair: built {} in {:.1}s ({} steps)",
        built.release,
        built.elapsed.as_secs_f64(),
        built.steps
    );
    Ok(Kernel { tree, built })
}

/// The build request of `opts` for `tree` (through ccache, in the
/// tree's default build directory): `test`, `run`, `build` and `bench`
/// all build from it.
pub fn build_request<'a>(opts: &Options, tree: &'a tree::Tree) -> build::Request<'a> {
    build::Request {
        tree,
        configs: opts.configs.clone(),
        configs_dir: opts.root.join("vm/configs"),
        jobs: opts.jobs,
        events: opts.events.clone(),
        ccache: true,
        dir_name: None,
    }
}

/// The QEMU boot of `opts` for kernel `k`, its logs in `run_dir`.
pub fn boot_spec(
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
        events: opts.events.clone(),
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
        splats: None,
        figures: Vec::new(),
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
    let planned = plan::plan(k, units, selftests, opts.fuzz_secs);
    let timeout = opts
        .timeout
        .unwrap_or_else(|| plan::default_timeout(&planned.units));
    let (booted, spec) = boot_plan(opts, cache, k, &run_dir, &planned.contents, timeout)?;
    let rec = RunRecord {
        version: results::RUN_RECORD_VERSION,
        variant: run.variant.clone(),
        kernel: run.kernel.clone(),
        build_s: run.build_s,
        units: planned.units,
        boot: boot_record(opts, &booted, &spec, timeout),
    };
    write_record(&run_dir, &rec)?;
    let done = results::interpret(&rec, &booted.console, &booted.results, &run_dir);
    *run = Run {
        build_s: run.build_s,
        ..done
    };
    Ok(())
}

/// The boot part of a run's record.
fn boot_record(
    opts: &Options,
    b: &qemu::Booted,
    spec: &qemu::Spec,
    timeout: Duration,
) -> BootRecord {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    BootRecord {
        runner: opts.runner.as_str().into(),
        accel: b.accel.as_str().into(),
        end: EndRecord::from(&b.end),
        timeout_s: timeout.as_secs(),
        elapsed_s: b.elapsed.as_secs_f64(),
        first_result_s: b.first_result.map(|d| d.as_secs_f64()),
        console: name(&spec.console),
        // vng carries results and console on one stream, logged as one.
        results: if opts.runner == Runner::Vng {
            name(&spec.console)
        } else {
            name(&spec.results)
        },
        qemu_error: b.stderr.lines().last().map(str::to_string),
    }
}

/// Keeps the run's record beside its logs, for `udp-repair parse`.
fn write_record(dir: &Path, rec: &RunRecord) -> Result<()> {
    let path = dir.join("run.json");
    let text = serde_json::to_string_pretty(rec)
        .map_err(|e| Error::Setup(format!("encoding {}: {e}", path.display())))?;
    std::fs::write(&path, text).map_err(|e| Error::Io(format!("writing {}", path.display()), e))
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
        label: vec![
            "suite=run".into(),
            "name=command".into(),
            "format=exit-code".into(),
        ],
    });
    let (booted, spec) = boot_plan(opts, cache, &k, &run_dir, &contents, timeout)?;
    let (outputs, done) = console::split_units(&booted.results);
    let running = matches!(booted.end, End::TimedOut { running: Some(_) }).then(|| argv.join(" "));
    let rec = boot_record(opts, &booted, &spec, timeout);
    if let Some(e) = results::boot_failure(&rec, &booted.console, done, &spec.console, running) {
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
