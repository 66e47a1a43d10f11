//! The one call into the operating system that the standard library,
//! tokio and socket2 do not offer: a socket's read low-water mark. This
//! is the only module of the crate with `unsafe` code.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, RawFd};

/// Sets how many bytes must wait unread before `socket` counts as readable
/// to `epoll` (`SO_RCVLOWAT`; Linux's default is 1). A non-blocking `recv`
/// still takes whatever has arrived. Errors are ignored: the mark only
/// spares wakeups, and a socket that refuses it behaves as before.
pub(crate) fn set_read_low_water(socket: &impl AsRawFd, bytes: i32) {
    set_int_option(
        socket.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVLOWAT,
        bytes,
    );
}

/// `setsockopt` of an `int` option.
fn set_int_option(fd: RawFd, level: i32, name: i32, value: i32) {
    let len = libc::socklen_t::try_from(std::mem::size_of::<i32>()).unwrap_or(4);
    // SAFETY: `fd` is borrowed from a live socket for the call; the option
    // value is an `int` read from `value`, which outlives the call, and
    // `len` is its size.
    unsafe {
        libc::setsockopt(fd, level, name, (&raw const value).cast(), len);
    }
}

/// The low-water mark as the kernel holds it (for tests).
#[cfg(test)]
pub(crate) fn read_low_water(socket: &impl AsRawFd) -> i32 {
    let mut value: i32 = 0;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<i32>()).unwrap_or(4);
    // SAFETY: as in `set_int_option`, with `value` and `len` written.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt");
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_is_set_and_restored() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let socket =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        assert_eq!(read_low_water(&socket), 1, "Linux's default");
        set_read_low_water(&socket, 16 * 1024);
        assert_eq!(read_low_water(&socket), 16 * 1024);
        set_read_low_water(&socket, 1);
        assert_eq!(read_low_water(&socket), 1);
    }
}
