//! The dump's option guard: every socket option the dump changes to read
//! the queues goes through a [`Guard`], which puts the application's value
//! back when the dump ends, on failure too (its `Drop`).

use crate::{options, sys};
use std::io;
use std::os::fd::BorrowedFd;

/// Changes socket options for the duration of the dump and puts the
/// application's values back, in reverse order, on [`Guard::finish`] or on
/// drop (best effort, when the dump fails midway).
#[derive(Debug)]
pub struct Guard<'a> {
    fd: BorrowedFd<'a>,
    saved: Vec<(i32, i32, i32)>,
    timestamps: Option<[i32; 4]>,
    done: bool,
}

impl<'a> Guard<'a> {
    pub fn new(fd: BorrowedFd<'a>) -> Self {
        Guard {
            fd,
            saved: Vec::new(),
            timestamps: None,
            done: false,
        }
    }

    /// Remembers an int option's current value, to be put back at the end
    /// whatever changes it meanwhile (SO_PEEK_OFF: the walk moves it, and
    /// the `recvmsg` series' UDP_REPAIR resets it to -1).
    pub fn remember(&mut self, level: i32, name: i32) -> io::Result<()> {
        let old = sys::getsockopt_int(self.fd, level, name)?;
        self.saved.push((level, name, old));
        Ok(())
    }

    /// Sets an int option if it differs, remembering the old value.
    /// `Ok(false)`: the socket does not have this option.
    pub fn set(&mut self, level: i32, name: i32, value: i32) -> io::Result<bool> {
        let old = match sys::getsockopt_int(self.fd, level, name) {
            Ok(v) => v,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EOPNOTSUPP)) => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        if old != value {
            // Remember before setting: a failed set may still have changed
            // state (it does not today, but the restore is harmless).
            self.saved.push((level, name, old));
            sys::setsockopt_int(self.fd, level, name, value)?;
        }
        Ok(true)
    }

    /// Turns on SO_TIMESTAMPNS unless the application has a timestamp
    /// option on already (then its own format is parsed). Leaves them alone
    /// when SO_TIMESTAMPING is set: enabling SO_TIMESTAMPNS would clear
    /// SOCK_TSTAMP_NEW, which no getsockopt reports, so it could not be put
    /// back.
    pub fn enable_timestamps(&mut self) -> io::Result<()> {
        let names = [
            options::SO_TIMESTAMP_OLD,
            options::SO_TIMESTAMPNS_OLD,
            options::SO_TIMESTAMP_NEW,
            options::SO_TIMESTAMPNS_NEW,
        ];
        let mut v = [0i32; 4];
        for (i, n) in names.iter().enumerate() {
            v[i] = sys::getsockopt_int(self.fd, libc::SOL_SOCKET, *n).unwrap_or(0);
        }
        let tsing =
            sys::getsockopt_int(self.fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPING).unwrap_or(0);
        if v.iter().any(|x| *x != 0) || tsing != 0 {
            return Ok(());
        }
        self.timestamps = Some(v);
        sys::setsockopt_int(self.fd, libc::SOL_SOCKET, options::SO_TIMESTAMPNS_OLD, 1)
    }

    fn restore(&mut self) -> io::Result<()> {
        let mut first: io::Result<()> = Ok(());
        if let Some(v) = self.timestamps.take() {
            // Setting any of them to 0 clears SOCK_RCVTSTAMP(NS); they were
            // all off before the dump.
            let r = sys::setsockopt_int(self.fd, libc::SOL_SOCKET, options::SO_TIMESTAMP_OLD, 0);
            debug_assert!(v.iter().all(|x| *x == 0));
            if let Err(e) = r {
                first = Err(e);
            }
        }
        while let Some((level, name, old)) = self.saved.pop() {
            // Only what changed is set: setting SO_PEEK_OFF has a side
            // effect on kernels with the peek fix (it clears the `peeked`
            // marks), so it must not be set for nothing.
            if sys::getsockopt_int(self.fd, level, name).ok() == Some(old) {
                continue;
            }
            if let Err(e) = sys::setsockopt_int(self.fd, level, name, old) {
                if first.is_ok() {
                    first = Err(io::Error::new(
                        e.kind(),
                        format!("putting back {} = {old}: {e}", options::label(level, name)),
                    ));
                }
            }
        }
        first
    }

    /// Puts everything back and reports the first failure.
    pub fn finish(mut self) -> io::Result<()> {
        self.done = true;
        self.restore()
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.restore();
        }
    }
}
