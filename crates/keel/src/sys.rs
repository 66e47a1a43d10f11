//! The one call into the operating system that the standard library,
//! tokio and socket2 do not offer: a socket's read low-water mark (Linux
//! only: elsewhere a non-blocking read below the mark may find nothing).
//! This is the only module of the crate with `unsafe` code.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// Sets how many bytes must wait unread before `socket` counts as readable
/// to `epoll` (`SO_RCVLOWAT`; Linux's default is 1; the kernel caps it at
/// half the receive buffer). A non-blocking `recv` still takes whatever
/// has arrived, and lowering the mark signals the socket at once if bytes
/// are waiting (`tcp_set_rcvlowat` calls `tcp_data_ready`), so no byte is
/// ever left unsignalled.
pub(crate) fn set_read_low_water(socket: &impl AsRawFd, bytes: i32) -> std::io::Result<()> {
    let value: libc::c_int = bytes;
    // SAFETY: the fd is borrowed from a live socket for the call; the
    // option value is a `c_int` read from `value`, which outlives the
    // call, and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The low-water mark as the kernel holds it (for tests).
#[cfg(test)]
pub(crate) fn read_low_water(socket: &impl AsRawFd) -> i32 {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as in `set_read_low_water`, with `value` and `len` written.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
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
        set_read_low_water(&socket, 16 * 1024).expect("raise");
        assert_eq!(read_low_water(&socket), 16 * 1024);
        set_read_low_water(&socket, 1).expect("lower");
        assert_eq!(read_low_water(&socket), 1);
    }

    #[tokio::test]
    async fn bytes_that_came_under_a_raised_mark_are_signalled_when_it_is_lowered() {
        // What keeps a busy-polled connection from hanging: its task waits
        // in the runtime only after lowering the mark, and the lowering
        // itself signals bytes that came while the mark was up.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut peer =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (conn, _) = listener.accept().await.expect("accept");
        let mut scratch = [0u8; 16];
        // The runtime's readiness cleared, as after a read that found
        // nothing.
        assert_eq!(
            conn.try_read(&mut scratch).expect_err("nothing yet").kind(),
            std::io::ErrorKind::WouldBlock
        );
        set_read_low_water(&conn, 32 * 1024).expect("raise");
        std::io::Write::write_all(&mut peer, b"request").expect("write");
        // The bytes are in (peeked, not taken) before the mark comes down.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let socket = socket2::SockRef::from(&conn);
        loop {
            let mut room = [std::mem::MaybeUninit::<u8>::uninit(); 16];
            match socket.peek(&mut room) {
                Ok(7) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("peek: {e}"),
            }
            assert!(std::time::Instant::now() < deadline, "the bytes never came");
            std::thread::yield_now();
        }
        set_read_low_water(&conn, 1).expect("lower");
        tokio::time::timeout(std::time::Duration::from_secs(10), conn.readable())
            .await
            .expect("the lowered mark signalled the waiting bytes")
            .expect("readable");
        assert_eq!(conn.try_read(&mut scratch).expect("read"), 7);
    }
}
