//! Reading and recreating the state of a UDP socket.
//!
//! Layout (one owner per file):
//! - `sys`: the FFI: every `unsafe` block of the library, each commented.
//! - `recvmsg`: the uapi of the `recvmsg` series.
//! - `getsockopt`: the uapi of the `getsockopt` series.
//! - `dump`, `restore`: checkpoint and restore of a whole socket.
//! - `readers`: the dump's send-queue readers over `getsockopt` and `recvmsg`.

pub mod dump;
pub mod getsockopt;
pub mod inject;
pub mod netns;
pub mod options;
pub mod readers;
pub mod recvmsg;
pub mod restore;
pub mod sys;
pub mod wire;

/// `SOL_UDP` option number of `UDP_REPAIR`, the same in both series.
pub const UDP_REPAIR: i32 = 2;
