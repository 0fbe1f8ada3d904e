//! Booting the guest in QEMU with a hard deadline.
//!
//! QEMU is spawned with `std::process` (not a shell helper) so that it can
//! be killed on time: a reader thread copies the serial console into the
//! console log and hands each line to the main thread, which waits with a
//! deadline. The console log is always kept.

use crate::{Cache, Error, IoCtx, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM if a bounded probe boot shows it works here, else TCG.
    Auto,
    /// KVM.
    Kvm,
    /// TCG (software emulation).
    Tcg,
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(format!("unknown accelerator {s:?}: auto, kvm or tcg")),
        }
    }
}

impl Accel {
    /// `kvm`, `tcg`, `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// One boot.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The kernel image.
    pub bzimage: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// Extra kernel command line words.
    pub cmdline: Vec<String>,
    /// Guest memory.
    pub memory_mb: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Deadline for the whole boot, from QEMU's start.
    pub timeout: Duration,
    /// Where the serial console is logged.
    pub console: PathBuf,
    /// Where the results channel (virtio console) is written.
    pub results: PathBuf,
    /// Where the console lines and QEMU's stderr are reported as they come.
    pub events: crate::Events,
}

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// QEMU exited by itself (the init rebooted, or the kernel panicked).
    Exited(Option<i32>),
    /// Killed at the deadline.
    TimedOut {
        /// The unit running then, by index, if any.
        running: Option<usize>,
    },
    /// No sign of life from the init in time (used to reject KVM).
    NoLife,
    /// QEMU reported a fatal error of its own (see
    /// [`crate::console::qemu_fatal`]) and was stopped at once: the line.
    QemuFatal(String),
}

/// What a boot left behind.
#[derive(Debug, Clone)]
pub struct Booted {
    /// The accelerator actually used.
    pub accel: Accel,
    /// How it ended.
    pub end: End,
    /// The console text.
    pub console: String,
    /// The results channel text.
    pub results: String,
    /// From QEMU's start to its end.
    pub elapsed: Duration,
    /// From QEMU's start to the end of the first unit.
    pub first_result: Option<Duration>,
    /// QEMU's stderr.
    pub stderr: String,
}

/// The kernel command line.
pub fn kernel_cmdline(spec: &Spec) -> String {
    // panic=-1: reboot at once on a panic, which ends QEMU (-no-reboot);
    // the console log then shows the panic.
    let console = crate::arch::guest()
        .map(|a| format!("console={}", a.console))
        .unwrap_or_else(|_| "console=ttyS0".into());
    let mut words = vec![
        console.as_str(),
        "panic=-1",
        "rdinit=/init",
        "random.trust_cpu=on",
    ];
    words.extend(spec.cmdline.iter().map(String::as_str));
    words.join(" ")
}

/// QEMU's arguments for `spec` under `accel` (Kvm or Tcg), for the guest
/// architecture `arch`.
pub fn qemu_args(spec: &Spec, accel: Accel, arch: &crate::arch::Arch) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    if let Some(m) = arch.machine {
        push("-machine");
        push(m);
    }
    push("-nodefaults");
    push("-no-user-config");
    push("-display");
    push("none");
    push("-no-reboot");
    push("-accel");
    push(if accel == Accel::Kvm { "kvm" } else { "tcg" });
    push("-cpu");
    push(arch.cpu);
    push("-m");
    push(&spec.memory_mb.to_string());
    push("-smp");
    push(&spec.cpus.to_string());
    push("-serial");
    push("stdio");
    push("-device");
    push("virtio-serial-pci");
    push("-chardev");
    a.push(chardev_file("results", &spec.results));
    a.push("-device".into());
    a.push("virtconsole,chardev=results".into());
    a.push("-kernel".into());
    a.push(spec.bzimage.clone().into());
    a.push("-initrd".into());
    a.push(spec.initrd.clone().into());
    a.push("-append".into());
    a.push(kernel_cmdline(spec).into());
    a
}

fn chardev_file(id: &str, path: &Path) -> OsString {
    let mut s = OsString::from(format!("file,id={id},path="));
    // QEMU option syntax: a comma in a value is doubled.
    s.push(path.as_os_str().to_string_lossy().replace(',', ",,"));
    s
}

/// A line from QEMU: the serial console (stdout, raw bytes) or its stderr.
enum Out {
    Console(Vec<u8>),
    Stderr(String),
}

/// Kills and reaps QEMU however the caller leaves.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots `spec` once under `accel`. A boot with no sign of life from the
/// init within `life` ends as [`End::NoLife`].
fn boot_once(spec: &Spec, accel: Accel, life: Duration) -> Result<Booted> {
    let _ = std::fs::remove_file(&spec.results);
    let mut console_log = std::fs::File::create(&spec.console)
        .ctx(|| format!("creating {}", spec.console.display()))?;
    let arch = crate::arch::guest()?;
    let child = Command::new(arch.qemu)
        .args(qemu_args(spec, accel, arch))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Setup(format!(
                "cannot start {} (package {}): {e}",
                arch.qemu, arch.qemu_package
            ))
        })?;
    let mut guard = Guard(child);
    let start = Instant::now();
    let stdout = guard.0.stdout.take().expect("piped stdout");
    let mut stderr_pipe = guard.0.stderr.take().expect("piped stderr");
    // Both pipes feed one channel, so that a fatal error on stderr is seen
    // as it comes, and a disconnect means both have ended.
    let (tx, rx) = mpsc::channel::<Out>();
    let err_tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(&mut stderr_pipe).lines() {
            let Ok(line) = line else { break };
            if err_tx.send(Out::Stderr(line)).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(Out::Console(line)).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let mut stderr = String::new();
    let mut console = String::new();
    let mut alive = false;
    let mut running = None;
    let mut first_result = None;
    let end = loop {
        let now = start.elapsed();
        let limit = if alive {
            spec.timeout
        } else {
            spec.timeout.min(life)
        };
        let Some(left) = limit.checked_sub(now) else {
            break if alive {
                End::TimedOut { running }
            } else if life < spec.timeout {
                End::NoLife
            } else {
                End::TimedOut { running: None }
            };
        };
        match rx.recv_timeout(left) {
            Ok(Out::Stderr(line)) => {
                spec.events.emit(crate::Event::QemuStderr(&line));
                stderr.push_str(&line);
                stderr.push('\n');
                if crate::console::qemu_fatal(&line) {
                    break End::QemuFatal(line);
                }
            }
            Ok(Out::Console(bytes)) => {
                let _ = console_log.write_all(&bytes);
                let line = String::from_utf8_lossy(&bytes).replace('\r', "");
                spec.events
                    .emit(crate::Event::Console(line.trim_end_matches('\n')));
                if let Some(rest) = line.split("udp-repair-init: ").nth(1) {
                    let mut w = rest.split_whitespace();
                    match (
                        w.next(),
                        w.next().and_then(|n| n.parse::<usize>().ok()),
                        w.next(),
                    ) {
                        (Some("up"), _, _) => alive = true,
                        (Some("unit"), Some(n), Some("start")) => running = Some(n),
                        (Some("unit"), Some(_), Some("end")) => {
                            running = None;
                            first_result.get_or_insert(start.elapsed());
                        }
                        _ => {}
                    }
                }
                console.push_str(&line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = guard.0.wait().ctx(|| "waiting for qemu".into())?;
                break End::Exited(status.code());
            }
        }
    };
    drop(guard); // kills QEMU if still running, reaps it
    let _ = console_log.flush();
    if !stderr.is_empty() {
        // Kept beside the console: QEMU's own account of a failure.
        let _ = std::fs::write(spec.console.with_file_name("qemu-stderr.log"), &stderr);
    }
    let results = std::fs::read(&spec.results)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Ok(Booted {
        accel,
        end,
        console,
        results,
        elapsed: start.elapsed(),
        first_result,
        stderr,
    })
}

/// How long an init may take to say it is up under KVM before KVM is
/// judged broken here.
const KVM_LIFE: Duration = Duration::from_secs(20);

/// What [`Accel::Auto`] means here without a new probe: `Some(Tcg)` when
/// `/dev/kvm` does not open or the cached verdict says KVM guests do not
/// come up on this host (`kvm-probe` in the cache, per QEMU version and
/// host kernel), `Some(Kvm)` when the verdict says they do, `None` when
/// no probe has been recorded. A forced accelerator is returned as it is.
/// Both runners follow it (the vng runner probes the same way).
pub fn resolve_accel(cache: &Cache, accel: Accel) -> Option<Accel> {
    match accel {
        Accel::Auto => match kvm_verdict(cache) {
            Some(false) => Some(Accel::Tcg),
            _ if !kvm_usable() => Some(Accel::Tcg),
            Some(true) => Some(Accel::Kvm),
            None => None,
        },
        other => Some(other),
    }
}

/// Boots `spec`. With [`Accel::Auto`], KVM is used when `/dev/kvm` opens
/// and a probe boot (this boot, bounded) shows life; the verdict is cached
/// per QEMU and host kernel, and a KVM that hangs falls back to TCG.
pub fn boot(cache: &Cache, spec: &Spec, accel: Accel) -> Result<Booted> {
    boot_probing(cache, accel, &spec.events, |a, life| {
        boot_once(spec, a, life.unwrap_or(spec.timeout))
    })
}

/// The accelerator rule both runners follow: [`resolve_accel`], and with
/// no verdict yet, `boot(Kvm, Some(KVM_LIFE))` as the probe (its verdict
/// recorded; a KVM that shows no life is reported as
/// [`crate::Event::KvmFallback`] and the guest boots again under TCG).
/// `boot(accel, life)` is one boot; `life` bounds the time to the init's
/// "up" line (`None`: the runner's own deadline only).
pub(crate) fn boot_probing(
    cache: &Cache,
    accel: Accel,
    events: &crate::Events,
    mut boot: impl FnMut(Accel, Option<Duration>) -> Result<Booted>,
) -> Result<Booted> {
    let accel = match resolve_accel(cache, accel) {
        Some(a) => a,
        None => {
            let b = boot(Accel::Kvm, Some(KVM_LIFE))?;
            let works = b.console.contains("udp-repair-init: up");
            record_kvm_verdict(cache, works, &b);
            if works {
                return Ok(b);
            }
            events.emit(crate::Event::KvmFallback(&kvm_failure(&b)));
            Accel::Tcg
        }
    };
    boot(accel, None)
}

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn probe_key() -> String {
    let qemu = Command::new(crate::arch::guest().map(|a| a.qemu).unwrap_or("qemu"))
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let host = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    format!("{qemu} | host {host}")
}

fn probe_path(cache: &Cache) -> PathBuf {
    cache.root().join("kvm-probe")
}

/// The cached KVM verdict for this QEMU and host kernel.
fn kvm_verdict(cache: &Cache) -> Option<bool> {
    let text = std::fs::read_to_string(probe_path(cache)).ok()?;
    let (key, verdict) = text.lines().next()?.rsplit_once(" => ")?;
    (key == probe_key()).then(|| verdict.starts_with("ok"))
}

/// Why probe boot `b` under KVM is judged a failure, for people.
fn kvm_failure(b: &Booted) -> String {
    match &b.end {
        End::QemuFatal(line) => format!("KVM failed at once here ({line})"),
        _ => format!(
            "KVM showed no sign of life within {}s here",
            KVM_LIFE.as_secs()
        ),
    }
}

/// Records whether KVM guests come up here, from probe boot `b`.
fn record_kvm_verdict(cache: &Cache, works: bool, b: &Booted) {
    let why = match &b.end {
        End::NoLife => format!("no sign of life in {}s", KVM_LIFE.as_secs()),
        End::Exited(c) => format!(
            "qemu exited ({c:?}): {}",
            b.stderr.lines().last().unwrap_or("")
        ),
        End::TimedOut { .. } => "timed out".into(),
        End::QemuFatal(line) => format!("qemu: {line}"),
    };
    let line = format!(
        "{} => {}\n",
        probe_key(),
        if works {
            "ok".to_string()
        } else {
            format!("bad: {why}")
        }
    );
    let _ = std::fs::create_dir_all(cache.root());
    let _ = std::fs::write(probe_path(cache), line);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            bzimage: "/b/bzImage".into(),
            initrd: "/b/initrd,x".into(),
            cmdline: vec!["quiet".into()],
            memory_mb: 512,
            cpus: 2,
            timeout: Duration::from_secs(5),
            console: "/tmp/c".into(),
            results: "/tmp/r,1".into(),
            events: crate::Events::none(),
        }
    }

    #[test]
    fn args_carry_the_essentials() {
        let a: Vec<String> = qemu_args(&spec(), Accel::Tcg, crate::arch::guest().unwrap())
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let has = |x: &str| a.iter().any(|s| s == x);
        assert!(has("-no-reboot") && has("tcg") && has("/b/bzImage"));
        assert!(has("file,id=results,path=/tmp/r,,1"), "{a:?}");
        let cmdline = a.iter().skip_while(|s| *s != "-append").nth(1).unwrap();
        assert!(
            cmdline.contains("console=ttyS0")
                && cmdline.contains("panic=-1")
                && cmdline.ends_with("quiet")
        );
    }

    #[test]
    fn accel_parses() {
        assert_eq!("kvm".parse::<Accel>().unwrap(), Accel::Kvm);
        assert!("xen"
            .parse::<Accel>()
            .unwrap_err()
            .contains("auto, kvm or tcg"));
    }
}
