//! Shared by the CLI tests: one way to run `udp-repair restore` and see
//! what it did.

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long one `restore` may run before it is killed and taken for a hang.
pub const TIME_LIMIT: Duration = Duration::from_secs(20);

/// What one `udp-repair restore` run did.
#[derive(Debug)]
pub struct Outcome {
    /// How the process ended; `None`: it was still running after
    /// [`TIME_LIMIT`], and was killed.
    pub status: Option<ExitStatus>,
    /// Its standard error.
    pub stderr: String,
    /// Whether the command after `--` ran (it created the marker file).
    pub ran: bool,
}

impl Outcome {
    /// The exit code, if the process exited (not killed, nor by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Runs `udp-repair restore IMG [extra] -- /bin/sh -c "touch MARKER"`
/// (MARKER: `img` with the extension `ran`), killing it after
/// [`TIME_LIMIT`].
pub fn restore_cli(img: &Path, extra: &[&str]) -> Outcome {
    let marker = img.with_extension("ran");
    let _ = std::fs::remove_file(&marker);
    let mut child = Command::new(env!("CARGO_BIN_EXE_udp-repair"))
        .arg("restore")
        .arg(img)
        .args(extra)
        .args(["--", "/bin/sh", "-c"])
        .arg(format!("touch {}", marker.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning udp-repair restore");
    // Read on a thread of its own, so that a chatty child cannot block on
    // a full pipe while this one waits for it to exit.
    let mut pipe = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = pipe.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + TIME_LIMIT;
    let status = loop {
        match child.try_wait().expect("waiting for udp-repair restore") {
            Some(s) => break Some(s),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    let stderr = reader.join().expect("the stderr reader");
    let ran = marker.exists();
    let _ = std::fs::remove_file(&marker);
    Outcome {
        status,
        stderr,
        ran,
    }
}
