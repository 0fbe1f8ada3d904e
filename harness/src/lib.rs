//! The UDP repair library: the `UDP_REPAIR` uapi of each kernel series and
//! the dump/restore of a UDP socket's state.

pub mod bench;
pub mod patches;
pub mod pipeline;
pub mod repair;
pub mod report;
pub mod suites;
