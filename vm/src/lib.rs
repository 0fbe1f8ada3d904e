//! Kernel build and QEMU boot.
