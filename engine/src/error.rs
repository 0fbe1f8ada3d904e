//! The engine's one error type: which operation failed, at which step,
//! what kind of failure it is (so a caller can match on it), and the
//! underlying error.

use std::io;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// State that would be lost, refused by name: pending data that no
    /// reader of this kernel can read, an eBPF filter, multicast
    /// memberships, zero-length datagrams the dump cannot vouch for (under
    /// `require_vouched`), a datagram the restore cannot re-create, cork
    /// state a restore could not reproduce. An option of
    /// [`crate::dump::DumpOptions`] or [`crate::restore::RestoreOptions`]
    /// accepts some of these losses by name, and the image records them.
    Refused,
    /// The running kernel lacks an interface the step needs
    /// (`ENOPROTOOPT`, `EOPNOTSUPP`, `ENOSYS`).
    Unsupported,
    /// The checkpoint is not valid: its schema
    /// (`udp_repair_proto::validate`) or its option list
    /// ([`crate::options::check_saved`]). Nothing was created.
    InvalidImage,
    /// Any other failure of a system call.
    Io,
}

impl Kind {
    /// The kind of `e` when the step does not say: the kernel's "no such
    /// interface" errnos are [`Kind::Unsupported`], an error the engine
    /// made with `io::ErrorKind::Unsupported` (its refusals) is
    /// [`Kind::Refused`], anything else [`Kind::Io`].
    pub fn of(e: &io::Error) -> Kind {
        match e.raw_os_error() {
            Some(libc::ENOPROTOOPT | libc::EOPNOTSUPP | libc::ENOSYS) => Kind::Unsupported,
            Some(_) => Kind::Io,
            None if e.kind() == io::ErrorKind::Unsupported => Kind::Refused,
            None => Kind::Io,
        }
    }
}

/// Which operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A dump ([`crate::dump`]).
    Dump,
    /// A restore ([`crate::restore`]).
    Restore,
}

/// Why a dump or a restore failed. A failed dump has left the socket as
/// it found it; a failed restore has closed everything it created.
#[derive(Debug)]
pub struct Error {
    /// The operation.
    pub op: Op,
    /// The step that failed, for people (`"bind(127.0.0.1:53)"`).
    pub step: String,
    /// What kind of failure it is.
    pub kind: Kind,
    /// The error.
    pub error: io::Error,
}

impl Error {
    /// `error` at `step` of `op`, of the kind [`Kind::of`] finds.
    pub fn new(op: Op, step: impl Into<String>, error: io::Error) -> Self {
        let kind = Kind::of(&error);
        Self::with_kind(op, step, kind, error)
    }

    /// `error` at `step` of `op`, of `kind`.
    pub fn with_kind(op: Op, step: impl Into<String>, kind: Kind, error: io::Error) -> Self {
        Error {
            op,
            step: step.into(),
            kind,
            error,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Dump => "dump",
            Op::Restore => "restore",
        };
        write!(f, "{op} failed at {}: {}", self.step, self.error)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_error() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(Kind::of(&e(libc::ENOPROTOOPT)), Kind::Unsupported);
        assert_eq!(Kind::of(&e(libc::EPERM)), Kind::Io);
        let refused = io::Error::new(io::ErrorKind::Unsupported, "an eBPF filter");
        assert_eq!(Kind::of(&refused), Kind::Refused);
        assert_eq!(Kind::of(&io::Error::other("x")), Kind::Io);
        let err = Error::new(Op::Restore, "bind(127.0.0.1:9)", e(libc::EADDRINUSE));
        assert!(err
            .to_string()
            .starts_with("restore failed at bind(127.0.0.1:9): "));
    }
}
