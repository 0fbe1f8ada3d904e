//! A thin layer over libtest-mimic that also records every outcome and
//! writes it as KTAP, so the host harness parses the Rust suites exactly as
//! it parses the C kselftests.
//!
//! libtest-mimic keeps its own human output on stdout. When the environment
//! variable `UDP_REPAIR_KTAP` names a file, the KTAP report goes there once
//! the run is over.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use libtest_mimic::{Completion, Failed};

/// What a test body returns: `Ok(Completion::Completed)` passes,
/// `Ok(Completion::Ignored { .. })` is a SKIP with its reason, `Err` fails.
pub type Outcome = Result<Completion, Failed>;

type Body = Box<dyn FnOnce() -> Outcome + Send>;

/// One test: a `::`-separated name (`suite::group::case`) and its body.
pub struct Test {
    name: String,
    body: Body,
}

impl std::fmt::Debug for Test {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Test").field("name", &self.name).finish()
    }
}

impl Test {
    /// A test that passes or fails.
    pub fn new(
        name: impl Into<String>,
        f: impl FnOnce() -> Result<(), Failed> + Send + 'static,
    ) -> Self {
        Self::skippable(name, move || f().map(|()| Completion::Completed))
    }

    /// A test that may decide at run time that it cannot run (SKIP, with a
    /// reason), for example because the kernel lacks `UDP_REPAIR`.
    pub fn skippable(
        name: impl Into<String>,
        f: impl FnOnce() -> Outcome + Send + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            body: Box::new(f),
        }
    }

    /// The test's full name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Returns a SKIP outcome with `reason`.
pub fn skip(reason: impl ToString) -> Outcome {
    Ok(Completion::ignored_with(reason))
}

/// Fails the test with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::ktap::Failed::from(format!(
                "{}:{}: check `{}` failed: {}",
                file!(),
                line!(),
                stringify!($cond),
                format!($($arg)+)
            ))
            .into());
        }
    };
}

/// Fails the test unless `left == right`, printing both and a message.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr, $($arg:tt)+) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err($crate::ktap::Failed::from(format!(
                "{}:{}: {} != {}: left {:?}, right {:?}: {}",
                file!(),
                line!(),
                stringify!($left),
                stringify!($right),
                l,
                r,
                format!($($arg)+)
            ))
            .into());
        }
    }};
}

/// Adds what was being done to an error, so a failed syscall says which.
pub trait Context<T> {
    /// Wraps the error with `what`.
    fn ctx(self, what: &str) -> Result<T, Failed>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, Failed> {
        self.map_err(|e| Failed::from(format!("{what}: {e}")))
    }
}

#[derive(Debug)]
enum Status {
    Pass,
    Fail(String),
    Skip(String),
}

#[derive(Debug)]
struct Record {
    name: String,
    status: Status,
    elapsed: Duration,
}

/// Runs `tests` under libtest-mimic (its filters and flags apply) and writes
/// the KTAP report. Returns the process exit code.
pub fn run(tests: Vec<Test>) -> std::process::ExitCode {
    let mut args = libtest_mimic::Arguments::from_args();
    // One test at a time: tests change namespaces and sysctls, and the
    // guest has few CPUs; order is then stable in the KTAP report.
    args.test_threads.get_or_insert(1);

    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let trials = tests
        .into_iter()
        .map(|t| {
            let records = Arc::clone(&records);
            let name = t.name.clone();
            let body = t.body;
            libtest_mimic::Trial::ignorable_test(t.name, move || {
                let start = Instant::now();
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body))
                    .unwrap_or_else(|p| {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "test panicked".into());
                        Err(Failed::from(format!("panicked: {msg}")))
                    });
                let status = match &outcome {
                    Ok(Completion::Completed) => Status::Pass,
                    Ok(Completion::Ignored { reason }) => {
                        Status::Skip(reason.clone().unwrap_or_default())
                    }
                    Err(f) => Status::Fail(f.message().unwrap_or("failed").to_string()),
                };
                records
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Record {
                        name,
                        status,
                        elapsed: start.elapsed(),
                    });
                outcome
            })
        })
        .collect();

    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(path) = std::env::var_os("UDP_REPAIR_KTAP") {
        let records = records.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = std::fs::write(&path, render(&records)) {
            eprintln!(
                "udp-repair-selftests: cannot write KTAP to {}: {e}",
                path.to_string_lossy()
            );
            return std::process::ExitCode::from(2);
        }
    }
    conclusion.exit_code()
}

/// Renders records as a KTAP version 1 document, with the project's one
/// KTAP writer.
fn render(records: &[Record]) -> String {
    let cases: Vec<udp_repair_ktap::Case> = records
        .iter()
        .map(|r| {
            let ms = Some(r.elapsed.as_millis() as u64);
            let (status, message, duration_ms) = match &r.status {
                Status::Pass => (udp_repair_ktap::Status::Pass, String::new(), ms),
                Status::Skip(why) => (udp_repair_ktap::Status::Skip, why.clone(), None),
                Status::Fail(msg) => (udp_repair_ktap::Status::Fail, msg.clone(), ms),
            };
            udp_repair_ktap::Case {
                name: r.name.clone(),
                status,
                message,
                duration_ms,
            }
        })
        .collect();
    udp_repair_ktap::write(&cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_all_three_statuses() {
        let recs = vec![
            Record {
                name: "a::x".into(),
                status: Status::Pass,
                elapsed: Duration::from_millis(3),
            },
            Record {
                name: "a::y".into(),
                status: Status::Skip("no UDP_REPAIR\nhere".into()),
                elapsed: Duration::ZERO,
            },
            Record {
                name: "a::z".into(),
                status: Status::Fail("bad\nthing".into()),
                elapsed: Duration::ZERO,
            },
        ];
        let k = render(&recs);
        assert!(k.starts_with("KTAP version 1\n1..3\n"), "{k}");
        assert!(k.contains("ok 1 a::x\n"), "{k}");
        assert!(k.contains("ok 2 a::y # SKIP no UDP_REPAIR here\n"), "{k}");
        assert!(
            k.contains("# bad\n# thing\n# duration_ms 0\nnot ok 3 a::z\n"),
            "{k}"
        );
    }
}
