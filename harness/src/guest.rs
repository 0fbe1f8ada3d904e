//! The guest build stage: the static test binary that runs in the guest
//! (`udp-repair-selftests`), built with cargo for the guest's Rust target
//! (`udp_repair_vm::arch`), statically linked.

use std::path::{Path, PathBuf};
use udp_repair_vm::{build, Error, Result};

/// Builds the static guest test binary.
pub fn selftests(root: &Path) -> Result<PathBuf> {
    let arch = udp_repair_vm::arch::guest()?;
    let target_dir = root.join("target/guest");
    let log = target_dir.join("build.log");
    std::fs::create_dir_all(&target_dir)
        .map_err(|e| Error::Io(format!("creating {}", target_dir.display()), e))?;
    eprintln!("udp-repair: building the guest selftests (static)");
    let out =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root)
            .args([
                "build",
                "--release",
                "--target",
                arch.rust_target,
                "-p",
                "udp-repair-selftests",
                "--target-dir",
            ])
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .output()
            .map_err(|e| Error::Setup(format!("cannot run cargo: {e}")))?;
    let mut text = out.stdout;
    text.extend_from_slice(&out.stderr);
    let _ = std::fs::write(&log, &text);
    if !out.status.success() {
        return Err(Error::Build {
            what: "the guest selftests".into(),
            tail: build::tail(&log, 30),
            log,
        });
    }
    Ok(target_dir
        .join(arch.rust_target)
        .join("release/udp-repair-selftests"))
}
