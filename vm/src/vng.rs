//! virtme-ng as a second runner: the same plan, run by `vng --run` with the
//! host's root filesystem shared read-only into the guest (so the test
//! programs run from their host paths, no initramfs).
//!
//! The kernel needs the `vng` config fragment (9p root, overlayfs, ptys).
//! Results and markers come back on vng's standard output, interleaved with
//! the kernel console (`--verbose`), which the unit protocol tolerates.

use crate::initramfs::{plan_script, PlanUnit, UNIT_FN};
use crate::qemu::{Accel, Booted, End};
use crate::{Cache, Error, IoCtx, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One vng boot.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The kernel image.
    pub bzimage: PathBuf,
    /// Units, with host paths.
    pub plan: Vec<PlanUnit>,
    /// Where the generated script goes (must be visible in the guest).
    pub script: PathBuf,
    /// Extra kernel command line words (`--append`).
    pub cmdline: Vec<String>,
    /// Guest memory.
    pub memory_mb: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// KVM, TCG, or `auto` (resolved by [`boot`] as the QEMU runner does).
    pub accel: Accel,
    /// Deadline from vng's start.
    pub timeout: Duration,
    /// Where vng's output is logged.
    pub console: PathBuf,
    /// Where vng's output lines are reported as they come.
    pub events: crate::Events,
}

/// The `vng` executable, if installed.
pub fn find() -> Option<PathBuf> {
    crate::base::which("vng")
}

/// The script run in the guest.
pub fn script(plan: &[PlanUnit]) -> String {
    format!(
        "#!/bin/sh\nC=/dev/stdout\nR=/dev/stdout\necho \"udp-repair-init: up $(uname -r)\"\n\
         ip link set lo up 2>/dev/null || true\n{UNIT_FN}{}echo \"@@udp-repair done\"\n",
        plan_script(plan)
    )
}

/// vng's arguments under `accel` (Kvm or Tcg: [`boot`] resolves Auto).
pub fn vng_args(spec: &Spec, accel: Accel) -> Vec<String> {
    let mut a = vec![
        "--run".to_string(),
        spec.bzimage.display().to_string(),
        "--disable-microvm".into(),
        "--force-9p".into(),
        "--verbose".into(),
        "--memory".into(),
        format!("{}M", spec.memory_mb),
        "--cpus".into(),
        spec.cpus.to_string(),
        "--cwd".into(),
        "/".into(),
    ];
    if accel != Accel::Kvm {
        a.push("--disable-kvm".into());
    }
    for w in &spec.cmdline {
        a.push("--append".into());
        a.push(w.clone());
    }
    a.push("--exec".into());
    a.push(format!("sh {}", spec.script.display()));
    a
}

/// Runs the plan under vng with a hard deadline. The accelerator follows
/// the QEMU runner's rule ([`crate::qemu::resolve_accel`]): with
/// [`Accel::Auto`] and a cached verdict that KVM guests do not come up
/// here (or no usable `/dev/kvm`), vng gets `--disable-kvm`; with no
/// verdict yet, this boot is the probe: under KVM, bounded to the probe's
/// time to show life, recorded, then again under TCG if KVM failed. A
/// fatal error of QEMU on vng's output ends the boot at once
/// ([`End::QemuFatal`]).
pub fn boot(cache: &Cache, spec: &Spec) -> Result<Booted> {
    crate::qemu::boot_probing(cache, spec.accel, &spec.events, |a, life| {
        boot_once(spec, a, life)
    })
}

/// One vng boot under `accel` (Kvm or Tcg). With `life`, a boot whose
/// plan has not said it is up by then ends as [`End::NoLife`].
fn boot_once(spec: &Spec, accel: Accel, life: Option<Duration>) -> Result<Booted> {
    let vng = find()
        .ok_or_else(|| Error::Setup("vng is not installed (pip install virtme-ng)".into()))?;
    std::fs::write(&spec.script, script(&spec.plan))
        .ctx(|| format!("writing {}", spec.script.display()))?;
    let mut log = std::fs::File::create(&spec.console)
        .ctx(|| format!("creating {}", spec.console.display()))?;
    let (reader, writer) = std::io::pipe().ctx(|| "pipe".into())?;
    let mut cmd = Command::new(vng);
    cmd.args(vng_args(spec, accel))
        .stdin(Stdio::null())
        .stdout(writer.try_clone().ctx(|| "pipe".into())?)
        .stderr(writer)
        // Its own process group, so the deadline kills QEMU too.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Setup(format!("cannot start vng: {e}")))?;
    drop(cmd);
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    let mut first_result = None;
    // Without ACPI in the kernel the guest halts instead of powering off
    // and vng never returns: once the plan reported `done`, give it a
    // moment to exit, then stop it ourselves.
    let mut done_at: Option<Instant> = None;
    let mut alive = false;
    let life = life.map(|l| l.min(spec.timeout));
    let end = loop {
        if life.is_some_and(|l| !alive && start.elapsed() >= l) {
            kill_group(&mut child);
            break End::NoLife;
        }
        if done_at.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            kill_group(&mut child);
            break End::Exited(None);
        }
        let deadline = match (done_at, life) {
            (Some(t), _) => (t + Duration::from_secs(5)).saturating_duration_since(start),
            (None, Some(l)) if !alive => l,
            (None, _) => spec.timeout,
        };
        let Some(left) = deadline.checked_sub(start.elapsed()) else {
            if done_at.is_some() || (life.is_some() && !alive) {
                continue;
            }
            kill_group(&mut child);
            break End::TimedOut { running: None };
        };
        match rx.recv_timeout(left) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                spec.events.emit(crate::Event::Console(&line));
                if line.contains("udp-repair-init: up") {
                    alive = true;
                }
                if crate::console::qemu_fatal(&line) {
                    text.push_str(line.trim_end_matches('\r'));
                    text.push('\n');
                    kill_group(&mut child);
                    break End::QemuFatal(line.trim().to_string());
                }
                if line.contains("udp-repair-init: unit") && line.contains(" end ") {
                    first_result.get_or_insert(start.elapsed());
                }
                if line.trim_end() == "@@udp-repair done" {
                    done_at = Some(Instant::now());
                }
                text.push_str(line.trim_end_matches('\r'));
                text.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().ctx(|| "waiting for vng".into())?;
                break End::Exited(status.code());
            }
        }
    };
    Ok(Booted {
        accel,
        end,
        console: text.clone(),
        results: text,
        elapsed: start.elapsed(),
        first_result,
        stderr: String::new(),
    })
}

fn kill_group(child: &mut std::process::Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether `path` is visible inside a vng guest (the host root is shared,
/// but vng mounts a fresh tmpfs over /tmp).
pub fn visible_in_guest(path: &Path) -> bool {
    !path.starts_with("/tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_runs_the_plan_and_reports_done() {
        let s = script(&[PlanUnit {
            argv: vec!["/x/t".into(), "base::".into()],
            timeout_s: 9,
            label: Vec::new(),
        }]);
        assert!(s.contains("R=/dev/stdout"));
        assert!(s.contains("unit 0 9 '' /x/t base::\n"));
        assert!(s.trim_end().ends_with("echo \"@@udp-repair done\""));
    }

    #[test]
    fn tcg_disables_kvm() {
        let spec = Spec {
            bzimage: "/k/bzImage".into(),
            plan: Vec::new(),
            script: "/r/plan.sh".into(),
            cmdline: vec!["udp.debug=1".into()],
            memory_mb: 1024,
            cpus: 2,
            accel: Accel::Tcg,
            timeout: Duration::from_secs(1),
            console: "/r/c.log".into(),
            events: crate::Events::none(),
        };
        let a = vng_args(&spec, Accel::Tcg);
        assert!(a.contains(&"--disable-kvm".to_string()));
        assert!(!vng_args(&spec, Accel::Kvm).contains(&"--disable-kvm".to_string()));
        assert!(
            a.windows(2).any(|w| w == ["--append", "udp.debug=1"]),
            "{a:?}"
        );
        assert_eq!(a.last().unwrap(), "sh /r/plan.sh");
    }
}
