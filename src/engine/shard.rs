//! A shard's driver: one OS thread running a `mio` poll loop over its own UDP socket and
//! its command inbox, feeding a [`ShardCore`]. This file owns only the I/O: receive
//! datagrams, hand over commands, send the core's outgoing queue with `sendmmsg`, wake
//! the shards the core pushed ring entries to (once per batch).

use std::io;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use super::command::Command;
use super::core::ShardCore;
use super::udp;

pub(crate) const WAKER: Token = Token(0);
const SOCKET: Token = Token(1);

/// Datagrams read per socket event before other work gets a turn.
const RECV_BUDGET: usize = 256;

/// Time a receive pass may take before the datagrams it forwarded are sent. A media packet
/// costs microseconds, but a DTLS handshake message costs a few hundred (key agreement,
/// signatures): in a join storm a pass of 256 datagrams could hold a call's packets for tens
/// of milliseconds. The clock is read every [`RECV_CLOCK_EVERY`] datagrams.
const RECV_TIME_BUDGET: Duration = Duration::from_millis(1);
const RECV_CLOCK_EVERY: usize = 4;

/// Time a pass spends on commands from the API before media gets its turn again. Applying
/// a large SDP takes milliseconds and a client can send many: commands left over wait for
/// the next pass (media first), instead of the whole queue running while datagrams wait.
const COMMAND_BUDGET: Duration = Duration::from_millis(2);

/// A shard core with its socket, poll, inbox and the other shards' wakers.
pub(crate) struct Shard {
    core: ShardCore,
    poll: Poll,
    socket: mio::net::UdpSocket,
    commands: mpsc::Receiver<Command>,
    peers: Vec<Arc<Waker>>,
    /// The last receive stopped at its budget with datagrams left in the socket. mio is
    /// edge-triggered: no new event comes for data already queued (and none at all once
    /// the kernel buffer is full and drops arrivals), so the loop must read again itself.
    socket_backlog: bool,
    /// The last pass stopped at its command budget with commands left.
    commands_pending: bool,
}

impl Shard {
    pub(crate) fn new(
        core: ShardCore,
        poll: Poll,
        mut socket: mio::net::UdpSocket,
        commands: mpsc::Receiver<Command>,
        peers: Vec<Arc<Waker>>,
    ) -> io::Result<Shard> {
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)?;
        Ok(Shard {
            core,
            poll,
            socket,
            commands,
            peers,
            socket_backlog: false,
            commands_pending: false,
        })
    }

    /// The event loop; returns on [`Command::Shutdown`] or when the API side is gone.
    /// Runs inside the `shard` tracing span (field `shard`): every session span is its child.
    pub(crate) fn run(mut self) {
        let _span = tracing::info_span!("shard", shard = self.core.id()).entered();
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; 2048];
        while self.core.running() {
            let wait = if self.socket_backlog || self.commands_pending {
                std::time::Duration::ZERO
            } else {
                self.core.wait(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(shard = self.core.id(), "poll failed: {e}");
                }
            }
            let now = Instant::now();
            if self.socket_backlog || events.iter().any(|ev| ev.token() == SOCKET) {
                self.receive(&mut buf, now);
            } else {
                // Edge-triggered: no event and no backlog means the socket is empty.
                self.core.backlog_drained();
            }
            self.handle_commands(now);
            self.core.tick(now);
            self.flush();
        }
        self.core.shutdown();
        self.flush();
    }

    fn receive(&mut self, buf: &mut [u8], now: Instant) {
        self.socket_backlog = false;
        for i in 0..RECV_BUDGET {
            if i > 0 && i.is_multiple_of(RECV_CLOCK_EVERY) && now.elapsed() >= RECV_TIME_BUDGET {
                break;
            }
            match udp::recv(&self.socket, buf) {
                Ok((n, source, stamp)) => {
                    if i == 0 {
                        // The oldest datagram of the pass: how far behind the shard is.
                        if let Some(stamp) = stamp {
                            self.core.note_backlog(udp::waited_since(stamp), now);
                        }
                    }
                    self.core.handle_datagram(&buf[..n], source, now)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if i == 0 {
                        self.core.backlog_drained();
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors (e.g. port unreachable) surface here; keep serving.
                    tracing::trace!(shard = self.core.id(), "recv error: {e}");
                    continue;
                }
            }
        }
        // Budget exhausted, data probably left: the next iteration reads again (after the
        // batch is flushed and commands and rings had their turn).
        self.socket_backlog = true;
    }

    fn handle_commands(&mut self, now: Instant) {
        self.commands_pending = false;
        let started = Instant::now();
        loop {
            if started.elapsed() >= COMMAND_BUDGET {
                self.commands_pending = true;
                return;
            }
            match self.commands.try_recv() {
                #[cfg(feature = "testing")]
                Ok(Command::Pause(d)) => {
                    std::thread::sleep(d.min(std::time::Duration::from_secs(5)))
                }
                Ok(cmd) => self.core.handle_command(cmd, now),
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.core.handle_command(Command::Shutdown, now);
                    return;
                }
            }
        }
    }

    fn flush(&mut self) {
        let out = self.core.outgoing();
        if !out.is_empty() {
            out.flush(&self.socket);
        }
        let peers = &self.peers;
        self.core.take_wakes(|i| {
            let _ = peers[i].wake();
        });
    }
}
