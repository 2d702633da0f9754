//! The media side: every str0m peer (one UDP socket and one `Rtc` each) lives on one of a
//! few media threads. A media thread polls all its sockets with mio and keeps one timer
//! heap for str0m timeouts and packet send times, so hundreds of peers cost no threads.
//!
//! The signaling tasks (tokio) talk to a peer through a [`PeerRef`]: commands go over a
//! channel plus a mio `Waker`, replies come back on tokio oneshots, and connection events
//! on a tokio channel.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::payload;
use crate::stats::{gettid, now_us, Histogram};

const WAKER: Token = Token(usize::MAX);
/// Longest a media thread sleeps in `poll` (it also looks at commands then).
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// A publisher more than this behind its schedule skips ahead (counted as a slip).
const MAX_BEHIND: Duration = Duration::from_millis(200);
/// Requested socket buffer sizes (the kernel caps them at net.core.[rw]mem_max).
const SOCKET_BUFFER: usize = 2 << 20;
/// Counters above this are treated as corrupt (keeps the seen-bitmap bounded).
const MAX_COUNTER: u64 = 1 << 30;

/// Connection events of one peer, for its signaling task.
#[derive(Debug)]
pub enum PeerEvent {
    Connected,
    Disconnected,
    Error(String),
}

/// What a new peer does.
pub enum Role {
    /// Publishes one VP8 track on `mid`; `pending` is the offer sent to the server.
    Publisher {
        index: u32,
        mid: Mid,
        pending: SdpPendingOffer,
    },
    /// Receives the track of publisher `publisher`.
    Subscriber { publisher: u32 },
}

/// A peer before it moves to its media thread.
pub struct NewPeer {
    rtc: Rtc,
    socket: StdUdpSocket,
    local_addr: SocketAddr,
    role: Role,
    events: tmpsc::UnboundedSender<PeerEvent>,
}

/// A bound socket and an `Rtc` with its host candidate: returns the peer-to-be, the
/// candidate line (`candidate:...`) to trickle, and for publishers the offer SDP.
pub struct PeerSetup {
    pub peer: NewPeer,
    pub candidate: String,
    pub offer: Option<String>,
}

fn bind_socket(ip: Ipv4Addr) -> std::io::Result<StdUdpSocket> {
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
fn recv_timestamped(
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

/// Create a publisher peer with an offer for one sendonly VP8 track `track_id`.
pub fn new_publisher(
    bind: Ipv4Addr,
    index: u32,
    track_id: &str,
    events: tmpsc::UnboundedSender<PeerEvent>,
) -> Result<PeerSetup, String> {
    let mut rtc = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_vp8(true)
        .build(Instant::now());
    let (socket, local_addr, candidate) = add_socket(&mut rtc, bind)?;
    let mut api = rtc.sdp_api();
    let mid = api.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        Some(format!("loadgen-stream-{index}")),
        Some(track_id.to_string()),
        None,
    );
    let (offer, pending) = api.apply().ok_or("str0m made no offer")?;
    Ok(PeerSetup {
        peer: NewPeer {
            rtc,
            socket,
            local_addr,
            role: Role::Publisher {
                index,
                mid,
                pending,
            },
            events,
        },
        candidate,
        offer: Some(offer.to_sdp_string()),
    })
}

/// Create a subscriber peer (it answers the server's offers).
pub fn new_subscriber(
    bind: Ipv4Addr,
    publisher: u32,
    events: tmpsc::UnboundedSender<PeerEvent>,
) -> Result<PeerSetup, String> {
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
    let (socket, local_addr, candidate) = add_socket(&mut rtc, bind)?;
    Ok(PeerSetup {
        peer: NewPeer {
            rtc,
            socket,
            local_addr,
            role: Role::Subscriber { publisher },
            events,
        },
        candidate,
        offer: None,
    })
}

/// Bind a socket on `ip` and add it to `rtc` as host candidate; returns the socket, its address
/// and the candidate as `candidate:...`.
fn add_socket(rtc: &mut Rtc, ip: Ipv4Addr) -> Result<(StdUdpSocket, SocketAddr, String), String> {
    let socket = bind_socket(ip).map_err(|e| format!("binding a UDP socket on {ip}: {e}"))?;
    let local_addr = socket.local_addr().map_err(|e| e.to_string())?;
    let candidate = Candidate::host(local_addr, "udp").map_err(|e| e.to_string())?;
    let line = candidate.to_sdp_string();
    rtc.add_local_candidate(candidate);
    let line = line.strip_prefix("a=").unwrap_or(&line).to_string();
    Ok((socket, local_addr, line))
}

/// The measured window, in [`now_us`] time. Packets whose send time is inside count.
pub struct Window {
    start_us: AtomicU64,
    end_us: AtomicU64,
}

impl Window {
    fn get(&self) -> (u64, u64) {
        (self.start_us.load(Relaxed), self.end_us.load(Relaxed))
    }
}

/// Live counters of one media thread (for the progress line).
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub send_errors: AtomicU64,
}

#[derive(Debug, Clone, Default)]
pub struct PublisherReport {
    pub index: u32,
    pub sent_total: u64,
    pub sent_window: u64,
    pub keyframes: u64,
    pub keyframe_requests: u64,
    pub slips: u64,
}

#[derive(Debug, Clone, Default)]
pub struct SubscriberReport {
    pub publisher: u32,
    pub connected: bool,
    /// Distinct packets received (any time).
    pub unique: u64,
    /// Distinct packets whose send time is inside the window.
    pub unique_window: u64,
    pub duplicates: u64,
    pub corrupt: u64,
    /// Intact packets of another publisher than the one subscribed to.
    pub foreign: u64,
}

/// Everything a media thread measured.
#[derive(Clone, Default)]
pub struct ThreadReport {
    pub publishers: Vec<PublisherReport>,
    pub subscribers: Vec<SubscriberReport>,
    /// Send time to kernel receive timestamp.
    pub latency: Histogram,
    /// Send time to loadgen handling the packet.
    pub latency_app: Histogram,
    pub send_errors: u64,
    pub disconnects: u64,
}

enum Cmd {
    Add(usize, Box<NewPeer>),
    AcceptAnswer(usize, String, oneshot::Sender<Result<(), String>>),
    AcceptOffer(usize, String, oneshot::Sender<Result<String, String>>),
    AddCandidate(usize, String),
    StartSending {
        pps: u32,
        payload: usize,
        keyframe_interval: Duration,
    },
    StopSending(oneshot::Sender<()>),
    Report(oneshot::Sender<ThreadReport>),
    Shutdown,
}

struct ThreadHandle {
    tx: Sender<Cmd>,
    waker: Arc<Waker>,
    counters: Arc<Counters>,
    tid: Arc<AtomicI64>,
    join: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl ThreadHandle {
    fn send(&self, cmd: Cmd) -> bool {
        let ok = self.tx.send(cmd).is_ok();
        let _ = self.waker.wake();
        ok
    }
}

/// All media threads.
pub struct Engine {
    threads: Vec<ThreadHandle>,
    next_id: AtomicUsize,
    window: Arc<Window>,
}

/// Handle of one peer for its signaling task.
#[derive(Clone)]
pub struct PeerRef {
    tx: Sender<Cmd>,
    waker: Arc<Waker>,
    local: usize,
}

impl PeerRef {
    fn send(&self, cmd: Cmd) -> bool {
        let ok = self.tx.send(cmd).is_ok();
        let _ = self.waker.wake();
        ok
    }

    /// Publisher: apply the server's answer to our offer.
    pub async fn accept_answer(&self, sdp: String) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Cmd::AcceptAnswer(self.local, sdp, tx)) {
            return Err("media thread gone".into());
        }
        rx.await.unwrap_or_else(|_| Err("media thread gone".into()))
    }

    /// Subscriber: apply a server offer, returning our answer.
    pub async fn accept_offer(&self, sdp: String) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Cmd::AcceptOffer(self.local, sdp, tx)) {
            return Err("media thread gone".into());
        }
        rx.await.unwrap_or_else(|_| Err("media thread gone".into()))
    }

    /// Add a trickled server candidate (errors come back as [`PeerEvent::Error`]).
    pub fn add_candidate(&self, candidate: String) {
        self.send(Cmd::AddCandidate(self.local, candidate));
    }
}

impl Engine {
    /// Start `threads` media threads.
    pub fn start(threads: usize) -> Result<Engine, String> {
        let window = Arc::new(Window {
            start_us: AtomicU64::new(u64::MAX),
            end_us: AtomicU64::new(u64::MAX),
        });
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let poll = Poll::new().map_err(|e| format!("mio poll: {e}"))?;
            let waker = Arc::new(
                Waker::new(poll.registry(), WAKER).map_err(|e| format!("mio waker: {e}"))?,
            );
            let (tx, rx) = mpsc::channel();
            let counters = Arc::new(Counters::default());
            let tid = Arc::new(AtomicI64::new(0));
            let mut worker = Worker {
                poll,
                rx,
                peers: Vec::new(),
                heap: BinaryHeap::new(),
                ctx: Ctx {
                    window: window.clone(),
                    counters: counters.clone(),
                    latency: Histogram::default(),
                    latency_app: Histogram::default(),
                    sending: None,
                    sent: 0,
                    received: 0,
                    send_errors: 0,
                    disconnects: 0,
                },
            };
            let tid2 = tid.clone();
            let join = std::thread::Builder::new()
                .name(format!("loadgen-media-{i}"))
                .spawn(move || {
                    tid2.store(gettid(), Relaxed);
                    worker.run();
                })
                .map_err(|e| format!("spawning a media thread: {e}"))?;
            handles.push(ThreadHandle {
                tx,
                waker,
                counters,
                tid,
                join: std::sync::Mutex::new(Some(join)),
            });
        }
        Ok(Engine {
            threads: handles,
            next_id: AtomicUsize::new(0),
            window,
        })
    }

    /// Move a peer to a media thread (round robin).
    pub fn add(&self, peer: NewPeer) -> Result<PeerRef, String> {
        let id = self.next_id.fetch_add(1, Relaxed);
        let n = self.threads.len();
        let t = &self.threads[id % n];
        let local = id / n;
        if !t.send(Cmd::Add(local, Box::new(peer))) {
            return Err("media thread gone".into());
        }
        Ok(PeerRef {
            tx: t.tx.clone(),
            waker: t.waker.clone(),
            local,
        })
    }

    pub fn set_window(&self, start_us: u64, end_us: u64) {
        self.window.start_us.store(start_us, Relaxed);
        self.window.end_us.store(end_us, Relaxed);
    }

    pub fn start_sending(&self, pps: u32, payload: usize, keyframe_interval: Duration) {
        for t in &self.threads {
            t.send(Cmd::StartSending {
                pps,
                payload,
                keyframe_interval,
            });
        }
    }

    /// Stop all publishers; returns once no thread sends any more.
    pub async fn stop_sending(&self) {
        let mut replies = Vec::new();
        for t in &self.threads {
            let (tx, rx) = oneshot::channel();
            t.send(Cmd::StopSending(tx));
            replies.push(rx);
        }
        for r in replies {
            let _ = r.await;
        }
    }

    pub async fn report(&self) -> Vec<ThreadReport> {
        let mut replies = Vec::new();
        for t in &self.threads {
            let (tx, rx) = oneshot::channel();
            t.send(Cmd::Report(tx));
            replies.push(rx);
        }
        let mut out = Vec::new();
        for r in replies {
            if let Ok(rep) = r.await {
                out.push(rep);
            }
        }
        out
    }

    /// (packets sent, distinct packets received, send errors) so far, all threads.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.threads.iter().fold((0, 0, 0), |(s, r, e), t| {
            (
                s + t.counters.sent.load(Relaxed),
                r + t.counters.received.load(Relaxed),
                e + t.counters.send_errors.load(Relaxed),
            )
        })
    }

    /// Kernel thread ids of the media threads (0 until a thread has started).
    pub fn thread_ids(&self) -> Vec<i64> {
        self.threads.iter().map(|t| t.tid.load(Relaxed)).collect()
    }

    /// Stop the media threads and wait for them.
    pub fn shutdown(&self) {
        for t in &self.threads {
            t.send(Cmd::Shutdown);
        }
        for t in &self.threads {
            let j = t.join.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(j) = j {
                let _ = j.join();
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------
// Media thread
// ---------------------------------------------------------------------------

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

struct Publisher {
    index: u32,
    mid: Mid,
    pending: Option<SdpPendingOffer>,
    pt: Option<Pt>,
    counter: u64,
    seq: u64,
    ts_base: u32,
    started: Instant,
    next_send: Option<Instant>,
    last_keyframe: Option<Instant>,
    force_keyframe: bool,
    template: Vec<u8>,
    report: PublisherReport,
}

struct Subscriber {
    /// Bitmap of counters seen.
    seen: Vec<u64>,
    /// Payload size to expect.
    payload: usize,
    report: SubscriberReport,
}

impl Subscriber {
    /// Mark `counter` seen; true the first time.
    fn insert(&mut self, counter: u64) -> bool {
        let (w, b) = ((counter / 64) as usize, counter % 64);
        if w >= self.seen.len() {
            self.seen.resize((w + 1).next_power_of_two(), 0);
        }
        let fresh = self.seen[w] & (1 << b) == 0;
        self.seen[w] |= 1 << b;
        fresh
    }
}

enum Kind {
    Pub(Box<Publisher>),
    Sub(Box<Subscriber>),
}

struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local_addr: SocketAddr,
    events: tmpsc::UnboundedSender<PeerEvent>,
    next_timeout: Instant,
    /// The time of this peer's live entry in the timer heap.
    scheduled: Option<Instant>,
    connected: bool,
    /// str0m returned an error; the peer is not driven any more.
    dead: bool,
    kind: Kind,
}

impl Peer {
    fn wake_at(&self) -> Instant {
        match &self.kind {
            Kind::Pub(p) => p
                .next_send
                .map_or(self.next_timeout, |n| n.min(self.next_timeout)),
            Kind::Sub(_) => self.next_timeout,
        }
    }

    /// Poll str0m until it wants a timeout. Must follow every input/change.
    fn drain(&mut self, ctx: &mut Ctx, recv: RecvTime) {
        if self.dead {
            return;
        }
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    if self.socket.send_to(&t.contents, t.destination).is_err() {
                        ctx.send_errors += 1;
                    }
                }
                Ok(Output::Event(e)) => self.on_event(e, ctx, recv),
                Err(e) => {
                    self.dead = true;
                    let _ = self
                        .events
                        .send(PeerEvent::Error(format!("str0m poll_output: {e}")));
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, e: Event, ctx: &mut Ctx, recv: RecvTime) {
        match e {
            Event::Connected => {
                self.connected = true;
                let _ = self.events.send(PeerEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                if self.connected {
                    ctx.disconnects += 1;
                }
                let _ = self.events.send(PeerEvent::Disconnected);
            }
            Event::KeyframeRequest(kr) => {
                if let Kind::Pub(p) = &mut self.kind {
                    if kr.mid == p.mid {
                        p.force_keyframe = true;
                        p.report.keyframe_requests += 1;
                    }
                }
            }
            Event::RtpPacket(pkt) => {
                if let Kind::Sub(s) = &mut self.kind {
                    let Some(parsed) = payload::parse(&pkt.payload, s.payload) else {
                        s.report.corrupt += 1;
                        return;
                    };
                    if parsed.publisher != s.report.publisher {
                        s.report.foreign += 1;
                        return;
                    }
                    if parsed.counter > MAX_COUNTER {
                        s.report.corrupt += 1;
                        return;
                    }
                    if !s.insert(parsed.counter) {
                        s.report.duplicates += 1;
                        return;
                    }
                    s.report.unique += 1;
                    ctx.received += 1;
                    let (start, end) = ctx.window.get();
                    if parsed.send_us >= start && parsed.send_us < end {
                        s.report.unique_window += 1;
                        let app = if recv.app_us == 0 {
                            now_us()
                        } else {
                            recv.app_us
                        };
                        let kernel = recv.kernel_us.unwrap_or(app);
                        ctx.latency.record(kernel.saturating_sub(parsed.send_us));
                        ctx.latency_app.record(app.saturating_sub(parsed.send_us));
                    }
                }
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant, ctx: &mut Ctx) {
        if self.dead {
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            let _ = self
                .events
                .send(PeerEvent::Error(format!("str0m timeout: {e}")));
        }
        self.drain(ctx, RecvTime::default());
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
        let Kind::Pub(p) = &mut self.kind else {
            return;
        };
        let Some(mut next) = p.next_send else { return };
        if next > now || self.dead {
            return;
        }
        if !self.connected {
            p.next_send = Some(now + interval);
            return;
        }
        if p.pt.is_none() {
            p.pt = vp8_pt(&self.rtc, p.mid);
        }
        let Some(pt) = p.pt else {
            p.next_send = None;
            let _ = self.events.send(PeerEvent::Error(
                "the answer has no VP8 payload type for our track".into(),
            ));
            return;
        };
        if now.saturating_duration_since(next) > MAX_BEHIND {
            p.report.slips += 1;
            next = now;
        }
        let (win_start, win_end) = ctx.window.get();
        let mut wrote = false;
        while next <= now {
            next += interval;
            let keyframe = p.force_keyframe
                || p.last_keyframe
                    .is_none_or(|k| now.saturating_duration_since(k) >= keyframe_interval);
            if keyframe {
                p.force_keyframe = false;
                p.last_keyframe = Some(now);
                p.report.keyframes += 1;
            }
            let send_us = now_us();
            let mut data = p.template.clone();
            payload::stamp(&mut data, keyframe, p.index, p.counter, send_us);
            let elapsed = now.saturating_duration_since(p.started);
            let ts = p
                .ts_base
                .wrapping_add((elapsed.as_micros() as u64 * 90 / 1000) as u32);
            let mut api = self.rtc.direct_api();
            let Some(stream) = api.stream_tx_by_mid(p.mid, None) else {
                break;
            };
            stream.write_rtp(
                RtpWrite::new(pt, p.seq.into(), ts, now, data)
                    .marker(true)
                    .nackable(true),
            );
            p.counter += 1;
            p.seq += 1;
            p.report.sent_total += 1;
            if send_us >= win_start && send_us < win_end {
                p.report.sent_window += 1;
            }
            ctx.sent += 1;
            wrote = true;
        }
        p.next_send = Some(next);
        if wrote {
            // str0m sends queued RTP when time moves forward.
            self.handle_timeout(now, ctx);
        }
    }
}

/// The payload type the server accepted for VP8 on `mid`.
fn vp8_pt(rtc: &Rtc, mid: Mid) -> Option<Pt> {
    let media = rtc.media(mid)?;
    let params = rtc.codec_config().params();
    media.remote_pts().iter().copied().find(|pt| {
        params
            .iter()
            .any(|p| p.pt() == *pt && p.spec().codec == Codec::Vp8)
    })
}

struct Worker {
    poll: Poll,
    rx: Receiver<Cmd>,
    peers: Vec<Option<Peer>>,
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    ctx: Ctx,
}

impl Worker {
    fn run(&mut self) {
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
                if peer.next_timeout <= now {
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
                    let Ok(r) = Receive::new(Protocol::Udp, source, peer.local_addr, &buf[..n])
                    else {
                        continue;
                    };
                    if let Err(e) = peer.rtc.handle_input(Input::Receive(Instant::now(), r)) {
                        let _ = peer
                            .events
                            .send(PeerEvent::Error(format!("str0m input: {e}")));
                    }
                    peer.drain(&mut self.ctx, recv);
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

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Add(i, np) => {
                let NewPeer {
                    rtc,
                    socket,
                    local_addr,
                    role,
                    events,
                } = *np;
                let mut socket = UdpSocket::from_std(socket);
                if let Err(e) =
                    self.poll
                        .registry()
                        .register(&mut socket, Token(i), Interest::READABLE)
                {
                    let _ = events.send(PeerEvent::Error(format!("mio register: {e}")));
                    return;
                }
                let kind = match role {
                    Role::Publisher {
                        index,
                        mid,
                        pending,
                    } => Kind::Pub(Box::new(Publisher {
                        index,
                        mid,
                        pending: Some(pending),
                        pt: None,
                        counter: 0,
                        seq: 1000 + u64::from(rand::random::<u16>() % 20_000),
                        ts_base: rand::random(),
                        started: Instant::now(),
                        next_send: None,
                        last_keyframe: None,
                        force_keyframe: false,
                        template: Vec::new(),
                        report: PublisherReport {
                            index,
                            ..Default::default()
                        },
                    })),
                    Role::Subscriber { publisher } => Kind::Sub(Box::new(Subscriber {
                        seen: Vec::new(),
                        payload: 0,
                        report: SubscriberReport {
                            publisher,
                            ..Default::default()
                        },
                    })),
                };
                if self.peers.len() <= i {
                    self.peers.resize_with(i + 1, || None);
                }
                let mut peer = Peer {
                    rtc,
                    socket,
                    local_addr,
                    events,
                    next_timeout: Instant::now(),
                    scheduled: None,
                    connected: false,
                    dead: false,
                    kind,
                };
                peer.drain(&mut self.ctx, RecvTime::default());
                self.peers[i] = Some(peer);
                self.schedule(i);
            }
            Cmd::AcceptAnswer(i, sdp, reply) => {
                let r = self.accept_answer(i, &sdp);
                let _ = reply.send(r);
                self.kick(i);
            }
            Cmd::AcceptOffer(i, sdp, reply) => {
                let r = self.accept_offer(i, &sdp);
                let _ = reply.send(r);
                self.kick(i);
            }
            Cmd::AddCandidate(i, line) => {
                let Some(peer) = self.peers.get_mut(i).and_then(Option::as_mut) else {
                    return;
                };
                let s = line.trim();
                let s = s.strip_prefix("a=").unwrap_or(s);
                match Candidate::from_sdp_string(s) {
                    Ok(c) => {
                        peer.rtc.add_remote_candidate(c);
                        peer.drain(&mut self.ctx, RecvTime::default());
                    }
                    Err(e) => {
                        let _ = peer
                            .events
                            .send(PeerEvent::Error(format!("bad candidate {s:?}: {e}")));
                    }
                }
                self.kick(i);
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
                    match &mut peer.kind {
                        Kind::Pub(p) => {
                            p.template = payload::template(payload);
                            // Spread the publishers' send times over the interval (golden
                            // ratio steps) so they do not all send in the same instant.
                            let phase = (f64::from(p.index) * 0.618_033_988_75).fract();
                            p.next_send = Some(now + interval.mul_f64(phase));
                            p.started = now;
                            p.last_keyframe = None;
                        }
                        Kind::Sub(s) => s.payload = payload,
                    }
                    self.schedule(i);
                }
            }
            Cmd::StopSending(reply) => {
                for p in self.peers.iter_mut().flatten() {
                    if let Kind::Pub(p) = &mut p.kind {
                        p.next_send = None;
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
                    match &p.kind {
                        Kind::Pub(x) => r.publishers.push(x.report.clone()),
                        Kind::Sub(x) => r.subscribers.push(SubscriberReport {
                            connected: p.connected,
                            ..x.report.clone()
                        }),
                    }
                }
                let _ = reply.send(r);
            }
            Cmd::Shutdown => {}
        }
    }

    fn accept_answer(&mut self, i: usize, sdp: &str) -> Result<(), String> {
        let ctx = &mut self.ctx;
        let peer = self
            .peers
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or("no such peer")?;
        let Kind::Pub(p) = &mut peer.kind else {
            return Err("Answer for a subscriber".into());
        };
        let pending = p
            .pending
            .take()
            .ok_or("Answer without an outstanding offer")?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("bad answer SDP: {e}"))?;
        let r = peer.rtc.sdp_api().accept_answer(pending, answer);
        peer.drain(ctx, RecvTime::default());
        r.map_err(|e| format!("str0m rejected the answer: {e}"))
    }

    fn accept_offer(&mut self, i: usize, sdp: &str) -> Result<String, String> {
        let ctx = &mut self.ctx;
        let peer = self
            .peers
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or("no such peer")?;
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("bad offer SDP: {e}"))?;
        let r = peer.rtc.sdp_api().accept_offer(offer);
        peer.drain(ctx, RecvTime::default());
        let answer = r.map_err(|e| format!("str0m rejected the offer: {e}"))?;
        Ok(answer.to_sdp_string())
    }
}
