//! Exclusive `flock(2)` locks on files in the cache: one kernel build at a
//! time on the machine, one import per base.

use std::path::Path;

use crate::{Error, Events, Result};

/// An exclusive `flock(2)` on a file, released when dropped (or when the
/// process dies: the kernel drops `flock` locks with the descriptor).
#[derive(Debug)]
pub struct FileLock(#[allow(dead_code)] std::fs::File);

impl FileLock {
    /// Takes an exclusive lock on `path`, creating the file if missing,
    /// and waits for it; when another process holds it, emits
    /// [`crate::Event::WaitingForLock`] first.
    ///
    /// Errors: [`Error::Io`] naming `path` when it cannot be opened or
    /// locked.
    pub fn exclusive(path: &Path, events: &Events) -> Result<Self> {
        use rustix::fs::{flock, FlockOperation};
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::Io(format!("creating {}", path.display()), e))?;
        if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
            events.emit(crate::Event::WaitingForLock(path));
            flock(&f, FlockOperation::LockExclusive)
                .map_err(|e| Error::Io(format!("locking {}", path.display()), e.into()))?;
        }
        Ok(Self(f))
    }
}
