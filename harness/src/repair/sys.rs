//! The FFI of the repair library: socket options and calls that rustix does
//! not wrap. Every `unsafe` block of the library lives here, small and
//! commented; callers get safe functions over `BorrowedFd`.
//!
//! Shared by every module: add functions, do not rewrite the file.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
pub fn setsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32, value: i32) -> io::Result<()> {
    setsockopt_bytes(fd, level, name, &value.to_ne_bytes())
}

/// `getsockopt(fd, level, name, &int, &len)`; the kernel must return a
/// whole `int` (some options return a shorter value: those are an error
/// here rather than a silently misread integer).
pub fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<i32> {
    let mut buf = [0u8; size_of::<i32>()];
    let len = getsockopt_bytes(fd, level, name, &mut buf)?;
    if len != buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("getsockopt({level}, {name}) returned {len} bytes, expected an int"),
        ));
    }
    Ok(i32::from_ne_bytes(buf))
}

/// `setsockopt(fd, level, name, value, value.len())`.
pub fn setsockopt_bytes(fd: BorrowedFd<'_>, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    let len = libc::socklen_t::try_from(value.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` is a live slice of exactly `len` bytes which the
    // kernel only reads; the fd is borrowed, so it stays open for the call.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt(fd, level, name, buf, &len)`: fills `buf` and returns the
/// length the kernel reported. For options that report the length they need
/// when the buffer is short, that length may exceed `buf.len()`.
pub fn getsockopt_bytes(fd: BorrowedFd<'_>, level: i32, name: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len =
        libc::socklen_t::try_from(buf.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `buf` is a live, writable slice of `len` bytes; the kernel
    // writes at most `len` bytes into it and stores the length in `len`,
    // which outlives the call. The fd is borrowed, so it stays open.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, buf.as_mut_ptr().cast(), &mut len) };
    if rc == 0 {
        Ok(len as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn int_option_round_trips() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        setsockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).unwrap();
        assert_eq!(getsockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap(), 0);
    }

    #[test]
    fn unknown_option_is_an_error() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = getsockopt_int(s.as_fd(), libc::SOL_UDP, 0x7fff).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT));
    }
}
