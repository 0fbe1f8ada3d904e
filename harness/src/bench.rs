//! `udp-repair bench`: build and boot figures, printed (never asserted in
//! a timed test). Run it on an idle machine: another build running at the
//! same time doubles every figure.

use crate::pipeline::{self, Options};
use std::path::Path;
use std::time::{Duration, Instant};
use udp_repair_vm::initramfs::{self, Contents, PlanUnit};
use udp_repair_vm::qemu::{self, Accel};
use udp_repair_vm::{base, build, tree, Cache, Error, Result};

/// One measured figure.
#[derive(Debug)]
struct Figure {
    what: String,
    secs: f64,
    target: Option<String>,
}

/// The pipeline's own build request, with ccache and the build directory
/// as the figure needs.
fn build_req<'a>(
    opts: &Options,
    t: &'a tree::Tree,
    ccache: bool,
    dir_name: Option<String>,
) -> build::Request<'a> {
    build::Request {
        ccache,
        dir_name,
        ..pipeline::build_request(opts, t)
    }
}

/// Runs the benchmark on the unpatched base and prints the figures.
/// With `vng`, also times `vng --build` (virtme-ng's default config) cold
/// on a worktree of the same base.
pub fn run(opts: &Options, cache: &Cache, vng: bool) -> Result<()> {
    let mut figs: Vec<Figure> = Vec::new();
    let k = pipeline::kernel(opts, cache, "none")?;
    let t = &k.tree;

    eprintln!("bench: cold build (ccache off, fresh directory)");
    let scratch = "_bench-cold".to_string();
    let _ = std::fs::remove_dir_all(t.src.join(&scratch));
    let cold = build::build(cache, &build_req(opts, t, false, Some(scratch.clone())))?;
    let _ = std::fs::remove_dir_all(t.src.join(&scratch));
    figs.push(Figure {
        what: "cold build (minimal config, no ccache)".into(),
        secs: cold.elapsed.as_secs_f64(),
        target: None,
    });

    eprintln!("bench: no-op rebuild");
    let noop = build::build(cache, &build_req(opts, t, true, None))?;
    figs.push(Figure {
        what: "no-op rebuild".into(),
        secs: noop.elapsed.as_secs_f64(),
        target: Some("< 15 s".into()),
    });

    let udp_c = t.src.join("net/ipv4/udp.c");
    eprintln!("bench: rebuild after touching net/ipv4/udp.c");
    touch(&udp_c)?;
    let touched = build::build(cache, &build_req(opts, t, true, None))?;
    figs.push(Figure {
        what: "rebuild after touching net/ipv4/udp.c".into(),
        secs: touched.elapsed.as_secs_f64(),
        target: None,
    });

    eprintln!("bench: rebuild after editing net/ipv4/udp.c (a real recompile)");
    let original =
        std::fs::read(&udp_c).map_err(|e| Error::Io(format!("reading {}", udp_c.display()), e))?;
    let mut edited = original.clone();
    edited.extend_from_slice(b"/* udp-repair bench */\n");
    std::fs::write(&udp_c, &edited)
        .map_err(|e| Error::Io(format!("writing {}", udp_c.display()), e))?;
    let after_edit = build::build(cache, &build_req(opts, t, true, None));
    std::fs::write(&udp_c, &original)
        .map_err(|e| Error::Io(format!("restoring {}", udp_c.display()), e))?;
    figs.push(Figure {
        what: "rebuild after editing net/ipv4/udp.c".into(),
        secs: after_edit?.elapsed.as_secs_f64(),
        target: None,
    });
    // Leave the build matching the restored source.
    build::build(cache, &build_req(opts, t, true, None))?;

    let accel = match qemu::resolve_accel(cache, opts.accel) {
        Some(a) => format!("{} (--accel {})", a.as_str(), opts.accel.as_str()),
        None => format!(
            "--accel {}: the first boot probes KVM here",
            opts.accel.as_str()
        ),
    };
    eprintln!("bench: boot to first result, 3 boots, accelerator {accel}");
    let mut boots = Vec::new();
    let mut used = Vec::new();
    for i in 0..3 {
        let (secs, a) = boot_to_first_result(opts, cache, &k, i)?;
        boots.push(secs);
        used.push(a);
    }
    boots.sort_by(f64::total_cmp);
    used.dedup();
    figs.push(Figure {
        what: format!(
            "boot to first result, {} (median of 3)",
            used.iter()
                .map(|a| a.as_str().to_uppercase())
                .collect::<Vec<_>>()
                .join("/")
        ),
        secs: boots[1],
        target: Some("< 5 s".into()),
    });

    if vng {
        eprintln!("bench: vng --build, cold (virtme-ng default config, no ccache)");
        let secs = vng_cold_build(cache, opts)?;
        figs.push(Figure {
            what: "vng --build cold (virtme-ng default config)".into(),
            secs,
            target: Some(format!("cold build <= half: {:.0} s", secs / 2.0)),
        });
    }

    println!("\n{:<48} {:>10}  target", "figure", "seconds");
    for f in &figs {
        println!(
            "{:<48} {:>10.1}  {}",
            f.what,
            f.secs,
            f.target.as_deref().unwrap_or("")
        );
    }
    if vng {
        let ratio = cold.elapsed.as_secs_f64() / figs.last().map(|f| f.secs).unwrap_or(f64::NAN);
        println!("cold build / vng cold build = {ratio:.2}");
    }
    Ok(())
}

fn touch(path: &Path) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| Error::Io(format!("opening {}", path.display()), e))?;
    f.set_modified(std::time::SystemTime::now())
        .map_err(|e| Error::Io(format!("touching {}", path.display()), e))
}

/// One boot with the pipeline's own QEMU spec and `--accel`: seconds to
/// the first result, and the accelerator it ran under.
fn boot_to_first_result(
    opts: &Options,
    cache: &Cache,
    k: &pipeline::Kernel,
    i: usize,
) -> Result<(f64, Accel)> {
    let dir = cache.run_dir(&format!("bench-boot{i}"))?;
    let contents = Contents {
        files: Vec::new(),
        plan: vec![PlanUnit {
            argv: vec!["uname".into(), "-r".into()],
            timeout_s: 30,
            label: Vec::new(),
        }],
    };
    let initrd = dir.join("initrd.cpio");
    initramfs::write(&initrd, &contents)?;
    let spec = pipeline::boot_spec(opts, k, &dir, initrd, Duration::from_secs(120));
    let b = qemu::boot(cache, &spec, opts.accel)?;
    let secs = b.first_result.map(|d| d.as_secs_f64()).ok_or(Error::Boot {
        reason: "no result from the benchmark unit".into(),
        console: spec.console,
    })?;
    Ok((secs, b.accel))
}

/// `vng --build` on a fresh worktree of the base, without ccache.
fn vng_cold_build(cache: &Cache, opts: &Options) -> Result<f64> {
    let vng = udp_repair_vm::vng::find()
        .ok_or_else(|| Error::Setup("vng is not installed (pip install virtme-ng)".into()))?;
    let pin = base::Pin::load(&opts.root.join("kernel-patches"), &opts.base)?;
    let git = base::ensure_base_repo(&pin, cache, &opts.events)?;
    let wt = cache.root().join("src").join(pin.id()).join("vng-bench");
    let sh = xshell::Shell::new().map_err(|e| Error::Setup(e.to_string()))?;
    if wt.exists() {
        let _ = xshell::cmd!(sh, "git -C {git} worktree remove --force {wt}")
            .quiet()
            .run();
        let _ = std::fs::remove_dir_all(&wt);
    }
    xshell::cmd!(
        sh,
        "git -C {git} worktree add -q --detach {wt} refs/tags/base"
    )
    .quiet()
    .run()
    .map_err(|e| Error::Setup(format!("creating the vng worktree: {e}")))?;
    let _lock = build::BuildLock::take(cache, &opts.events)?;
    let start = Instant::now();
    let log = cache.root().join("vng-bench.log");
    let out = std::process::Command::new(vng)
        .arg("--build")
        .current_dir(&wt)
        .env("CCACHE_DISABLE", "1")
        .output()
        .map_err(|e| Error::Setup(format!("running vng: {e}")))?;
    let secs = start.elapsed().as_secs_f64();
    let mut text = out.stdout;
    text.extend_from_slice(&out.stderr);
    let _ = std::fs::write(&log, &text);
    let _ = xshell::cmd!(sh, "git -C {git} worktree remove --force {wt}")
        .quiet()
        .run();
    if !out.status.success() {
        return Err(Error::Build {
            what: "vng --build".into(),
            tail: build::tail(&log, 20),
            log,
        });
    }
    Ok(secs)
}
