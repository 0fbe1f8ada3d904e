//! What the stages report while they work. The library prints nothing: a
//! program hands the stages an [`Events`] sink and renders each [`Event`]
//! its own way (the `udp-repair` CLI: lines on stderr, a progress line on
//! a terminal), as vmtest's library reports through its output channel.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One thing a stage reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Installing the missing Debian packages (as root).
    Installing(&'a [String]),
    /// Importing the base tarball into its git repository (once per base).
    Importing {
        /// The tarball.
        tarball: &'a Path,
        /// The repository.
        git: &'a Path,
    },
    /// Another kernel build holds the build lock; waiting for it.
    WaitingForLock(&'a Path),
    /// A kbuild step finished.
    BuildStep {
        /// Steps so far.
        steps: usize,
        /// The expected total, when a previous build of the directory
        /// gave one.
        estimate: Option<usize>,
        /// Since make started.
        elapsed: Duration,
        /// The step's target (`net/ipv4/udp.o`).
        target: &'a str,
    },
    /// A line of make's output (every line; show them when verbose).
    MakeOutput(&'a str),
    /// make ended (a progress line can be cleared).
    BuildEnded,
    /// A line of the guest's console, as it comes (vng: its whole output).
    Console(&'a str),
    /// A line QEMU wrote on its stderr.
    QemuStderr(&'a str),
    /// KVM does not bring a guest up here (why); TCG is used instead.
    KvmFallback(&'a str),
}

type Sink = dyn Fn(&Event<'_>) + Send + Sync;

/// Where a stage's [`Event`]s go: nowhere ([`Events::none`]) or to a
/// callback. Cheap to clone.
#[derive(Clone, Default)]
pub struct Events(Option<Arc<Sink>>);

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Events(callback)"
        } else {
            "Events(none)"
        })
    }
}

impl Events {
    /// Events go nowhere.
    pub fn none() -> Self {
        Events(None)
    }

    /// Every event is passed to `f`, on the thread of the stage.
    pub fn new(f: impl Fn(&Event<'_>) + Send + Sync + 'static) -> Self {
        Events(Some(Arc::new(f)))
    }

    /// Reports `e`.
    pub fn emit(&self, e: Event<'_>) {
        if let Some(f) = &self.0 {
            f(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_callback_sees_every_event_and_none_drops_them() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let ev = Events::new(move |e| s.lock().unwrap().push(format!("{e:?}")));
        ev.emit(Event::Console("hello"));
        ev.clone().emit(Event::BuildEnded);
        Events::none().emit(Event::Console("lost"));
        assert_eq!(*seen.lock().unwrap(), ["Console(\"hello\")", "BuildEnded"]);
    }
}
