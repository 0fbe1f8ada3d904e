//! The UDP socket checkpoint/restore engine: what a C/R tool (CRIU or any
//! other) needs to save a UDP socket and recreate it with nothing lost,
//! over the `UDP_REPAIR` kernel series and the interfaces every kernel
//! has. It depends on libc, rustix and the image schema only, as CRIU's
//! `soccr/` is a library of its own.
//!
//! Layers, lowest first (each file one layer):
//! - [`sys`]: the FFI, every `unsafe` block of the engine, each commented;
//!   [`wire`]: sockaddrs and cmsgs as bytes.
//! - [`uapi`]: the kernel series' interfaces ([`uapi::getsockopt`],
//!   [`uapi::recvmsg`], [`uapi::pendinglost`]), apart from the generic
//!   wrappers.
//! - [`options`]: the table of socket options a checkpoint saves.
//! - [`peek`]: `MSG_PEEK` primitives over the receive queue, shared by
//!   dump and restore; [`guard`]: options changed for a dump and put back;
//!   [`probe`]: the cmsgs the running kernel accepts on a send.
//! - [`readers`]: the [`readers::SendQueueReader`] trait beside its
//!   implementations over each series.
//! - [`dump`], [`restore`] (with [`inject`], how the receive queue is
//!   re-created, and [`sockerr`], the pending socket error): a whole
//!   socket; [`trust`]: what an image asks of a privileged restore.
//! - [`error`]: the one error type, [`Error`], with a [`Kind`] to match.
//!
//! Kernel behaviour the engine relies on is cited where it is used (file
//! and function of the kernel source).

pub mod diag;
pub mod dump;
pub mod error;
pub mod guard;
pub mod inject;
pub mod netns;
pub mod options;
pub mod peek;
pub mod probe;
pub mod readers;
pub mod restore;
pub mod sockerr;
pub mod sys;
pub mod trust;
pub mod uapi;
pub mod wire;

pub use error::{Error, Kind, Op};

/// `SOL_UDP` option number of `UDP_REPAIR`, the same in every series.
pub const UDP_REPAIR: i32 = 2;
