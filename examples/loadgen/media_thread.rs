//! One media thread: it polls the sockets of all its peers with mio, keeps one timer heap
//! for str0m timeouts and packet send times, and drives each peer's sans-IO
//! [`ClientPeer`]: datagrams in (with their kernel receive time), datagrams out, publishers'
//! packets on schedule, subscribers' arrivals into the latency histograms.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::ErrorKind;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use rheomesh::testing::ClientPeer;
use tokio::sync::mpsc as tmpsc;

use crate::media::{
    Cmd, Counters, JoinTimes, NewPeer, PeerEvent, PublisherReport, Role, SubscriberReport,
    ThreadReport, Window,
};
use crate::net::recv_timestamped;
use crate::signaling::debug;
use crate::stats::{now_us, Histogram};

pub(crate) const WAKER: Token = Token(usize::MAX);
/// Longest a media thread sleeps in `poll` (it also looks at commands then).
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// A publisher more than this behind its schedule skips ahead (counted as a slip).
const MAX_BEHIND: Duration = Duration::from_millis(200);

struct SendCfg {
    interval: Duration,
    keyframe_interval: Duration,
}

/// When a datagram arrived: the kernel's receive timestamp (SO_TIMESTAMPNS, taken when the
/// server's datagram crossed loopback) and when loadgen read it, both in [`now_us`] time.
#[derive(Clone, Copy, Default)]
struct RecvTime {
    kernel_us: Option<u64>,
    app_us: u64,
}

/// Thread-wide state the per-peer code needs.
struct Ctx {
    window: Arc<Window>,
    counters: Arc<Counters>,
    /// Send time to kernel receive time (falls back to `latency_app` without timestamps).
    latency: Histogram,
    /// Send time to the time loadgen handled the packet (adds loadgen's own queueing).
    latency_app: Histogram,
    sending: Option<SendCfg>,
    sent: u64,
    received: u64,
    send_errors: u64,
    disconnects: u64,
}

/// What the driver measures beyond the client's own counters.
enum Kind {
    Pub {
        index: u32,
        next_send: Option<Instant>,
        sent_window: u64,
        slips: u64,
        /// Keyframe requests already logged (`LOADGEN_DEBUG`).
        requests_logged: u64,
    },
    Sub {
        publisher: u32,
        unique_window: u64,
        join: JoinTimes,
    },
}

struct Peer {
    client: ClientPeer,
    socket: UdpSocket,
    events: tmpsc::UnboundedSender<PeerEvent>,
    /// The time of this peer's live entry in the timer heap.
    scheduled: Option<Instant>,
    /// `PeerEvent::Connected` went out.
    connected: bool,
    /// ICE disconnects already reported.
    disconnects: u64,
    /// str0m returned an error; the peer is not driven any more.
    dead: bool,
    kind: Kind,
}

impl Peer {
    fn wake_at(&self) -> Instant {
        let timeout = self.client.next_timeout();
        match &self.kind {
            Kind::Pub { next_send, .. } => next_send.map_or(timeout, |n| n.min(timeout)),
            Kind::Sub { .. } => timeout,
        }
    }

    /// After every call into the client: send what it queued, account for what arrived,
    /// and tell the signaling task about connection changes.
    fn after(&mut self, ctx: &mut Ctx, recv: RecvTime, result: Result<(), String>) {
        for (dest, data) in self.client.take_outgoing() {
            if self.socket.send_to(&data, dest).is_err() {
                ctx.send_errors += 1;
            }
        }
        // When what this call handled arrived: the datagram's kernel timestamp, else when
        // loadgen read it, else now (after a timeout or a command).
        let app = || {
            if recv.app_us == 0 {
                now_us()
            } else {
                recv.app_us
            }
        };
        let newly_connected = self.client.connected() && !self.connected;
        match &mut self.kind {
            Kind::Sub {
                unique_window,
                join,
                ..
            } => {
                if newly_connected {
                    join.connected_us = Some(recv.kernel_us.unwrap_or_else(app));
                }
                let first_media = join.first_media_us.is_none() && self.client.rtp_received() > 0;
                if first_media {
                    join.first_media_us = Some(recv.kernel_us.unwrap_or_else(app));
                }
                let (start, end) = ctx.window.get();
                for a in self.client.take_arrivals() {
                    if first_media && join.first_media_sent_us.is_none() {
                        join.first_media_sent_us = Some(a.stamp.send_us);
                    }
                    if !a.fresh {
                        continue;
                    }
                    ctx.received += 1;
                    let send_us = a.stamp.send_us;
                    if send_us >= start && send_us < end {
                        *unique_window += 1;
                        let app = app();
                        let kernel = recv.kernel_us.unwrap_or(app);
                        ctx.latency.record(kernel.saturating_sub(send_us));
                        ctx.latency_app.record(app.saturating_sub(send_us));
                    }
                }
                if first_media {
                    let _ = self.events.send(PeerEvent::FirstMedia(*join));
                }
            }
            Kind::Pub {
                index,
                requests_logged,
                ..
            } => {
                if debug() && *requests_logged < self.client.keyframe_requests() {
                    *requests_logged = self.client.keyframe_requests();
                    eprintln!(
                        "{} publisher {index} <- keyframe request ({} so far)",
                        recv.kernel_us.unwrap_or_else(app),
                        *requests_logged
                    );
                }
            }
        }
        if newly_connected {
            self.connected = true;
            let _ = self.events.send(PeerEvent::Connected);
        }
        while self.disconnects < self.client.ice_disconnects() {
            self.disconnects += 1;
            if self.connected {
                ctx.disconnects += 1;
            }
            let _ = self.events.send(PeerEvent::Disconnected);
        }
        if let Err(e) = result {
            let _ = self.events.send(PeerEvent::Error(e));
        }
        if let (Some(e), false) = (self.client.error(), self.dead) {
            self.dead = true;
            let _ = self.events.send(PeerEvent::Error(e.to_string()));
        }
    }

    fn handle_timeout(&mut self, now: Instant, ctx: &mut Ctx) {
        if self.dead {
            return;
        }
        let r = self.client.timeout(now);
        self.after(ctx, RecvTime::default(), r);
    }

    /// Write the packets that are due (publishers only).
    fn send_due(&mut self, now: Instant, ctx: &mut Ctx) {
        let Some((interval, keyframe_interval)) = ctx
            .sending
            .as_ref()
            .map(|c| (c.interval, c.keyframe_interval))
        else {
            return;
        };
        let Kind::Pub {
            index,
            next_send,
            sent_window,
            slips,
            ..
        } = &mut self.kind
        else {
            return;
        };
        let Some(mut next) = *next_send else { return };
        if next > now || self.dead {
            return;
        }
        if !self.client.connected() {
            *next_send = Some(now + interval);
            return;
        }
        if self.client.payload_type(0).is_none() {
            *next_send = None;
            let _ = self.events.send(PeerEvent::Error(
                "the answer has no VP8 payload type for our track".into(),
            ));
            return;
        }
        if now.saturating_duration_since(next) > MAX_BEHIND {
            *slips += 1;
            next = now;
        }
        let (win_start, win_end) = ctx.window.get();
        let mut wrote = false;
        while next <= now {
            next += interval;
            let send_us = now_us();
            // One packet on each encoding (one without simulcast); `sent` counts ticks, as
            // each subscriber receives one encoding.
            let mut written = true;
            let mut keyframe = false;
            for track in 0..self.client.local_tracks() {
                let key = self.client.keyframe_due(track, now, keyframe_interval);
                keyframe |= key;
                written &= self.client.write_media(track, key, send_us, now);
            }
            if !written {
                break;
            }
            if keyframe && debug() {
                eprintln!("{send_us} publisher {index} -> keyframe");
            }
            if send_us >= win_start && send_us < win_end {
                *sent_window += 1;
            }
            ctx.sent += 1;
            wrote = true;
        }
        *next_send = Some(next);
        if wrote {
            // str0m sends queued RTP when time moves forward.
            self.handle_timeout(now, ctx);
        }
    }

    fn report(&self, r: &mut ThreadReport) {
        let c = &self.client;
        match &self.kind {
            Kind::Pub {
                index,
                sent_window,
                slips,
                ..
            } => {
                let sent = c.sent(0);
                r.publishers.push(PublisherReport {
                    index: *index,
                    sent_window: *sent_window,
                    keyframes: sent.keyframes,
                    keyframe_requests: sent.keyframe_requests,
                    slips: *slips,
                });
            }
            Kind::Sub {
                publisher,
                unique_window,
                join,
            } => {
                let mut s = SubscriberReport {
                    publisher: *publisher,
                    connected: c.connected(),
                    unique_window: *unique_window,
                    join: *join,
                    ..Default::default()
                };
                for (_, t) in c.received_tracks() {
                    s.unique += t.distinct_counters;
                    s.duplicates += t.duplicates;
                    s.corrupt += t.corrupt;
                    s.foreign += t.foreign;
                }
                r.subscribers.push(s);
            }
        }
    }
}

pub(crate) struct Worker {
    poll: Poll,
    rx: Receiver<Cmd>,
    peers: Vec<Option<Peer>>,
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    ctx: Ctx,
}

impl Worker {
    pub(crate) fn new(
        poll: Poll,
        rx: Receiver<Cmd>,
        window: Arc<Window>,
        counters: Arc<Counters>,
    ) -> Worker {
        Worker {
            poll,
            rx,
            peers: Vec::new(),
            heap: BinaryHeap::new(),
            ctx: Ctx {
                window,
                counters,
                latency: Histogram::default(),
                latency_app: Histogram::default(),
                sending: None,
                sent: 0,
                received: 0,
                send_errors: 0,
                disconnects: 0,
            },
        }
    }

    pub(crate) fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 2048];
        loop {
            // Commands (the waker only interrupts the poll; look every round).
            loop {
                match self.rx.try_recv() {
                    Ok(Cmd::Shutdown) | Err(TryRecvError::Disconnected) => return,
                    Ok(cmd) => self.command(cmd),
                    Err(TryRecvError::Empty) => break,
                }
            }

            let now = Instant::now();
            let sleep = self
                .heap
                .peek()
                .map_or(MAX_SLEEP, |Reverse((at, _))| {
                    at.saturating_duration_since(now)
                })
                .min(MAX_SLEEP);
            if let Err(e) = self.poll.poll(&mut events, Some(sleep)) {
                if e.kind() != ErrorKind::Interrupted {
                    eprintln!("loadgen: media thread poll failed: {e}");
                    return;
                }
            }
            for ev in events.iter() {
                let Token(i) = ev.token();
                if i != WAKER.0 {
                    self.read(i, &mut buf);
                }
            }

            // Timers: str0m timeouts and send times.
            let now = Instant::now();
            while let Some(&Reverse((at, i))) = self.heap.peek() {
                if at > now {
                    break;
                }
                self.heap.pop();
                let Some(peer) = self.peers.get_mut(i).and_then(Option::as_mut) else {
                    continue;
                };
                if peer.scheduled != Some(at) {
                    continue; // stale entry
                }
                peer.scheduled = None;
                peer.send_due(now, &mut self.ctx);
                if peer.client.next_timeout() <= now {
                    peer.handle_timeout(now, &mut self.ctx);
                }
                self.schedule(i);
            }

            let c = &self.ctx.counters;
            c.sent.store(self.ctx.sent, Relaxed);
            c.received.store(self.ctx.received, Relaxed);
            c.send_errors.store(self.ctx.send_errors, Relaxed);
        }
    }

    /// Drive peer `i`'s clock right after a negotiation change, then reschedule it. str0m's
    /// ICE agent reports no deadline until it has seen a timeout, so without this a new
    /// remote candidate or description waits for whatever wakes the peer next (seen as
    /// ~1 s connection setups before this was added).
    fn kick(&mut self, i: usize) {
        let now = Instant::now();
        if let Some(peer) = self.peers.get_mut(i).and_then(Option::as_mut) {
            peer.handle_timeout(now, &mut self.ctx);
        }
        self.schedule(i);
    }

    /// Make sure peer `i` has a heap entry at or before its next wake-up.
    fn schedule(&mut self, i: usize) {
        let Some(peer) = self.peers.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if peer.dead {
            return;
        }
        let at = peer.wake_at();
        if peer.scheduled.is_none_or(|s| at < s) {
            peer.scheduled = Some(at);
            self.heap.push(Reverse((at, i)));
        }
    }

    /// Read every datagram waiting on peer `i`'s socket (mio is edge-triggered).
    fn read(&mut self, i: usize, buf: &mut [u8]) {
        let Some(peer) = self.peers.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        loop {
            match recv_timestamped(&peer.socket, buf) {
                Ok((n, source, kernel_us)) => {
                    if peer.dead {
                        continue;
                    }
                    let recv = RecvTime {
                        kernel_us,
                        app_us: now_us(),
                    };
                    let r = peer.client.receive(source, &buf[..n], Instant::now());
                    peer.after(&mut self.ctx, recv, r);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // ICMP errors surfacing on the socket: read on.
                Err(_) => {}
            }
        }
        self.schedule(i);
    }

    fn peer(&mut self, i: usize) -> Option<&mut Peer> {
        self.peers.get_mut(i).and_then(Option::as_mut)
    }

    /// Run `f` on peer `i`'s client, then [`Peer::after`]; `None` without such a peer.
    fn call<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut ClientPeer) -> Result<T, String>,
    ) -> Option<Result<T, String>> {
        let peer = self.peers.get_mut(i).and_then(Option::as_mut)?;
        let r = f(&mut peer.client);
        peer.after(&mut self.ctx, RecvTime::default(), Ok(()));
        Some(r)
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Add(i, np) => self.add(i, *np),
            Cmd::AcceptAnswer(i, sdp, reply) => {
                let is_pub = matches!(self.peer(i).map(|p| &p.kind), Some(Kind::Pub { .. }));
                let r = if is_pub {
                    self.call(i, |c| c.accept_answer(&sdp))
                        .unwrap_or_else(|| Err("no such peer".into()))
                } else if self.peer(i).is_some() {
                    Err("Answer for a subscriber".into())
                } else {
                    Err("no such peer".into())
                };
                let _ = reply.send(r);
                self.kick(i);
            }
            Cmd::AcceptOffer(i, sdp, reply) => {
                let r = self
                    .call(i, |c| c.accept_offer(&sdp))
                    .unwrap_or_else(|| Err("no such peer".into()));
                let _ = reply.send(r);
                self.kick(i);
            }
            Cmd::AddCandidate(i, line) => {
                if let Some(Err(e)) = self.call(i, |c| c.add_remote_candidate(&line)) {
                    if let Some(peer) = self.peer(i) {
                        let _ = peer.events.send(PeerEvent::Error(e));
                    }
                }
                self.kick(i);
            }
            Cmd::AnswerSent(i, us) => {
                if let Some(Kind::Sub { join, .. }) = self.peer(i).map(|p| &mut p.kind) {
                    join.answer_sent_us.get_or_insert(us);
                }
            }
            Cmd::StartSending {
                pps,
                payload,
                keyframe_interval,
            } => {
                let interval = Duration::from_secs_f64(1.0 / f64::from(pps.max(1)));
                self.ctx.sending = Some(SendCfg {
                    interval,
                    keyframe_interval,
                });
                let now = Instant::now();
                for i in 0..self.peers.len() {
                    let Some(peer) = self.peer(i) else { continue };
                    if let Kind::Pub {
                        index, next_send, ..
                    } = &mut peer.kind
                    {
                        peer.client.set_payload_len(0, payload);
                        // Spread the publishers' send times over the interval (golden
                        // ratio steps) so they do not all send in the same instant.
                        let phase = (f64::from(*index) * 0.618_033_988_75).fract();
                        *next_send = Some(now + interval.mul_f64(phase));
                        peer.client.restart_media(now);
                    }
                    self.schedule(i);
                }
            }
            Cmd::StopSending(reply) => {
                for p in self.peers.iter_mut().flatten() {
                    if let Kind::Pub { next_send, .. } = &mut p.kind {
                        *next_send = None;
                    }
                }
                let _ = reply.send(());
            }
            Cmd::Report(reply) => {
                let mut r = ThreadReport {
                    latency: self.ctx.latency.clone(),
                    latency_app: self.ctx.latency_app.clone(),
                    send_errors: self.ctx.send_errors,
                    disconnects: self.ctx.disconnects,
                    ..Default::default()
                };
                for p in self.peers.iter().flatten() {
                    p.report(&mut r);
                }
                let _ = reply.send(r);
            }
            Cmd::Shutdown => {}
        }
    }

    fn add(&mut self, i: usize, np: NewPeer) {
        let NewPeer {
            client,
            socket,
            role,
            events,
        } = np;
        let mut socket = UdpSocket::from_std(socket);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(i), Interest::READABLE)
        {
            let _ = events.send(PeerEvent::Error(format!("mio register: {e}")));
            return;
        }
        let kind = match role {
            Role::Publisher { index } => Kind::Pub {
                index,
                next_send: None,
                sent_window: 0,
                slips: 0,
                requests_logged: 0,
            },
            Role::Subscriber { publisher } => Kind::Sub {
                publisher,
                unique_window: 0,
                join: JoinTimes::default(),
            },
        };
        if self.peers.len() <= i {
            self.peers.resize_with(i + 1, || None);
        }
        let mut peer = Peer {
            client,
            socket,
            events,
            scheduled: None,
            connected: false,
            disconnects: 0,
            dead: false,
            kind,
        };
        peer.after(&mut self.ctx, RecvTime::default(), Ok(()));
        self.peers[i] = Some(peer);
        self.schedule(i);
    }
}
