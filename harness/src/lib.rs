//! The `udp-repair` harness: build, boot and test `UDP_REPAIR` kernels,
//! the patch workflow, and the checkpoint image commands over the engine
//! (`udp-repair-engine`).

pub mod bench;
pub mod guest;
pub mod patches;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod report;
pub mod results;
pub mod suites;
pub mod workflow;
