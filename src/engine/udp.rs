//! The shard's UDP socket: creation with `socket2`, receiving with the time a datagram
//! waited in the socket buffer, and sending the datagrams a batch produced.
//!
//! On Linux (without `portable`) the socket has kernel receive timestamps
//! (`SO_TIMESTAMPNS`) and [`recv`] reads them with `recvmsg(2)`: the shard's measure of how
//! far behind it is, which decides overload shedding. Elsewhere [`recv`] reports no wait.
//!
//! Two send paths, chosen at compile time: on Linux, batches of up to 64 datagrams per
//! `sendmmsg(2)` call (the tuned path); elsewhere, or with the `portable` feature, one
//! `send_to` per datagram. The `sendmmsg` module is the only place with `unsafe` on the
//! packet path: building `mmsghdr` arrays whose pointees live in the batch for the call.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Socket buffer size requested for both directions.
const SOCKET_BUFFER: usize = 4 << 20;

/// Bind a non-blocking UDP socket for a shard.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&SockAddr::from(addr))?;
    #[cfg(all(target_os = "linux", not(feature = "portable")))]
    stamped::enable(&socket)?;
    let std: std::net::UdpSocket = socket.into();
    Ok(mio::net::UdpSocket::from_std(std))
}

/// Receive one datagram into `buf`: its length, source, and when the kernel received it, as
/// time since the UNIX epoch (`None` where kernel timestamps are not available). Reading it
/// costs no clock read: [`waited_since`] does that, for the datagrams that need it.
pub(crate) fn recv(
    socket: &mio::net::UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<Duration>)> {
    #[cfg(all(target_os = "linux", not(feature = "portable")))]
    return stamped::recv(socket, buf);
    #[cfg(not(all(target_os = "linux", not(feature = "portable"))))]
    return socket.recv_from(buf).map(|(n, from)| (n, from, None));
}

/// How long ago a datagram with kernel receive time `stamp` (from [`recv`]) arrived.
pub(crate) fn waited_since(stamp: Duration) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(stamp)
}

/// Kernel receive timestamps (Linux): `SO_TIMESTAMPNS` and `recvmsg(2)`.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
mod stamped {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use socket2::{SockAddr, Socket};

    pub(super) fn enable(socket: &Socket) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: a valid socket, option and option length.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub(super) fn recv(
        socket: &mio::net::UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<Duration>)> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // Room for one SCM_TIMESTAMPNS message, aligned for cmsghdr.
        let mut control = [0u64; 8];
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: try_init hands over zeroed address storage and its length; msg points
        // to it, to iov (into buf) and to control, all alive for the call, and the kernel
        // writes back the address length it used.
        let (n, addr) = unsafe {
            SockAddr::try_init(|storage, len| {
                msg.msg_name = storage as *mut libc::c_void;
                msg.msg_namelen = *len;
                let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, 0);
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                *len = msg.msg_namelen;
                Ok(n as usize)
            })
        }?;
        let Some(source) = addr.as_socket() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "datagram from a non-IP address",
            ));
        };
        Ok((n, source, kernel_stamp(&msg)))
    }

    /// When the kernel received the datagram of `msg` (its SCM_TIMESTAMPNS), since the
    /// UNIX epoch.
    fn kernel_stamp(msg: &libc::msghdr) -> Option<Duration> {
        // SAFETY: msg's control buffer was filled by recvmsg; the CMSG_* macros walk it
        // within msg_controllen, and the timespec is read unaligned.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            let mut found = None;
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                {
                    let ts =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
                    found = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                    break;
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
            found
        }
    }
}

/// Outgoing datagrams collected during one loop iteration, sent in batches.
#[derive(Default)]
pub(crate) struct SendQueue {
    /// str0m hands over an owned buffer per datagram; once sent it is recycled.
    items: Vec<(SocketAddr, Vec<u8>)>,
    pub(crate) sent: u64,
    pub(crate) send_errors: u64,
    pub(crate) syscalls: u64,
}

impl SendQueue {
    pub(crate) fn push(&mut self, dest: SocketAddr, data: Vec<u8>) {
        self.items.push((dest, data));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Hand every queued datagram to `f` instead of a socket (the in-memory harness).
    #[cfg(feature = "testing")]
    pub(crate) fn drain(&mut self, mut f: impl FnMut(SocketAddr, &[u8])) -> usize {
        let n = self.items.len();
        for (dest, data) in self.items.drain(..) {
            f(dest, &data);
            str0m::net::recycle_datagram(data);
        }
        self.sent += n as u64;
        n
    }

    /// Send everything queued. Datagrams the kernel refuses (full buffer, unreachable)
    /// are dropped and counted: UDP media is repaired by NACK/RTX, never blocked on.
    pub(crate) fn flush(&mut self, socket: &mio::net::UdpSocket) {
        #[cfg(all(target_os = "linux", not(feature = "portable")))]
        sendmmsg::send_all(self, socket);
        #[cfg(not(all(target_os = "linux", not(feature = "portable"))))]
        portable::send_all(self, socket);
        // Sent (or dropped): the buffers go back to str0m's SRTP buffer pool.
        for (_, data) in self.items.drain(..) {
            str0m::net::recycle_datagram(data);
        }
    }
}

/// Which send path this build uses, for logs and stats.
pub(crate) const SEND_PATH: &str = if cfg!(all(target_os = "linux", not(feature = "portable"))) {
    "sendmmsg"
} else {
    "send_to"
};

/// The Linux fast path: up to 64 datagrams per `sendmmsg(2)` call.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
mod sendmmsg {
    use std::io;
    use std::os::fd::AsRawFd;

    use socket2::SockAddr;

    use super::SendQueue;

    /// Datagrams per `sendmmsg` call.
    const BATCH: usize = 64;

    pub(super) fn send_all(q: &mut SendQueue, socket: &mio::net::UdpSocket) {
        let fd = socket.as_raw_fd();
        let mut start = 0;
        while start < q.items.len() {
            let end = (start + BATCH).min(q.items.len());
            let chunk = &q.items[start..end];
            let mut storage: [libc::sockaddr_storage; BATCH] =
                // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
                unsafe { std::mem::zeroed() };
            let mut lens: [libc::socklen_t; BATCH] = [0; BATCH];
            let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH];
            // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for (i, (dest, data)) in chunk.iter().enumerate() {
                let sa = SockAddr::from(*dest);
                // SAFETY: sa.as_ptr() points to sa.len() valid bytes, which fit in
                // sockaddr_storage by construction.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        sa.as_ptr() as *const u8,
                        &mut storage[i] as *mut _ as *mut u8,
                        sa.len() as usize,
                    );
                }
                lens[i] = sa.len();
                iovs[i].iov_base = data.as_ptr() as *mut libc::c_void;
                iovs[i].iov_len = data.len();
            }
            for i in 0..chunk.len() {
                msgs[i].msg_hdr.msg_name = &mut storage[i] as *mut _ as *mut libc::c_void;
                msgs[i].msg_hdr.msg_namelen = lens[i];
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            let mut off = 0usize;
            while off < chunk.len() {
                // SAFETY: msgs[off..chunk.len()] point into storage, iovs and the queued
                // buffers, all alive until after this call.
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        msgs.as_mut_ptr().add(off),
                        (chunk.len() - off) as libc::c_uint,
                        0,
                    )
                };
                q.syscalls += 1;
                if n < 0 {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // Skip the datagram that failed (e.g. EAGAIN, unreachable) and go on.
                    q.send_errors += 1;
                    off += 1;
                } else {
                    q.sent += n as u64;
                    off += (n as usize).max(1);
                }
            }
            start = end;
        }
    }
}

/// The portable path (every platform mio supports, and Linux with the `portable` feature):
/// one `send_to` per datagram.
#[cfg(not(all(target_os = "linux", not(feature = "portable"))))]
mod portable {
    use std::io;

    use super::SendQueue;

    pub(super) fn send_all(q: &mut SendQueue, socket: &mio::net::UdpSocket) {
        for (dest, data) in &q.items {
            loop {
                q.syscalls += 1;
                match socket.send_to(data, *dest) {
                    Ok(_) => q.sent += 1,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // Full buffer, unreachable, ...: drop it and count it, as above.
                    Err(_) => q.send_errors += 1,
                }
                break;
            }
        }
    }
}
