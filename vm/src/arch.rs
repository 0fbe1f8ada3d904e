//! The guest architecture as data: everything the VM side needs to know
//! about one architecture, in one row. The guest runs the host's
//! architecture (no cross builds yet); a second architecture is a new row
//! of [`ARCHES`] (and a cross toolchain, which the row would name).

/// One architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    /// `std::env::consts::ARCH` of a host of this architecture.
    pub name: &'static str,
    /// The kernel's `ARCH=` (its `arch/` directory).
    pub kernel_arch: &'static str,
    /// The make target of the bootable image.
    pub image_target: &'static str,
    /// Where the image lands, relative to the build directory.
    pub image_path: &'static str,
    /// The QEMU system emulator.
    pub qemu: &'static str,
    /// The Debian package that has it.
    pub qemu_package: &'static str,
    /// `-machine`, when QEMU's default will not do.
    pub machine: Option<&'static str>,
    /// `-cpu`: the richest model both KVM and TCG offer (`host` aborts on
    /// some hosts, an MSR it cannot set).
    pub cpu: &'static str,
    /// The kernel's serial console (`console=`).
    pub console: &'static str,
    /// The Rust target of the static guest binary.
    pub rust_target: &'static str,
    /// The static C library the kselftests link against, and its package.
    pub libc_static: (&'static str, &'static str),
    /// The compat ABI's static C library and the packages of `gcc -m32`,
    /// for the kselftests built for it (x86_64: i386), if there is one.
    pub compat: Option<(&'static str, &'static [&'static str])>,
}

/// Every architecture the VM side knows.
pub const ARCHES: &[Arch] = &[Arch {
    name: "x86_64",
    kernel_arch: "x86",
    image_target: "bzImage",
    image_path: "arch/x86/boot/bzImage",
    qemu: "qemu-system-x86_64",
    qemu_package: "qemu-system-x86",
    machine: None,
    cpu: "max",
    console: "ttyS0",
    rust_target: "x86_64-unknown-linux-gnu",
    libc_static: ("/usr/lib/x86_64-linux-gnu/libc.a", "libc6-dev"),
    compat: Some(("/usr/lib32/libc.a", &["gcc-multilib", "libc6-dev-i386"])),
}];

/// The row of architecture `name`.
pub fn by_name(name: &str) -> Option<&'static Arch> {
    ARCHES.iter().find(|a| a.name == name)
}

/// The guest's architecture: the host's.
///
/// # Errors
/// [`crate::Error::Setup`] on a host whose architecture has no row.
pub fn guest() -> crate::Result<&'static Arch> {
    by_name(std::env::consts::ARCH).ok_or_else(|| {
        crate::Error::Setup(format!(
            "no guest architecture row for this {} host in vm/src/arch.rs (ARCHES)",
            std::env::consts::ARCH
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_has_a_row_and_it_is_consistent() {
        let a = guest().unwrap();
        assert!(a
            .image_path
            .starts_with(&format!("arch/{}/", a.kernel_arch)));
        assert!(a.image_path.ends_with(a.image_target));
        assert!(a.rust_target.starts_with(a.name));
        assert!(a.qemu.ends_with(a.name));
    }
}
