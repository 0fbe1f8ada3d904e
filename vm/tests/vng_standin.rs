//! The vng runner ends a boot at once, quoting QEMU, when QEMU run by vng
//! reports a fatal error of its own (KVM's internal error stops the vCPU
//! and leaves QEMU waiting), instead of waiting for the deadline: a
//! stand-in `vng` that says so and then hangs. `ci/failure-modes.sh`
//! checks the same through the CLI for the QEMU runner; this checks the
//! vng runner's own loop without building the vng kernel (vng is not
//! installed in CI, and its config fragment is a second cold build).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use udp_repair_vm::qemu::{Accel, End};
use udp_repair_vm::{vng, Cache, Events};

#[test]
fn a_fatal_qemu_error_on_vngs_output_ends_the_boot_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let pidfile = dir.path().join("standin.pid");
    let fake = bin.join("vng");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho $$ > {}\necho 'KVM internal error. Suberror: 1' >&2\n\
             echo 'emulation failure' >&2\nexec sleep 600\n",
            pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    // This test binary's only test: nothing else reads PATH meanwhile.
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{}:{path}", bin.display()));
    let spec = vng::Spec {
        bzimage: dir.path().join("bzImage"),
        plan: Vec::new(),
        script: dir.path().join("run.sh"),
        cmdline: Vec::new(),
        memory_mb: 256,
        cpus: 1,
        accel: Accel::Tcg,
        timeout: Duration::from_secs(200),
        console: dir.path().join("console.log"),
        events: Events::none(),
    };
    let t = Instant::now();
    let booted = vng::boot(&Cache::at(dir.path().join("cache")), &spec).unwrap();
    let took = t.elapsed();
    assert!(
        matches!(&booted.end, End::QemuFatal(l) if l.contains("KVM internal error")),
        "{:?}",
        booted.end
    );
    assert!(took < Duration::from_secs(60), "it took {took:?}");
    // The stand-in (QEMU's place) was killed with its process group, not
    // left running.
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
    assert!(
        stat.is_err() || stat.as_deref().is_ok_and(|s| s.contains(") Z ")),
        "the stand-in vng still runs: {stat:?}"
    );
    assert!(std::fs::read_to_string(&spec.console)
        .unwrap()
        .contains("KVM internal error"));
}
