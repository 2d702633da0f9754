//! Loadgen's UDP sockets: binding one per peer (large buffers, kernel receive timestamps)
//! and reading a datagram together with its kernel receive time.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;

use mio::net::UdpSocket;

use crate::stats::now_us;

/// Requested socket buffer sizes (the kernel caps them at net.core.[rw]mem_max).
const SOCKET_BUFFER: usize = 2 << 20;

pub fn bind_socket(ip: Ipv4Addr) -> std::io::Result<StdUdpSocket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&SocketAddr::from((ip, 0)).into())?;
    s.set_nonblocking(true)?;
    // Kernel receive timestamps; without them latency falls back to loadgen's read time.
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `on` (an int) for the length given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(s.into())
}

/// Offset of CLOCK_REALTIME (kernel timestamps) from the [`now_us`] clock, in µs.
fn realtime_offset_us() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        real - now_us() as i64
    })
}

/// `recvmsg` on a non-blocking IPv4 UDP socket: (length, source, kernel receive time in
/// [`now_us`] time if the kernel gave one).
pub fn recv_timestamped(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<u64>)> {
    // SAFETY: every pointer in `msg` points at a live local of the right size, and the
    // control messages are read with the CMSG_* helpers within msg_controllen.
    unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut addr as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut kernel = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let real_us = ts.tv_sec as i64 * 1_000_000 + ts.tv_nsec as i64 / 1000;
                let us = real_us - realtime_offset_us();
                if us > 0 {
                    kernel = Some(us as u64);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        let port = u16::from_be(addr.sin_port);
        Ok((n as usize, SocketAddr::from((ip, port)), kernel))
    }
}
