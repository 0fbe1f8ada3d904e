//! The `UDP_REPAIR` interfaces of the three kernel series
//! (`kernel-patches/`), each as safe wrappers over [`crate::sys`]:
//! - [`getsockopt`]: `UDP_REPAIR` and `getsockopt(SOL_UDP,
//!   UDP_REPAIR_PENDING)`, the pending datagram with its whole cork state;
//! - [`recvmsg`]: the 2021 design, `recvmsg(MSG_PEEK)` in repair mode,
//!   payload and destination only;
//! - [`pendinglost`]: `UDP_REPAIR_PENDING_LOST`, which makes a pending
//!   datagram a restore dropped fail visibly instead.

pub mod getsockopt;
pub mod pendinglost;
pub mod recvmsg;
