//! How the CLI renders the vm stages' events on stderr: one line per
//! notable event, a progress line for a kernel build (redrawn in place on
//! a terminal, every 10% or 30 s otherwise), and with `--verbose` make's
//! output, the guest console and QEMU's stderr as they come.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use udp_repair_vm::build::fmt_secs;
use udp_repair_vm::{Event, Events};

/// State of the build progress line.
struct Line {
    tty: bool,
    last_report: Instant,
    last_pct: usize,
}

/// The CLI's renderer: see the module documentation.
pub fn stderr_events(verbose: bool) -> Events {
    let line = Mutex::new(Line {
        tty: std::io::stderr().is_terminal(),
        last_report: Instant::now(),
        last_pct: 0,
    });
    Events::new(move |e| {
        let mut l = line.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            Event::Installing(p) => eprintln!("udp-repair: installing {}", p.join(" ")),
            Event::Importing { tarball, git } => eprintln!(
                "udp-repair: importing {} into {}",
                tarball.display(),
                git.display()
            ),
            Event::WaitingForLock(p) => eprintln!(
                "udp-repair: waiting for another kernel build to finish ({})",
                p.display()
            ),
            Event::MakeOutput(s) if verbose => eprintln!("{s}"),
            Event::BuildStep {
                steps,
                estimate,
                elapsed,
                target,
            } if !verbose => {
                let (text, pct) = progress(*steps, *estimate, *elapsed, target);
                if l.tty {
                    eprint!("\r\x1b[K  building: {}", truncate(&text, 100));
                } else if pct >= l.last_pct + 10
                    || l.last_report.elapsed() > Duration::from_secs(30)
                {
                    eprintln!("  building: {text}");
                    l.last_report = Instant::now();
                    l.last_pct = pct - pct % 10;
                }
            }
            Event::BuildEnded => {
                if l.tty && !verbose {
                    eprint!("\r\x1b[K");
                }
                l.last_pct = 0;
            }
            Event::Console(s) if verbose => eprintln!("{s}"),
            Event::QemuStderr(s) if verbose => eprintln!("qemu: {s}"),
            Event::KvmFallback(why) => eprintln!("udp-repair: {why}; using TCG"),
            _ => {}
        }
    })
}

/// The progress text of a build step, and its percentage (0 unknown).
fn progress(
    steps: usize,
    estimate: Option<usize>,
    elapsed: Duration,
    what: &str,
) -> (String, usize) {
    match estimate {
        Some(total) => {
            let pct = (steps * 100 / total.max(1)).min(99);
            let eta = if steps > 20 {
                let secs =
                    elapsed.as_secs_f64() * (total.saturating_sub(steps)) as f64 / steps as f64;
                format!(" ETA {}", fmt_secs(secs as u64))
            } else {
                String::new()
            };
            (format!("[{pct:>3}%] {steps}/~{total}{eta} {what}"), pct)
        }
        None => (format!("{steps} steps {what}"), 0),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_has_percent_and_eta_once_steps_accrue() {
        let (t, pct) = progress(600, Some(2400), Duration::from_secs(60), "net/ipv4/udp.o");
        assert_eq!(pct, 25);
        assert_eq!(t, "[ 25%] 600/~2400 ETA 3m00s net/ipv4/udp.o");
        assert_eq!(progress(5, None, Duration::ZERO, "x").0, "5 steps x");
    }
}
