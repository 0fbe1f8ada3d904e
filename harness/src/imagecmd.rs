//! `dump`, `show` and `restore`: the checkpoint image commands.

use clap::Subcommand;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use udp_repair_engine::inject::Strategy;
use udp_repair_engine::{dump, options, restore, wire};
use udp_repair_proto::v1;

/// `eprintln!` that cannot panic: a write to a closed stderr (EPIPE, as
/// Rust ignores SIGPIPE) is dropped, so that it does not turn a dump's
/// outcome, an image kept or a queue put back, into a panic's exit 101.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The image subcommands, flattened into the top-level command.
#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Checkpoint a UDP socket of a running process into an image file
    /// (mode 0600). The socket is left as it was, except for what an option
    /// below accepts by name (--take-error moves a pending error into the
    /// image); what the kernel cannot read without changing, the dump
    /// refuses by name. Needs ptrace rights over PID (pidfd_getfd) and
    /// CAP_NET_ADMIN (UDP_REPAIR): run it as root.
    Dump {
        /// The process holding the socket.
        #[arg(long)]
        pid: i32,
        /// The socket's fd number in that process.
        #[arg(long)]
        fd: i32,
        /// The image file to write.
        #[arg(short = 'o', long = "output", value_name = "IMAGE")]
        output: PathBuf,
        /// Dump even with pending (corked) data that this kernel cannot
        /// read back; the restored socket then has nothing pending (on a
        /// kernel with UDP_REPAIR_PENDING_LOST it is marked, so that the
        /// application's next append fails with ECANCELED).
        #[arg(long)]
        drop_pending: bool,
        /// Dump even with an eBPF socket filter (not readable); it is lost.
        #[arg(long)]
        drop_filter: bool,
        /// Dump even when the socket is a multicast member; memberships are
        /// lost.
        #[arg(long)]
        drop_multicast: bool,
        /// Fail instead of warning when queued datagrams carry metadata the
        /// restore cannot re-create (receive timestamps, IP options, the
        /// flow label...).
        #[arg(long)]
        strict: bool,
        /// Dump although the dump cannot vouch that every zero-length
        /// datagram of the receive queue is in the image (a kernel without
        /// the peek fix: one peeked before is hidden from the dump's walk,
        /// and the walk marks those it sees, so the application's later
        /// SO_PEEK_OFF walks skip them). The image records it. Off: such a
        /// dump is refused (--drain reads every datagram instead).
        #[arg(long)]
        accept_peek_marks: bool,
        /// Take a pending socket error (an ICMP error such as port
        /// unreachable) into the image instead of refusing: SO_ERROR clears
        /// it on the socket, the restore re-creates it. Refused anyway when
        /// the error queue may hold entries (IP_RECVERR, TX timestamps).
        #[arg(long)]
        take_error: bool,
        /// Dump a pending datagram although this kernel's reader sees its
        /// payload and destination only (the recvmsg series): the cork
        /// state set by cmsgs is then taken from the socket options.
        #[arg(long)]
        accept_partial_cork: bool,
        /// How long the send buffer may stay in use (datagrams in flight)
        /// before a kernel without a reader takes it for pending data, in
        /// milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 200)]
        settle_ms: u64,
        /// Dump on a kernel without udp_diag, where a SHUT_WR cannot be
        /// seen (it is then lost; the image says so).
        #[arg(long)]
        without_shutdown_state: bool,
        /// Take the receive queue out of the socket instead of peeking it:
        /// linear time (a peek walk is quadratic: seconds for tens of
        /// thousands of datagrams), for a checkpoint that ends the original
        /// (migration). The original's receive queue is then empty. If the
        /// dump or the image write fails after the queue was taken, the
        /// datagrams are put back by raw injection and the error says what
        /// changed (new receive timestamps, after any datagram that arrived
        /// meanwhile). What the socket's state decides is refused before
        /// the queue is taken: --strict's losses that its options imply,
        /// another socket on the port that could take what is sent to it,
        /// an address that is not a unicast one of this host, a loopback
        /// that is down, a namespace the dump cannot enter. What only the
        /// datagrams tell is refused after, with the queue put back:
        /// zero-length ones without --accept-peek-marks, and under --strict
        /// one to a broadcast or multicast address or from an interface
        /// gone since.
        #[arg(long)]
        drain: bool,
    },
    /// Print an image: socket, options, both queues.
    Show {
        /// The image file.
        image: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also print payloads (hex, first 64 bytes).
        #[arg(long)]
        payloads: bool,
    },
    /// Restore the socket of an image and exec CMD with it as fd 3
    /// (socket activation: LISTEN_FDS=1, LISTEN_PID=the exec'ed process).
    /// Needs root: CAP_NET_RAW for the raw strategy and for a pending
    /// error, CAP_NET_ADMIN for options such as SO_RCVBUFFORCE. All or
    /// nothing: on failure no socket is left and CMD does not run.
    ///
    /// An image is trusted with values that need a capability (a mark, a
    /// priority above 6, a transparent socket, IP options such as source
    /// routes, a buffer beyond rmem_max, a port below
    /// ip_unprivileged_port_start, SO_REUSEPORT onto a port held here,
    /// datagrams from addresses not of this host or from ports below that
    /// start) only when its file is a regular file owned by the user
    /// restoring it and writable by no one else, or with --trust-image;
    /// otherwise such an image is refused, each value named.
    Restore {
        /// The image file.
        image: PathBuf,
        /// How to re-create the receive queue.
        #[arg(long, value_enum, default_value_t = StrategyArg::Raw)]
        strategy: StrategyArg,
        /// Go on when a datagram cannot be re-created (reported on stderr).
        #[arg(long)]
        accept_rx_loss: bool,
        /// Grant the image's privileged values whoever owns its file: for
        /// an image you know the writer of.
        #[arg(long)]
        trust_image: bool,
        /// The command, after `--`.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

/// How `restore` re-creates the receive queue, as the CLI takes it (the
/// engine's [`Strategy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyArg {
    /// Inject each datagram with its original source through a raw socket
    /// (needs CAP_NET_RAW); loses nothing but a UDP_GRO aggregate whose
    /// source port is taken here (sent from a socket bound to it).
    Raw,
    /// Send each datagram from a transparent socket bound to its original
    /// source; loses a datagram whose source port is taken.
    Transparent,
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Self {
        match s {
            StrategyArg::Raw => Strategy::Raw,
            StrategyArg::Transparent => Strategy::Transparent,
        }
    }
}

/// Runs one image subcommand.
pub fn run(cmd: ImageCmd) -> ExitCode {
    match cmd {
        ImageCmd::Dump {
            pid,
            fd,
            output,
            drop_pending,
            drop_filter,
            drop_multicast,
            strict,
            accept_peek_marks,
            take_error,
            accept_partial_cork,
            settle_ms,
            without_shutdown_state,
            drain,
        } => {
            let opts = dump::DumpOptions {
                drain_receive_queue: drain,
                drop_pending,
                drop_filter,
                drop_multicast,
                take_error,
                accept_partial_cork,
                outq_settle: std::time::Duration::from_millis(settle_ms),
                without_shutdown_state,
                require_vouched: strict || !accept_peek_marks,
                refuse_metadata_loss: strict,
                ..Default::default()
            };
            // From the first change to the socket (a peek walk moves
            // SO_PEEK_OFF and turns on the per-datagram options; a draining
            // dump takes the queue out; --take-error reads the error) until
            // the socket is as it was or the image is kept, a signal must
            // not end the process: every signal that can be held (SIGINT,
            // SIGTERM, SIGUSR1, SIGALRM, ...) waits (SIGKILL and SIGSTOP
            // cannot be held). Once the dump has said what it did, a signal
            // that waited takes effect, unless the image was kept with the
            // queue drained: then the dump exits 0 and names it, as a dump
            // killed then would read as a failed one, and the application
            // be resumed without its queue. A write past RLIMIT_FSIZE must
            // fail with EFBIG, and the queue and the error go back,
            // instead of SIGXFSZ ending the process.
            let held = match udp_repair_engine::sys::hold_signals()
                .and_then(|h| udp_repair_engine::sys::ignore_sigxfsz().map(|()| h))
            {
                Ok(h) => h,
                Err(e) => {
                    say!("udp-repair dump: holding signals during the dump: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let done = dump_pid(pid, fd, opts, &output);
            // A drain that kept its image took a queue out of the socket.
            let drained_kept = drain
                && done
                    .as_ref()
                    .is_ok_and(|cp| cp.receive_queue.as_ref().is_some_and(|q| q.count > 0));
            let code = match done {
                Ok(cp) => {
                    let q = cp.receive_queue.clone().unwrap_or_default();
                    say!(
                        "dumped fd {fd} of pid {pid}: {} datagram(s), {} byte(s) queued; send queue: {}",
                        q.count,
                        q.bytes,
                        describe_sq(cp.send_queue.as_ref())
                    );
                    if !q.zero_length_vouched {
                        say!("warning: {}", q.zero_length_note);
                    }
                    for d in &cp.dropped_state {
                        say!("warning: dropped {d}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    say!("udp-repair dump: {e}");
                    ExitCode::FAILURE
                }
            };
            // The signals that would do something: not those ignored here
            // (SIGXFSZ: a write past RLIMIT_FSIZE failed with EFBIG, which
            // the outcome says; SIGPIPE: Rust's runtime ignores it) or by
            // default (SIGCHLD, SIGWINCH, SIGURG), nor SIGCONT, which
            // continued the process when it was sent.
            let waited: Vec<i32> = held
                .pending()
                .into_iter()
                .filter(|&s| {
                    ![
                        libc::SIGXFSZ,
                        libc::SIGPIPE,
                        libc::SIGCHLD,
                        libc::SIGWINCH,
                        libc::SIGURG,
                        libc::SIGCONT,
                    ]
                    .contains(&s)
                })
                .collect();
            let names: Vec<String> = waited.iter().map(|&s| signal_name(s)).collect();
            if waited.is_empty() {
                // Nothing that waited would act: the held ones are dropped
                // at exit.
                held.hold_until_exit();
            } else if drained_kept {
                // The image holds the queue, which the socket no longer
                // does: a dump that died now would read as a failed one,
                // and the application be resumed without its queue.
                say!(
                    "udp-repair dump: {} arrived during the dump and waited; the image is kept and \
                     holds the receive queue the dump drained, so the dump exits 0 and the \
                     signal is not delivered",
                    names.join(", ")
                );
                held.hold_until_exit();
            } else {
                // The socket is as it was (a peek walk, or a failed dump
                // that put back what it took): the signal takes effect.
                say!(
                    "udp-repair dump: {} arrived during the dump and waited; it takes effect now",
                    names.join(", ")
                );
                drop(held);
            }
            code
        }
        ImageCmd::Show {
            image,
            json,
            payloads,
        } => match load(&image) {
            Ok(cp) => {
                let text = if json {
                    serde_json::to_string_pretty(&to_json(&cp, payloads)).unwrap_or_default() + "\n"
                } else {
                    show_text(&cp, payloads)
                };
                // A reader that stops early (`| head`) is not an error of
                // show's, and no reason to panic.
                use std::io::Write as _;
                match std::io::stdout().write_all(text.as_bytes()) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        say!("udp-repair show: writing to stdout: {e}");
                        ExitCode::FAILURE
                    }
                    _ => ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                say!("udp-repair show: {e}");
                ExitCode::FAILURE
            }
        },
        ImageCmd::Restore {
            image,
            strategy,
            accept_rx_loss,
            trust_image,
            cmd,
        } => {
            let e = restore_exec(&image, strategy.into(), accept_rx_loss, trust_image, &cmd);
            say!("udp-repair restore: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A signal's name (`SIGTERM`), or its number for one without a
/// conventional name (the real-time signals: `SIGRTMIN+3`).
fn signal_name(sig: i32) -> String {
    let named = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGURG, "SIGURG"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    if let Some((_, n)) = named.iter().find(|(s, _)| *s == sig) {
        return (*n).to_string();
    }
    let rtmin = libc::SIGRTMIN();
    if sig >= rtmin {
        return format!("SIGRTMIN+{}", sig - rtmin);
    }
    format!("signal {sig}")
}

fn describe_sq(sq: Option<&v1::SendQueue>) -> String {
    match sq {
        Some(s) if s.dropped => {
            "send buffer in use at the dump (in flight, or pending): any pending datagram DROPPED"
                .into()
        }
        Some(v1::SendQueue {
            pending: Some(p),
            reader,
            ..
        }) => {
            format!("{} byte(s) pending (read via {reader})", p.payload.len())
        }
        Some(s) if s.udp_cork => "empty, UDP_CORK set".into(),
        _ => "empty".into(),
    }
}

/// Dumps fd `fd` of process `pid` into the image file `out`. Call it with
/// the termination signals held (the signals are delivered after the
/// caller reports the outcome, and an unkept image file has been removed).
fn dump_pid(
    pid: i32,
    fd: i32,
    opts: dump::DumpOptions,
    out: &Path,
) -> Result<v1::Checkpoint, String> {
    let drain = opts.drain_receive_queue;
    // The image file first: a dump that cannot be written must not have
    // touched the socket (--take-error takes its pending error).
    let mut file = ImageFile::create(out)?;
    let sock = udp_repair_engine::sys::take_fd(pid, fd).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            format!("pidfd_getfd(pid {pid}, fd {fd}): {e} (needs ptrace rights over pid {pid}: CAP_SYS_PTRACE)")
        } else {
            format!("pidfd_getfd(pid {pid}, fd {fd}): {e}")
        }
    })?;
    let mut cp = dump::dump_with(sock.as_fd(), &opts).map_err(|e| with_flag(&e, drain))?;
    // Written from the checkpoint's own payloads, not from a copy of them.
    let kept = udp_repair_proto::encode_vectored(&mut cp)
        .map_err(|e| e.to_string())
        .and_then(|img| file.commit(&img));
    match kept {
        Ok(()) => Ok(cp),
        // What is in the image only goes back before failing: the queue
        // of a draining dump, then a pending error the dump took.
        Err(mut e) => {
            if drain {
                e.push_str("; ");
                e.push_str(&dump::put_back_receive_queue(sock.as_fd(), &cp));
            }
            e.push_str(&dump::put_back_pending_error(sock.as_fd(), &cp));
            Err(e)
        }
    }
}

/// An image being written: a new file (`O_CREAT|O_EXCL`, which follows no
/// symlink) with a name no one can predict in the output's directory, mode
/// 0600 (an image holds payloads), renamed over the output once complete,
/// so a reader never sees a partial image and a planted file cannot
/// redirect the write. Removed if never committed.
struct ImageFile {
    tmp: PathBuf,
    out: PathBuf,
    file: Option<std::fs::File>,
}

impl ImageFile {
    fn create(out: &Path) -> Result<Self, String> {
        use std::os::unix::fs::OpenOptionsExt;
        // The image replaces the output by rename: only a regular file (or
        // nothing) may be there, not a device, a symlink (/dev/stdout), a
        // pipe or a directory, which the rename would replace or fail on
        // after the socket was touched.
        if let Ok(m) = std::fs::symlink_metadata(out) {
            if !m.file_type().is_file() {
                return Err(format!(
                    "{}: not a regular file (a device, a symlink, a pipe or a directory): \
                     the image is written to a new file renamed over the output, so it would \
                     replace it; name a file",
                    out.display()
                ));
            }
        }
        // "dir/name/" names a directory to be: the rename onto it would
        // fail, after the socket was touched.
        if out.as_os_str().as_encoded_bytes().ends_with(b"/") {
            return Err(format!(
                "{}: ends with '/': name a file, not a directory",
                out.display()
            ));
        }
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = out
            .file_name()
            .ok_or_else(|| format!("{}: not a file name", out.display()))?
            .to_string_lossy()
            .into_owned();
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        // At most 64 characters of the name, so that the temporary name
        // fits NAME_MAX (255 bytes) whenever the output's name does.
        let short: String = name.chars().take(64).collect();
        let tmp = dir.join(format!(".{short}.{}.{nonce:x}.tmp", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| format!("writing {}: {e}", out.display()))?;
        Ok(ImageFile {
            tmp,
            out: out.to_path_buf(),
            file: Some(file),
        })
    }

    fn commit(&mut self, img: &udp_repair_proto::Encoded<'_>) -> Result<(), String> {
        let mut f = self.file.take().ok_or("image already written")?;
        let r = img
            .write_to(&mut f)
            .and_then(|()| f.sync_all())
            .and_then(|()| std::fs::rename(&self.tmp, &self.out));
        r.map_err(|e| format!("writing {}: {e}", self.out.display()))
    }
}

impl Drop for ImageFile {
    fn drop(&mut self) {
        // Not renamed: remove the temporary file (after a rename it is
        // gone already).
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// A dump error, with the flag of this command that accepts what it
/// refused, where one does (`drain`: the dump had `--drain` already).
fn with_flag(e: &udp_repair_engine::Error, drain: bool) -> String {
    if e.kind != udp_repair_engine::Kind::Refused {
        return e.to_string();
    }
    let flag = match e.step.as_str() {
        "socket filter" => "--drop-filter",
        "multicast memberships" => "--drop-multicast",
        "shutdown state" => "--without-shutdown-state",
        "pending socket error" => "--take-error",
        "send queue" => "--drop-pending (or --accept-partial-cork, where it says so)",
        "receive queue" if drain && e.to_string().contains("zero-length") => "--accept-peek-marks",
        "receive queue" if e.to_string().contains("zero-length") => {
            "--accept-peek-marks, or --drain for a socket being migrated"
        }
        "receive queue" | "per-datagram metadata" => "leave out --strict",
        _ => return e.to_string(),
    };
    format!("{e} [{flag}]")
}

/// Why the image file at `path` was not trusted by owner and mode.
fn why_untrusted(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    match std::fs::metadata(path) {
        Err(e) => format!("{}: {e}", path.display()),
        Ok(m) if !m.is_file() => format!("{} is not a regular file", path.display()),
        Ok(m) if m.uid() != me => format!(
            "{} is owned by uid {}, and this restore runs as uid {me}",
            path.display(),
            m.uid()
        ),
        Ok(m) => format!(
            "{} is writable by its group or others (mode {:o})",
            path.display(),
            m.mode() & 0o7777
        ),
    }
}

fn load(path: &PathBuf) -> Result<v1::Checkpoint, String> {
    load_owned(path).map(|(cp, _)| cp)
}

/// The image at `path`, and whether its file (as opened, so no later swap
/// changes the answer) is a regular file owned by this process's effective
/// user and writable by no one else: an image this user wrote.
fn load_owned(path: &PathBuf) -> Result<(v1::Checkpoint, bool), String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    let f = std::fs::File::open(path).map_err(at)?;
    let meta = f.metadata().map_err(at)?;
    // A regular file: a pipe or a device made by this user says nothing of
    // who wrote what comes through it.
    let own = meta.is_file()
        && meta.uid() == rustix::process::geteuid().as_raw()
        && meta.mode() & 0o022 == 0;
    // No more than the largest image the format allows, plus one byte to
    // tell that the input is larger.
    let limit = (udp_repair_proto::HEADER_LEN as u64)
        + udp_repair_proto::MAX_BODY
        + (udp_repair_proto::TRAILER_LEN_SHA256 as u64)
        + 1;
    // Sized once from the file's length (a regular file's; growth beyond
    // is still bounded by `limit`), and decoded in place: the payloads
    // are slices of this buffer.
    let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize);
    f.take(limit).read_to_end(&mut bytes).map_err(at)?;
    let cp = udp_repair_proto::decode_bytes(bytes.into())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((cp, own))
}

fn restore_exec(
    image: &PathBuf,
    strategy: Strategy,
    accept_rx_loss: bool,
    trust_image: bool,
    cmd: &[String],
) -> String {
    let (cp, own) = match load_owned(image) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let opts = restore::RestoreOptions {
        strategy,
        accept_rx_loss,
        trust_image: trust_image || own,
        ..Default::default()
    };
    let (sock, report) = match restore::restore_with(&cp, &opts) {
        Ok(x) => x,
        Err(e)
            if !opts.trust_image
                && e.kind == udp_repair_engine::Kind::Refused
                && e.step.starts_with("checking what the image asks") =>
        {
            return format!("{e}\n(not trusted: {})", why_untrusted(image));
        }
        Err(e) => return e.to_string(),
    };
    for (i, why) in &report.lost {
        say!("warning: receive queue datagram {i} lost: {why}");
    }
    if report.pending_marked_lost {
        say!(
            "note: the image's dropped pending datagram is marked on the new socket \
             (UDP_REPAIR_PENDING_LOST): the application's next append to it fails with ECANCELED"
        );
    }
    // fd 3, without FD_CLOEXEC, for the exec'ed command.
    if sock.as_raw_fd() == 3 {
        if let Err(e) = rustix::io::fcntl_setfd(&sock, rustix::io::FdFlags::empty()) {
            return format!("clearing FD_CLOEXEC on fd 3: {e}");
        }
        std::mem::forget(sock);
    } else {
        // The lowest free number from 3 up: 3 itself unless something this
        // process did not open for it holds 3, which is refused rather than
        // closed under its owner.
        match rustix::io::fcntl_dupfd_cloexec(&sock, 3) {
            Ok(fd3) if fd3.as_raw_fd() == 3 => {
                if let Err(e) = rustix::io::fcntl_setfd(&fd3, rustix::io::FdFlags::empty()) {
                    return format!("clearing FD_CLOEXEC on fd 3: {e}");
                }
                std::mem::forget(fd3);
            }
            Ok(_) => {
                return "fd 3 is already open in this process (inherited?): socket activation \
                        passes the socket as fd 3, so it must be free"
                    .into()
            }
            Err(e) => return format!("duplicating the socket onto fd 3: {e}"),
        }
        drop(sock);
    }
    // exec keeps our pid: LISTEN_PID is the exec'ed process's.
    let err = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", std::process::id().to_string())
        .env("LISTEN_FDNAMES", "udp-repair")
        .exec();
    format!("exec {}: {err}", cmd[0])
}

fn addr(a: Option<&v1::SockAddr>) -> String {
    a.map(|a| wire::from_proto(a).to_string())
        .unwrap_or_else(|| "-".into())
}

fn hex(b: &[u8], max: usize) -> String {
    let mut s: String = b.iter().take(max).map(|x| format!("{x:02x}")).collect();
    if b.len() > max {
        s.push('…');
    }
    s
}

/// The text listing of `show`.
pub fn show_text(cp: &v1::Checkpoint, payloads: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let fam = v1::Family::try_from(cp.family)
        .map(|f| f.as_str_name())
        .unwrap_or("?");
    let proto = v1::Protocol::try_from(cp.protocol)
        .map(|f| f.as_str_name())
        .unwrap_or("?");
    let _ = writeln!(
        s,
        "UDP checkpoint (schema {}), dumped on Linux {}",
        cp.schema_version, cp.kernel_release
    );
    let _ = writeln!(s, "socket:     {fam} {proto}");
    let _ = writeln!(s, "bound:      {}", addr(cp.bound.as_ref()));
    let _ = writeln!(s, "peer:       {}", addr(cp.peer.as_ref()));
    let _ = writeln!(
        s,
        "device:     {}",
        if cp.bound_device.is_empty() {
            "-"
        } else {
            &cp.bound_device
        }
    );
    let _ = writeln!(s, "peek off:   {}", cp.peek_offset);
    if cp.shutdown != 0 {
        let how = match cp.shutdown {
            1 => "SHUT_RD",
            2 => "SHUT_WR",
            _ => "SHUT_RDWR",
        };
        let _ = writeln!(s, "shutdown:   {how}");
    }
    if cp.pending_error != 0 {
        let _ = writeln!(
            s,
            "error:      {} ({}), pending: the restored socket returns it first",
            cp.pending_error,
            std::io::Error::from_raw_os_error(cp.pending_error)
        );
    }
    if let Some(f) = &cp.filter {
        let _ = writeln!(
            s,
            "filter:     classic BPF, {} instruction(s){}",
            f.insns.len(),
            if f.locked { ", locked" } else { "" }
        );
    }
    for d in &cp.dropped_state {
        let _ = writeln!(s, "DROPPED:    {d}");
    }
    let _ = writeln!(s, "options:");
    for o in &cp.options {
        let _ = writeln!(
            s,
            "  {:<24} {}",
            options::label(o.level, o.name),
            options::show_value(o)
        );
    }
    let q = cp.receive_queue.clone().unwrap_or_default();
    let _ = writeln!(
        s,
        "receive queue: {} datagram(s), {} byte(s); zero-length datagrams {}",
        q.count,
        q.bytes,
        if q.zero_length_vouched {
            "vouched for"
        } else {
            "NOT vouched for"
        }
    );
    if !q.zero_length_vouched {
        let _ = writeln!(s, "  note: {}", q.zero_length_note);
    }
    for (i, d) in q.datagrams.iter().enumerate() {
        let _ = write!(
            s,
            "  [{i}] {:>5} B from {} to {}",
            d.payload.len(),
            addr(d.source.as_ref()),
            addr(d.destination.as_ref())
        );
        if let Some(x) = d.ifindex {
            let _ = write!(s, " if {x}");
        }
        if let Some(x) = d.ttl {
            let _ = write!(s, " ttl {x}");
        }
        if let Some(x) = d.tos {
            let _ = write!(s, " tos {x:#04x}");
        }
        if let Some(t) = &d.timestamp {
            let _ = write!(s, " at {}.{:09}", t.sec, t.nsec);
        }
        if !d.ifname.is_empty() {
            let _ = write!(s, " on {}", d.ifname);
        }
        if let Some(g) = d.gso_size {
            let _ = write!(s, " UDP_GRO segments of {g} B");
        }
        if d.peeked {
            let _ = write!(s, " (already peeked)");
        }
        if payloads {
            let _ = write!(s, " {}", hex(&d.payload, 64));
        }
        let _ = writeln!(s);
    }
    let sq = cp.send_queue.clone().unwrap_or_default();
    let _ = writeln!(
        s,
        "send queue: {} (UDP_CORK {})",
        describe_sq(Some(&sq)),
        if sq.udp_cork { "on" } else { "off" }
    );
    if let Some(p) = &sq.pending {
        let _ = writeln!(
            s,
            "  pending {} B to {} ({})",
            p.payload.len(),
            addr(p.destination.as_ref()),
            if p.complete {
                "full cork state"
            } else {
                "payload and destination only"
            }
        );
        if let Some(c) = &p.cork {
            let _ = writeln!(s, "  cork: {c:?}");
        }
        if payloads {
            let _ = writeln!(s, "  {}", hex(&p.payload, 64));
        }
    }
    if !sq.note.is_empty() {
        let _ = writeln!(s, "  note: {}", sq.note);
    }
    s
}

fn json_addr(a: Option<&v1::SockAddr>) -> serde_json::Value {
    a.map(|a| serde_json::Value::String(wire::from_proto(a).to_string()))
        .unwrap_or(serde_json::Value::Null)
}

/// The JSON form of `show --json`.
pub fn to_json(cp: &v1::Checkpoint, payloads: bool) -> serde_json::Value {
    use serde_json::json;
    let q = cp.receive_queue.clone().unwrap_or_default();
    let sq = cp.send_queue.clone().unwrap_or_default();
    let opts: serde_json::Map<String, serde_json::Value> = cp
        .options
        .iter()
        .map(|o| {
            let v = match &o.value {
                Some(v1::sock_opt::Value::Int(i)) => json!(i),
                _ => json!(options::show_value(o)),
            };
            (options::label(o.level, o.name), v)
        })
        .collect();
    json!({
        "schema_version": cp.schema_version,
        "kernel_release": cp.kernel_release,
        "family": v1::Family::try_from(cp.family).map(|f| f.as_str_name()).unwrap_or("?"),
        "protocol": v1::Protocol::try_from(cp.protocol).map(|f| f.as_str_name()).unwrap_or("?"),
        "bound": json_addr(cp.bound.as_ref()),
        "peer": json_addr(cp.peer.as_ref()),
        "bound_device": cp.bound_device,
        "peek_offset": cp.peek_offset,
        "pending_error": cp.pending_error,
        "shutdown": cp.shutdown,
        "options": opts,
        "filter": cp.filter.as_ref().map(|f| json!({"insns": f.insns, "locked": f.locked})),
        "dropped_state": cp.dropped_state,
        "receive_queue": {
            "count": q.count,
            "bytes": q.bytes,
            "zero_length_vouched": q.zero_length_vouched,
            "zero_length_note": q.zero_length_note,
            "datagrams": q.datagrams.iter().map(|d| json!({
                "len": d.payload.len(),
                "source": json_addr(d.source.as_ref()),
                "destination": json_addr(d.destination.as_ref()),
                "ifindex": d.ifindex,
                "ttl": d.ttl,
                "tos": d.tos,
                "timestamp": d.timestamp.as_ref().map(|t| format!("{}.{:09}", t.sec, t.nsec)),
                "peeked": d.peeked,
                "gso_size": d.gso_size,
                "ifname": d.ifname,
                "payload_hex": payloads.then(|| hex(&d.payload, usize::MAX)),
            })).collect::<Vec<_>>(),
        },
        "send_queue": {
            "udp_cork": sq.udp_cork,
            "reader": sq.reader,
            "dropped": sq.dropped,
            "note": sq.note,
            "pending": sq.pending.as_ref().map(|p| json!({
                "family": p.family,
                "len": p.payload.len(),
                "destination": json_addr(p.destination.as_ref()),
                "complete": p.complete,
                "cork": p.cork.as_ref().map(|c| format!("{c:?}")),
                "payload_hex": payloads.then(|| hex(&p.payload, usize::MAX)),
            })),
        },
    })
}
