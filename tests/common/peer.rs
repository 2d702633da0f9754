//! A real str0m client peer for integration tests: the sans-IO
//! [`ClientPeer`](rheomesh::testing::ClientPeer) driven by its own std thread, a UDP socket
//! bound to `127.0.0.1:0` and the wall clock. This file owns only the driving: the socket
//! loop, the send schedule (packets per second, keyframe interval), simulated loss, a
//! shaped downlink (a bottleneck of a set rate in front of the peer), and a
//! blocking API callable from any thread (every method locks the peer, acts, and sends
//! what the peer queued). Offers, payloads and per-track counters are the client's.
//!
//! Payloads are `rheomesh::testing::payload`'s, [`VIDEO_PAYLOAD_LEN`] and
//! [`AUDIO_PAYLOAD_LEN`] bytes, stamped with [`now_us`] (one process-wide clock, so one-way
//! latency needs no sync); every video packet carries the marker bit.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rheomesh::testing::{
    ClientConfig, ClientPeer, SendStats, DEFAULT_AUDIO_LEN, DEFAULT_VIDEO_LEN,
};
use str0m::media::MediaKind;
use str0m::Candidate;

pub use rheomesh::testing::ReceivedTrack;

/// Total size of a synthetic video payload.
pub const VIDEO_PAYLOAD_LEN: usize = DEFAULT_VIDEO_LEN;
/// Total size of a synthetic audio payload.
pub const AUDIO_PAYLOAD_LEN: usize = DEFAULT_AUDIO_LEN;

/// Longest the peer thread blocks on the socket before looking at its state again.
const MAX_WAIT: Duration = Duration::from_millis(5);
/// A track more than this behind its send schedule skips ahead.
const MAX_BEHIND: Duration = Duration::from_millis(200);
/// Packets a track may catch up per loop turn.
const MAX_BURST: usize = 4;

static CRYPTO_INIT: Once = Once::new();
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn init_crypto() {
    CRYPTO_INIT.call_once(|| {
        // install_process_default() ignores a second install (OnceLock::set),
        // so this is safe even if the server engine installs one too.
        str0m::crypto::from_feature_flags().install_process_default();
    });
}

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since a process-wide epoch (shared by all peers and threads).
pub fn now_us() -> u64 {
    Instant::now()
        .saturating_duration_since(epoch())
        .as_micros() as u64
}

#[derive(Debug, Clone, Default)]
pub struct PeerConfig {
    /// Fraction of outgoing SRTP/SRTCP datagrams dropped once connected.
    pub loss_out: f64,
    /// Fraction of incoming SRTP/SRTCP datagrams dropped once connected.
    pub loss_in: f64,
    /// Seed for the loss RNG.
    pub seed: u64,
}

#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    pub sent_video: u64,
    pub sent_audio: u64,
    pub keyframe_requests: u64,
    pub keyframe_request_times: Vec<Instant>,
    pub connected: bool,
    pub dropped_out: u64,
    pub dropped_in: u64,
}

/// The longest a datagram waits in the shaped downlink's queue; later ones are dropped
/// (a drop-tail bottleneck, like `tc tbf ... latency 50ms`).
const SHAPER_QUEUE: Duration = Duration::from_millis(50);

/// A bottleneck in front of the peer: datagrams from the server leave it at `bps`, in
/// order, and are handed to the peer at that time; what would wait longer than
/// [`SHAPER_QUEUE`] is dropped.
struct Shaper {
    bps: u64,
    queue: VecDeque<(Instant, Vec<u8>, SocketAddr)>,
    /// When the link is free again.
    free_at: Instant,
    dropped: u64,
}

impl Shaper {
    fn offer(&mut self, data: &[u8], source: SocketAddr, now: Instant) {
        let start = self.free_at.max(now);
        if start.saturating_duration_since(now) > SHAPER_QUEUE {
            self.dropped += 1;
            return;
        }
        // Wire size: the UDP payload plus UDP/IP headers.
        let bits = (data.len() as u64 + 28) * 8;
        let done = start + Duration::from_micros(bits * 1_000_000 / self.bps.max(1));
        self.free_at = done;
        self.queue.push_back((done, data.to_vec(), source));
    }
}

struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn is_srtp(b: &[u8]) -> bool {
    matches!(b.first(), Some(128..=191))
}

struct Sending {
    video_interval: Option<Duration>,
    audio_interval: Option<Duration>,
    keyframe_interval: Duration,
    /// Next send time per local track.
    next_due: Vec<Instant>,
    /// Local tracks not sending for now.
    paused: Vec<bool>,
}

/// The peer and everything its driver keeps, behind one lock.
struct State {
    peer: ClientPeer,
    cfg: PeerConfig,
    rng: XorShift,
    sending: Option<Sending>,
    dropped_out: u64,
    dropped_in: u64,
    keyframe_request_times: Vec<Instant>,
    stop: bool,
    shaper: Option<Shaper>,
    shaper_dropped: u64,
    /// Not reading its socket (a peer that stopped polling): datagrams wait in the kernel.
    deaf: bool,
    /// While `Some`, a copy of every SRTCP datagram the peer sends (an attacker's capture).
    captured_rtcp: Option<Vec<(SocketAddr, Vec<u8>)>>,
}

impl State {
    /// Send what the peer queued (minus simulated loss); note new keyframe requests.
    fn flush(&mut self, socket: &UdpSocket) {
        let lossy = self.peer.connected() && self.cfg.loss_out > 0.0;
        for (dest, data) in self.peer.take_outgoing() {
            if lossy && is_srtp(&data) && self.rng.next_f64() < self.cfg.loss_out {
                self.dropped_out += 1;
                continue;
            }
            if let Some(c) = self.captured_rtcp.as_mut() {
                // RTCP packet types 192-223 in the second byte (RFC 5761 demultiplexing).
                if is_srtp(&data) && matches!(data.get(1), Some(192..=223)) {
                    c.push((dest, data.clone()));
                }
            }
            let _ = socket.send_to(&data, dest);
        }
        while (self.keyframe_request_times.len() as u64) < self.peer.keyframe_requests() {
            self.keyframe_request_times.push(Instant::now());
        }
    }

    fn on_datagram(&mut self, data: &[u8], source: SocketAddr) {
        if let (Some(shaper), true) = (self.shaper.as_mut(), self.peer.connected()) {
            shaper.offer(data, source, Instant::now());
            return;
        }
        self.deliver(data, source);
    }

    /// Hand the peer what has crossed the shaped downlink by now.
    fn deliver_shaped(&mut self) {
        let now = Instant::now();
        while let Some((at, _, _)) = self.shaper.as_ref().and_then(|s| s.queue.front()) {
            if *at > now {
                break;
            }
            let Some((_, data, source)) = self.shaper.as_mut().and_then(|s| s.queue.pop_front())
            else {
                break;
            };
            self.deliver(&data, source);
        }
    }

    fn deliver(&mut self, data: &[u8], source: SocketAddr) {
        if self.peer.connected()
            && self.cfg.loss_in > 0.0
            && is_srtp(data)
            && self.rng.next_f64() < self.cfg.loss_in
        {
            self.dropped_in += 1;
            return;
        }
        let _ = self.peer.receive(source, data, Instant::now());
    }

    /// Write the packets that are due on every local track.
    fn send_due_media(&mut self) {
        let Some(s) = &mut self.sending else {
            return;
        };
        if !self.peer.connected() {
            return;
        }
        let now = Instant::now();
        let mut wrote = false;
        for i in 0..self.peer.local_tracks() {
            let interval = match self.peer.local_kind(i) {
                Some(MediaKind::Audio) => s.audio_interval,
                _ => s.video_interval,
            };
            let Some(interval) = interval else { continue };
            if s.paused.get(i).copied().unwrap_or(false) {
                continue;
            }
            if self.peer.payload_type(i).is_none() {
                continue;
            }
            if s.next_due.len() <= i {
                s.next_due.resize(i + 1, now);
            }
            let due = &mut s.next_due[i];
            // Catch up at most a few packets per turn; resync if far behind.
            if now.saturating_duration_since(*due) > MAX_BEHIND {
                *due = now;
            }
            let mut burst = 0;
            while *due <= now && burst < MAX_BURST {
                burst += 1;
                *due += interval;
                let keyframe = self.peer.keyframe_due(i, now, s.keyframe_interval);
                if !self.peer.write_media(i, keyframe, now_us(), now) {
                    break;
                }
                wrote = true;
            }
        }
        if wrote {
            let _ = self.peer.timeout(Instant::now());
        }
    }

    /// When the thread should look again.
    fn wait(&self) -> Duration {
        let now = Instant::now();
        let mut wake = self.peer.next_timeout().min(now + MAX_WAIT);
        if let (Some(s), true) = (&self.sending, self.peer.connected()) {
            if let Some(due) = s.next_due.iter().min() {
                wake = wake.min(*due);
            }
        }
        if let Some((at, _, _)) = self.shaper.as_ref().and_then(|s| s.queue.front()) {
            wake = wake.min(*at);
        }
        wake.saturating_duration_since(now)
            .max(Duration::from_millis(1))
    }
}

struct Shared {
    state: Mutex<State>,
    connected: Condvar,
    socket: UdpSocket,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on the state, then send what it queued and wake connection waiters.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut g = self.lock();
        let r = f(&mut g);
        g.flush(&self.socket);
        if g.peer.connected() {
            self.connected.notify_all();
        }
        r
    }

    fn run(&self) {
        let mut buf = vec![0u8; 2048];
        loop {
            let wait = {
                let g = self.lock();
                if g.stop {
                    return;
                }
                if g.deaf {
                    drop(g);
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                g.wait()
            };
            let _ = self.socket.set_read_timeout(Some(wait));
            let got = self.socket.recv_from(&mut buf);
            self.with(|s| {
                let idle = got.is_err();
                match got {
                    Ok((n, source)) => s.on_datagram(&buf[..n], source),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    // e.g. ICMP port unreachable surfacing as ConnectionRefused; ignore.
                    Err(_) => {}
                }
                s.deliver_shaped();
                s.send_due_media();
                let now = Instant::now();
                // Also when the wait ran out, as a browser's timers do: an ICE agent that
                // has not started (a data-only answerer) reports no deadline of its own.
                if idle || now >= s.peer.next_timeout() {
                    let _ = s.peer.timeout(now);
                }
            });
        }
    }
}

pub struct TestPeer {
    shared: Arc<Shared>,
    local_candidate: String,
    local_addr: SocketAddr,
    handle: Option<JoinHandle<()>>,
}

impl TestPeer {
    /// Bind `127.0.0.1:0`, add it as host candidate and spawn the peer thread.
    pub fn new(cfg: PeerConfig) -> TestPeer {
        init_crypto();
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind test peer socket");
        let local_addr = socket.local_addr().expect("local addr");
        let candidate = Candidate::host(local_addr, "udp").expect("host candidate");
        let local_candidate = candidate.to_sdp_string();
        let now = Instant::now();
        let peer = ClientPeer::with_config(local_addr, ClientConfig::new(epoch()), now);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                peer,
                rng: XorShift::new(cfg.seed),
                cfg,
                sending: None,
                dropped_out: 0,
                dropped_in: 0,
                keyframe_request_times: Vec::new(),
                stop: false,
                shaper: None,
                shaper_dropped: 0,
                deaf: false,
                captured_rtcp: None,
            }),
            connected: Condvar::new(),
            socket,
        });
        let shared2 = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("test-peer-{}", local_addr.port()))
            .spawn(move || shared2.run())
            .expect("spawn test peer thread");
        TestPeer {
            shared,
            local_candidate,
            local_addr,
            handle: Some(handle),
        }
    }

    /// Local UDP address of this peer.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Publisher side: create an offer with an Opus sendonly m-line (if audio)
    /// and a VP8 sendonly m-line (if video). Returns the offer SDP text.
    pub fn publish_offer(
        &self,
        audio_track_id: Option<&str>,
        video_track_id: Option<&str>,
    ) -> String {
        let stream_id = format!("stream-{:016x}", rand::random::<u64>());
        let tracks: Vec<(MediaKind, &str)> = [
            audio_track_id.map(|a| (MediaKind::Audio, a)),
            video_track_id.map(|v| (MediaKind::Video, v)),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.shared
            .with(|s| s.peer.publish_offer(&stream_id, &tracks))
            .expect("publish_offer")
    }

    /// Viewer side (WHEP): an offer with a receive-only audio and video m-line.
    pub fn view_offer(&self) -> String {
        self.shared
            .with(|s| s.peer.view_offer(&[MediaKind::Audio, MediaKind::Video]))
            .expect("view_offer")
    }

    /// Publisher side: an offer for one simulcast VP8 track with `encodings` (rid and the
    /// picture size its keyframes announce), local tracks 0.. in that order.
    pub fn publish_simulcast_offer(
        &self,
        track_id: &str,
        encodings: &[(&str, (u16, u16))],
    ) -> String {
        let stream_id = format!("stream-{:016x}", rand::random::<u64>());
        self.shared
            .with(|s| {
                s.peer
                    .publish_simulcast_offer(&stream_id, track_id, encodings)
            })
            .expect("publish_simulcast_offer")
    }

    /// Publisher side: an offer adding data channel `label` (ordered or not;
    /// `max_retransmits` `None`: reliable).
    pub fn data_channel_offer(
        &self,
        label: &str,
        ordered: bool,
        max_retransmits: Option<u16>,
    ) -> String {
        self.shared
            .with(|s| s.peer.data_channel_offer(label, ordered, max_retransmits))
            .expect("data_channel_offer")
    }

    /// Publisher side: open another data channel `label` in-band (no renegotiation).
    pub fn open_data_channel(&self, label: &str, ordered: bool, max_retransmits: Option<u16>) {
        self.shared
            .with(|s| s.peer.open_data_channel(label, ordered, max_retransmits))
    }

    /// Send on open data channel `label`; false if not open or the buffer is full.
    pub fn send_data(&self, label: &str, binary: bool, data: &[u8]) -> bool {
        self.shared.with(|s| s.peer.send_data(label, binary, data))
    }

    /// Data channel `label` as the peer sees it (a snapshot).
    pub fn data_channel(&self, label: &str) -> Option<rheomesh::testing::DataChannelState> {
        self.shared
            .with(|s| s.peer.data_channels().get(label).cloned())
    }

    /// The peer's str0m error, if it failed.
    pub fn error(&self) -> Option<String> {
        self.shared.with(|s| s.peer.error().map(str::to_string))
    }

    /// Start (or stop) keeping a copy of every SRTCP datagram the peer sends.
    #[allow(dead_code)]
    pub fn capture_rtcp(&self, on: bool) {
        self.shared.with(|s| {
            if on {
                s.captured_rtcp.get_or_insert_with(Vec::new);
            } else {
                s.captured_rtcp = None;
            }
        });
    }

    /// Send every captured SRTCP datagram again, from the peer's socket to where it went (a
    /// replay); returns how many.
    #[allow(dead_code)]
    pub fn replay_captured_rtcp(&self) -> usize {
        let captured = self
            .shared
            .with(|s| s.captured_rtcp.clone().unwrap_or_default());
        for (dest, data) in &captured {
            let _ = self.shared.socket.send_to(data, *dest);
        }
        captured.len()
    }

    /// Stop (or resume) reading the socket, as a peer that stopped polling.
    pub fn set_deaf(&self, deaf: bool) {
        self.shared.with(|s| s.deaf = deaf);
    }

    /// Shape what the peer receives once connected: a bottleneck of `bps` bits per second
    /// with a 50 ms drop-tail queue; `None` removes it (what waits in it is delivered).
    /// Returns the datagrams the bottleneck dropped so far.
    pub fn set_downlink(&self, bps: Option<u64>) -> u64 {
        self.shared.with(|s| {
            match (bps, s.shaper.as_mut()) {
                (Some(bps), Some(shaper)) => shaper.bps = bps,
                (Some(bps), None) => {
                    s.shaper = Some(Shaper {
                        bps,
                        queue: VecDeque::new(),
                        free_at: Instant::now(),
                        dropped: 0,
                    })
                }
                (None, _) => {
                    if let Some(shaper) = s.shaper.take() {
                        s.shaper_dropped += shaper.dropped;
                        for (_, data, source) in shaper.queue {
                            s.deliver(&data, source);
                        }
                    }
                }
            }
            s.shaper_dropped + s.shaper.as_ref().map_or(0, |x| x.dropped)
        })
    }

    /// Datagrams the shaped downlink dropped so far.
    #[allow(dead_code)]
    pub fn downlink_dropped(&self) -> u64 {
        self.shared
            .with(|s| s.shaper_dropped + s.shaper.as_ref().map_or(0, |x| x.dropped))
    }

    /// Set the payload size of local track `i`'s packets.
    pub fn set_payload_len(&self, i: usize, len: usize) {
        self.shared.with(|s| s.peer.set_payload_len(i, len));
    }

    /// What local track `i` (a simulcast encoding, in offer order) has sent.
    pub fn sent(&self, i: usize) -> SendStats {
        self.shared.lock().peer.sent(i)
    }

    /// Stop or resume sending on local track `i` only (a publisher pausing an encoding).
    pub fn set_track_paused(&self, i: usize, paused: bool) {
        self.shared.with(|s| {
            if let Some(sending) = &mut s.sending {
                if sending.paused.len() <= i {
                    sending.paused.resize(i + 1, false);
                }
                sending.paused[i] = paused;
            }
        });
    }

    pub fn accept_answer(&self, sdp: &str) -> Result<(), String> {
        self.shared.with(|s| s.peer.accept_answer(sdp))
    }

    /// Subscriber side: accept an offer, return the SDP answer text.
    pub fn accept_offer(&self, sdp: &str) -> Result<String, String> {
        self.shared.with(|s| s.peer.accept_offer(sdp))
    }

    /// The `candidate:...` attribute value of our host candidate.
    pub fn local_candidate(&self) -> String {
        self.local_candidate.clone()
    }

    /// Add a trickled remote candidate (`candidate:...`, optional `a=` prefix).
    pub fn add_remote_candidate(&self, candidate: &str) -> Result<(), String> {
        self.shared.with(|s| s.peer.add_remote_candidate(candidate))
    }

    /// True once `Event::Connected` has been seen (waits up to `timeout`).
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.lock();
        loop {
            if g.peer.connected() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .shared
                .connected
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Start sending synthetic RTP on every locally published sendonly m-line.
    pub fn start_sending(&self, video_pps: u32, audio_pps: u32, keyframe_interval: Duration) {
        let iv = |pps: u32| (pps > 0).then(|| Duration::from_secs_f64(1.0 / pps as f64));
        self.shared.with(|s| {
            let now = Instant::now();
            s.peer.restart_media(now);
            s.sending = Some(Sending {
                video_interval: iv(video_pps),
                audio_interval: iv(audio_pps),
                keyframe_interval,
                next_due: vec![now; s.peer.local_tracks()],
                paused: vec![false; s.peer.local_tracks()],
            });
        });
    }

    pub fn stop_sending(&self) {
        // Synchronous: no packet is written after this returns.
        self.shared.with(|s| s.sending = None);
    }

    pub fn stats(&self) -> PeerStats {
        let g = self.shared.lock();
        let sent = |kind| {
            (0..g.peer.local_tracks())
                .filter(|i| g.peer.local_kind(*i) == Some(kind))
                .map(|i| g.peer.sent(i).packets)
                .sum()
        };
        PeerStats {
            sent_video: sent(MediaKind::Video),
            sent_audio: sent(MediaKind::Audio),
            keyframe_requests: g.peer.keyframe_requests(),
            keyframe_request_times: g.keyframe_request_times.clone(),
            connected: g.peer.connected(),
            dropped_out: g.dropped_out,
            dropped_in: g.dropped_in,
        }
    }

    /// Received packets for a remote msid track id.
    pub fn received(&self, track_id: &str) -> ReceivedTrack {
        let g = self.shared.lock();
        g.peer.received(track_id).cloned().unwrap_or_default()
    }

    /// Track ids of the remote m-lines currently sending towards us.
    pub fn remote_track_ids(&self) -> Vec<String> {
        self.shared.lock().peer.remote_track_ids()
    }

    /// Send a PLI on the receive stream of the given remote track. Returns
    /// false if the track or its receive stream is unknown.
    pub fn request_keyframe(&self, track_id: &str) -> bool {
        if track_id.is_empty() {
            return false;
        }
        self.shared
            .with(|s| s.peer.request_keyframe(track_id, Instant::now()))
    }
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
