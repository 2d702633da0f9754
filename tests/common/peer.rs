//! A real str0m client peer for integration tests.
//!
//! Each [`TestPeer`] owns a UDP socket bound to `127.0.0.1:0` and a full-ICE
//! (not lite) str0m [`Rtc`] in RTP mode, driven by its own std thread. The
//! public API is blocking and callable from any thread: every method either
//! sends a command to the peer thread and waits for the reply, or reads a
//! snapshot of shared state.
//!
//! Synthetic media:
//! * video (VP8): `[0x10 VP8 descriptor (S=1, PID=0)] [VP8 payload header, P bit 0 = keyframe]
//!   [u64 BE counter] [u64 BE send time µs] [filler ...]`, 1000 bytes total, marker on every packet.
//! * audio (Opus): `[u64 BE counter] [u64 BE send time µs] [filler ...]`, 100 bytes total.
//!
//! Filler byte `i` (index within the filler) is `(counter as u8).wrapping_add(i as u8)`.
//! The counter is the sender's per-track packet counter, so it survives SFU
//! sequence-number rewriting.

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{detect_vp8_keyframe, Codec};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Total size of a synthetic video payload.
pub const VIDEO_PAYLOAD_LEN: usize = 1000;
/// Total size of a synthetic audio payload.
pub const AUDIO_PAYLOAD_LEN: usize = 100;

/// Longest the peer thread blocks on the socket before looking at commands again.
const MAX_WAIT: Duration = Duration::from_millis(5);

static CRYPTO_INIT: Once = Once::new();
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn init_crypto() {
    CRYPTO_INIT.call_once(|| {
        // install_process_default() ignores a second install (OnceLock::set),
        // so this is safe even if the server engine installs one too.
        str0m::crypto::from_feature_flags().install_process_default();
    });
}

/// Microseconds since a process-wide epoch (shared by all peers and threads).
pub fn now_us() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    Instant::now().saturating_duration_since(epoch).as_micros() as u64
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

#[derive(Debug, Clone, Default)]
pub struct ReceivedTrack {
    /// Every RTP packet delivered by str0m for this track (retransmits/duplicates included).
    pub packets: u64,
    /// Number of distinct sender counters seen.
    pub distinct_counters: u64,
    /// Packets whose payload matched the expected synthetic layout.
    pub intact: u64,
    /// Packets whose payload did not.
    pub corrupt: u64,
    /// True while every packet carried a counter strictly greater than the previous one.
    pub in_order: bool,
    pub max_counter: Option<u64>,
    pub min_counter: Option<u64>,
    /// VP8 keyframe packets (counted once per distinct counter).
    pub keyframes: u64,
    /// Distinct SSRCs seen for this track, in order of appearance.
    pub ssrcs: Vec<u32>,
    /// Sum over intact packets of (receive time - send time) in µs.
    pub latency_us_sum: u64,
    /// RTCP sender reports received for this track.
    pub sender_reports: u64,
    /// The last sender report: (NTP wallclock, RTP time in the codec clock).
    pub last_sr: Option<(std::time::SystemTime, u64)>,
    /// RTP timestamp of the newest packet received.
    pub last_rtp_ts: Option<u32>,
}

impl ReceivedTrack {
    /// Mean one-way latency over intact packets, in µs.
    pub fn mean_latency_us(&self) -> Option<u64> {
        (self.intact > 0).then(|| self.latency_us_sum / self.intact)
    }
}

type Reply<T> = Sender<T>;

enum Cmd {
    PublishOffer {
        audio: Option<String>,
        video: Option<String>,
        reply: Reply<Result<String, String>>,
    },
    AcceptAnswer(String, Reply<Result<(), String>>),
    AcceptOffer(String, Reply<Result<String, String>>),
    AddRemoteCandidate(String, Reply<Result<(), String>>),
    StartSending {
        video_pps: u32,
        audio_pps: u32,
        keyframe_interval: Duration,
    },
    StopSending(Reply<()>),
    RequestKeyframe(String, Reply<bool>),
    Stop,
}

/// One m-line of a remote SDP, as parsed from the SDP text.
#[derive(Debug, Clone)]
struct RemoteLine {
    mid: String,
    kind: String,
    track_id: Option<String>,
    /// Remote direction includes sending (sendonly/sendrecv) and port != 0.
    remote_sends: bool,
}

#[derive(Default)]
struct TrackRx {
    rt: ReceivedTrack,
    seen: HashSet<u64>,
    last_counter: Option<u64>,
}

#[derive(Default)]
struct Shared {
    stats: PeerStats,
    tracks: HashMap<String, TrackRx>,
    /// mid -> last known remote m-line.
    remote: HashMap<String, RemoteLine>,
    /// Order in which mids first appeared in remote SDPs.
    remote_order: Vec<String>,
}

type SharedState = Arc<(Mutex<Shared>, Condvar)>;

fn lock(shared: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct TestPeer {
    tx: Sender<Cmd>,
    shared: SharedState,
    local_candidate: String,
    local_addr: SocketAddr,
    handle: Option<JoinHandle<()>>,
}

impl TestPeer {
    /// Bind `127.0.0.1:0`, add it as host candidate and spawn the peer thread.
    pub fn new(cfg: PeerConfig) -> TestPeer {
        init_crypto();
        let _ = now_us(); // pin the epoch
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind test peer socket");
        let local_addr = socket.local_addr().expect("local addr");
        let candidate = Candidate::host(local_addr, "udp").expect("host candidate");
        let local_candidate = candidate.to_sdp_string();

        let shared: SharedState = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let (tx, rx) = mpsc::channel();
        let shared2 = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("test-peer-{}", local_addr.port()))
            .spawn(move || {
                let mut w = Worker::new(socket, local_addr, candidate, cfg, shared2, rx);
                w.run();
            })
            .expect("spawn test peer thread");

        TestPeer {
            tx,
            shared,
            local_candidate,
            local_addr,
            handle: Some(handle),
        }
    }

    fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Option<T> {
        let (rtx, rrx) = mpsc::channel();
        self.tx.send(make(rtx)).ok()?;
        rrx.recv().ok()
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
        let audio = audio_track_id.map(str::to_string);
        let video = video_track_id.map(str::to_string);
        self.call(|reply| Cmd::PublishOffer {
            audio,
            video,
            reply,
        })
        .unwrap_or_else(|| Err("peer thread gone".into()))
        .expect("publish_offer")
    }

    pub fn accept_answer(&self, sdp: &str) -> Result<(), String> {
        self.call(|r| Cmd::AcceptAnswer(sdp.to_string(), r))
            .unwrap_or_else(|| Err("peer thread gone".into()))
    }

    /// Subscriber side: accept an offer, return the SDP answer text.
    pub fn accept_offer(&self, sdp: &str) -> Result<String, String> {
        self.call(|r| Cmd::AcceptOffer(sdp.to_string(), r))
            .unwrap_or_else(|| Err("peer thread gone".into()))
    }

    /// The `candidate:...` attribute value of our host candidate.
    pub fn local_candidate(&self) -> String {
        self.local_candidate.clone()
    }

    /// Add a trickled remote candidate (`candidate:...`, optional `a=` prefix).
    pub fn add_remote_candidate(&self, candidate: &str) -> Result<(), String> {
        self.call(|r| Cmd::AddRemoteCandidate(candidate.to_string(), r))
            .unwrap_or_else(|| Err("peer thread gone".into()))
    }

    /// True once `Event::Connected` has been seen (waits up to `timeout`).
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.shared;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if g.stats.connected {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Start sending synthetic RTP on every locally published sendonly m-line.
    pub fn start_sending(&self, video_pps: u32, audio_pps: u32, keyframe_interval: Duration) {
        let _ = self.tx.send(Cmd::StartSending {
            video_pps,
            audio_pps,
            keyframe_interval,
        });
    }

    pub fn stop_sending(&self) {
        // Synchronous: no packet is written after this returns.
        let _ = self.call(Cmd::StopSending);
    }

    pub fn stats(&self) -> PeerStats {
        lock(&self.shared).stats.clone()
    }

    /// Received packets for a remote msid track id.
    pub fn received(&self, track_id: &str) -> ReceivedTrack {
        lock(&self.shared)
            .tracks
            .get(track_id)
            .map(|t| t.rt.clone())
            .unwrap_or(ReceivedTrack {
                in_order: true,
                ..Default::default()
            })
    }

    /// Track ids of the remote m-lines currently sending towards us.
    pub fn remote_track_ids(&self) -> Vec<String> {
        let g = lock(&self.shared);
        g.remote_order
            .iter()
            .filter_map(|mid| g.remote.get(mid))
            .filter(|l| l.remote_sends)
            .filter_map(|l| l.track_id.clone())
            .collect()
    }

    /// Send a PLI on the receive stream of the given remote track. Returns
    /// false if the track or its receive stream is unknown.
    pub fn request_keyframe(&self, track_id: &str) -> bool {
        if track_id.is_empty() {
            return false;
        }
        self.call(|r| Cmd::RequestKeyframe(track_id.to_string(), r))
            .unwrap_or(false)
    }
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Worker thread
// ---------------------------------------------------------------------------

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

struct SendTrack {
    mid: Mid,
    kind: MediaKind,
    pt: Option<Pt>,
    counter: u64,
    seq: u64,
    ts_offset: u32,
    next_due: Instant,
    last_keyframe: Option<Instant>,
    force_keyframe: bool,
}

struct Sending {
    video_interval: Option<Duration>,
    audio_interval: Option<Duration>,
    keyframe_interval: Duration,
    start: Instant,
}

struct Worker {
    socket: UdpSocket,
    local_addr: SocketAddr,
    rtc: Rtc,
    cfg: PeerConfig,
    rng: XorShift,
    shared: SharedState,
    rx: Receiver<Cmd>,
    pending: Option<SdpPendingOffer>,
    /// Locally published tracks (mid, kind) awaiting/after answer.
    pending_tracks: Vec<(Mid, MediaKind)>,
    send_tracks: Vec<SendTrack>,
    sending: Option<Sending>,
    connected: bool,
    next_timeout: Instant,
    ssrc_mid: HashMap<u32, String>,
    stop: bool,
}

fn is_srtp(b: &[u8]) -> bool {
    matches!(b.first(), Some(128..=191))
}

impl Worker {
    fn new(
        socket: UdpSocket,
        local_addr: SocketAddr,
        candidate: Candidate,
        cfg: PeerConfig,
        shared: SharedState,
        rx: Receiver<Cmd>,
    ) -> Self {
        let now = Instant::now();
        let rtc = Rtc::builder().set_rtp_mode(true).build(now);
        let rng = XorShift::new(cfg.seed);
        let mut w = Worker {
            socket,
            local_addr,
            rtc,
            cfg,
            rng,
            shared,
            rx,
            pending: None,
            pending_tracks: Vec::new(),
            send_tracks: Vec::new(),
            sending: None,
            connected: false,
            next_timeout: now,
            ssrc_mid: HashMap::new(),
            stop: false,
        };
        w.rtc.add_local_candidate(candidate);
        w.drain();
        w
    }

    fn run(&mut self) {
        let mut buf = vec![0u8; 2048];
        while !self.stop {
            // 1. Commands.
            loop {
                match self.rx.try_recv() {
                    Ok(cmd) => self.handle_cmd(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.stop = true;
                        break;
                    }
                }
                if self.stop {
                    break;
                }
            }
            if self.stop {
                break;
            }

            // 2. Media due.
            self.send_due_media();

            // 3. Wait for network input / timeout.
            let now = Instant::now();
            let mut wake = self.next_timeout.min(now + MAX_WAIT);
            if self.sending.is_some() && self.connected {
                if let Some(due) = self.send_tracks.iter().map(|t| t.next_due).min() {
                    wake = wake.min(due);
                }
            }
            let wait = wake
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            let _ = self.socket.set_read_timeout(Some(wait));
            match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => self.handle_datagram(&buf[..n], source),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    // e.g. ICMP port unreachable surfacing as ConnectionRefused; ignore.
                }
            }

            // 4. Drive time.
            let now = Instant::now();
            if now >= self.next_timeout {
                self.timeout(now);
            }
        }
    }

    fn timeout(&mut self, now: Instant) {
        let _ = self.rtc.handle_input(Input::Timeout(now));
        self.drain();
    }

    fn handle_datagram(&mut self, data: &[u8], source: SocketAddr) {
        if self.connected
            && self.cfg.loss_in > 0.0
            && is_srtp(data)
            && self.rng.next_f64() < self.cfg.loss_in
        {
            lock(&self.shared).stats.dropped_in += 1;
            return;
        }
        let Ok(recv) = Receive::new(Protocol::Udp, source, self.local_addr, data) else {
            return;
        };
        let input = Input::Receive(Instant::now(), recv);
        if !self.rtc.accepts(&input) {
            return;
        }
        let _ = self.rtc.handle_input(input);
        self.drain();
    }

    /// Drain poll_output until Timeout. Must follow every mutation.
    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    if self.connected
                        && self.cfg.loss_out > 0.0
                        && is_srtp(&t.contents)
                        && self.rng.next_f64() < self.cfg.loss_out
                    {
                        lock(&self.shared).stats.dropped_out += 1;
                        continue;
                    }
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.handle_event(e),
                Err(_) => {
                    self.next_timeout = Instant::now() + MAX_WAIT;
                    return;
                }
            }
        }
    }

    fn handle_event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                self.connected = true;
                let (m, cv) = &*self.shared;
                m.lock().unwrap_or_else(|e| e.into_inner()).stats.connected = true;
                cv.notify_all();
            }
            Event::RtpPacket(p) => self.on_rtp(p),
            Event::SenderFeedback(fb) => {
                let mid = fb.mid.to_string();
                let mut g = lock(&self.shared);
                let key = g
                    .remote
                    .get(&mid)
                    .and_then(|l| l.track_id.clone())
                    .unwrap_or_else(|| format!("mid:{mid}"));
                let tr = g.tracks.entry(key).or_insert_with(|| TrackRx {
                    rt: ReceivedTrack {
                        in_order: true,
                        ..Default::default()
                    },
                    ..Default::default()
                });
                tr.rt.sender_reports += 1;
                tr.rt.last_sr = Some((fb.sender_info.ntp_time, fb.sender_info.rtp_time.numer()));
            }
            Event::KeyframeRequest(kr) => {
                {
                    let mut g = lock(&self.shared);
                    g.stats.keyframe_requests += 1;
                    g.stats.keyframe_request_times.push(Instant::now());
                }
                for t in &mut self.send_tracks {
                    if t.mid == kr.mid {
                        t.force_keyframe = true;
                    }
                }
            }
            _ => {}
        }
    }

    fn mid_for_ssrc(&mut self, p: &RtpPacket) -> Option<String> {
        let ssrc = *p.header.ssrc;
        if let Some(m) = self.ssrc_mid.get(&ssrc) {
            return Some(m.clone());
        }
        let mid = p.header.ext_vals.mid.or_else(|| {
            self.rtc
                .direct_api()
                .stream_rx(&p.header.ssrc)
                .map(|s| s.mid())
        })?;
        let mid = mid.to_string();
        self.ssrc_mid.insert(ssrc, mid.clone());
        Some(mid)
    }

    fn on_rtp(&mut self, p: RtpPacket) {
        let now = now_us();
        let mid = self.mid_for_ssrc(&p);
        let mut g = lock(&self.shared);
        let (key, kind) = match mid.as_ref().and_then(|m| g.remote.get(m)) {
            Some(l) => (
                l.track_id
                    .clone()
                    .unwrap_or_else(|| format!("mid:{}", l.mid)),
                l.kind.clone(),
            ),
            None => (
                format!("mid:{}", mid.as_deref().unwrap_or("?")),
                if p.payload.len() >= VIDEO_PAYLOAD_LEN / 2 {
                    "video".to_string()
                } else {
                    "audio".to_string()
                },
            ),
        };
        let video = kind == "video";
        let tr = g.tracks.entry(key).or_insert_with(|| TrackRx {
            rt: ReceivedTrack {
                in_order: true,
                ..Default::default()
            },
            ..Default::default()
        });
        let ssrc = *p.header.ssrc;
        tr.rt.packets += 1;
        tr.rt.last_rtp_ts = Some(p.header.timestamp);
        if !tr.rt.ssrcs.contains(&ssrc) {
            tr.rt.ssrcs.push(ssrc);
        }
        match parse_payload(&p.payload, video) {
            Some((counter, sent_us, keyframe)) => {
                tr.rt.intact += 1;
                tr.rt.latency_us_sum += now.saturating_sub(sent_us);
                if let Some(last) = tr.last_counter {
                    if counter <= last {
                        tr.rt.in_order = false;
                    }
                }
                tr.last_counter = Some(counter);
                tr.rt.max_counter = Some(tr.rt.max_counter.map_or(counter, |m| m.max(counter)));
                tr.rt.min_counter = Some(tr.rt.min_counter.map_or(counter, |m| m.min(counter)));
                if tr.seen.insert(counter) {
                    tr.rt.distinct_counters += 1;
                    if keyframe {
                        tr.rt.keyframes += 1;
                    }
                }
            }
            None => tr.rt.corrupt += 1,
        }
    }

    fn handle_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::PublishOffer {
                audio,
                video,
                reply,
            } => {
                let r = self.publish_offer(audio, video);
                let _ = reply.send(r);
            }
            Cmd::AcceptAnswer(sdp, reply) => {
                let r = self.accept_answer(&sdp);
                let _ = reply.send(r);
            }
            Cmd::AcceptOffer(sdp, reply) => {
                let r = self.accept_offer(&sdp);
                let _ = reply.send(r);
            }
            Cmd::AddRemoteCandidate(c, reply) => {
                let s = c.trim();
                let s = s.strip_prefix("a=").unwrap_or(s);
                let r = match Candidate::from_sdp_string(s) {
                    Ok(c) => {
                        self.rtc.add_remote_candidate(c);
                        self.drain();
                        Ok(())
                    }
                    Err(e) => Err(format!("bad candidate {s:?}: {e}")),
                };
                let _ = reply.send(r);
            }
            Cmd::StartSending {
                video_pps,
                audio_pps,
                keyframe_interval,
            } => {
                let iv = |pps: u32| (pps > 0).then(|| Duration::from_secs_f64(1.0 / pps as f64));
                let now = Instant::now();
                for t in &mut self.send_tracks {
                    t.next_due = now;
                    t.last_keyframe = None;
                }
                self.sending = Some(Sending {
                    video_interval: iv(video_pps),
                    audio_interval: iv(audio_pps),
                    keyframe_interval,
                    start: now,
                });
            }
            Cmd::StopSending(reply) => {
                self.sending = None;
                let _ = reply.send(());
            }
            Cmd::RequestKeyframe(track, reply) => {
                let r = !track.is_empty() && self.request_keyframe(&track);
                let _ = reply.send(r);
            }
            Cmd::Stop => self.stop = true,
        }
    }

    fn publish_offer(
        &mut self,
        audio: Option<String>,
        video: Option<String>,
    ) -> Result<String, String> {
        let stream_id = format!("stream-{:016x}", rand_u64());
        let mut api = self.rtc.sdp_api();
        let mut tracks = Vec::new();
        if let Some(a) = audio {
            let mid = api.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                Some(stream_id.clone()),
                Some(a),
                None,
            );
            tracks.push((mid, MediaKind::Audio));
        }
        if let Some(v) = video {
            let mid = api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some(stream_id.clone()),
                Some(v),
                None,
            );
            tracks.push((mid, MediaKind::Video));
        }
        let applied = api.apply();
        self.drain();
        let (offer, pending) = applied.ok_or_else(|| "no changes to offer".to_string())?;
        self.pending = Some(pending);
        self.pending_tracks = tracks;
        Ok(offer.to_sdp_string())
    }

    fn accept_answer(&mut self, sdp: &str) -> Result<(), String> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("bad answer sdp: {e}"))?;
        let pending = self
            .pending
            .take()
            .ok_or_else(|| "no pending offer".to_string())?;
        let r = self.rtc.sdp_api().accept_answer(pending, answer);
        self.drain();
        r.map_err(|e| format!("accept_answer: {e}"))?;
        self.record_remote(sdp);
        let now = Instant::now();
        for (mid, kind) in std::mem::take(&mut self.pending_tracks) {
            if self.send_tracks.iter().any(|t| t.mid == mid) {
                continue;
            }
            self.send_tracks.push(SendTrack {
                mid,
                kind,
                pt: None,
                counter: 0,
                seq: 1000 + (rand_u64() % 20_000),
                ts_offset: rand_u64() as u32,
                next_due: now,
                last_keyframe: None,
                force_keyframe: false,
            });
        }
        Ok(())
    }

    fn accept_offer(&mut self, sdp: &str) -> Result<String, String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("bad offer sdp: {e}"))?;
        let r = self.rtc.sdp_api().accept_offer(offer);
        self.drain();
        // accept_offer invalidates any outstanding pending offer.
        self.pending = None;
        let answer = r.map_err(|e| format!("accept_offer: {e}"))?;
        self.record_remote(sdp);
        Ok(answer.to_sdp_string())
    }

    fn record_remote(&mut self, sdp: &str) {
        let lines = parse_sdp_mlines(sdp);
        let mut g = lock(&self.shared);
        for l in lines {
            if !g.remote.contains_key(&l.mid) {
                g.remote_order.push(l.mid.clone());
            }
            g.remote.insert(l.mid.clone(), l);
        }
    }

    fn request_keyframe(&mut self, track: &str) -> bool {
        let mids: Vec<String> = {
            let g = lock(&self.shared);
            g.remote
                .values()
                .filter(|l| l.track_id.as_deref() == Some(track))
                .map(|l| l.mid.clone())
                .collect()
        };
        let mut ok = false;
        for mid in mids {
            let mid = Mid::from(mid.as_str());
            let mut api = self.rtc.direct_api();
            if let Some(s) = api.stream_rx_by_mid(mid, None) {
                s.request_keyframe(KeyframeRequestKind::Pli);
                ok = true;
            }
            self.drain();
        }
        if ok {
            // Let the PLI go out now.
            self.timeout(Instant::now());
        }
        ok
    }

    fn pt_for(&self, mid: Mid, kind: MediaKind) -> Option<Pt> {
        let media = self.rtc.media(mid)?;
        let want = match kind {
            MediaKind::Audio => Codec::Opus,
            MediaKind::Video => Codec::Vp8,
        };
        let params = self.rtc.codec_config().params();
        media.remote_pts().iter().copied().find(|pt| {
            params
                .iter()
                .any(|p| p.pt() == *pt && p.spec().codec == want)
        })
    }

    fn send_due_media(&mut self) {
        let Some(sending) = &self.sending else {
            return;
        };
        if !self.connected {
            return;
        }
        let now = Instant::now();
        let video_iv = sending.video_interval;
        let audio_iv = sending.audio_interval;
        let kf_iv = sending.keyframe_interval;
        let start = sending.start;
        let mut wrote = false;
        for i in 0..self.send_tracks.len() {
            let (mid, kind) = (self.send_tracks[i].mid, self.send_tracks[i].kind);
            let Some(iv) = (match kind {
                MediaKind::Audio => audio_iv,
                MediaKind::Video => video_iv,
            }) else {
                continue;
            };
            if self.send_tracks[i].pt.is_none() {
                self.send_tracks[i].pt = self.pt_for(mid, kind);
            }
            let Some(pt) = self.send_tracks[i].pt else {
                continue;
            };
            // Catch up at most a few packets per iteration; resync if far behind.
            if now.saturating_duration_since(self.send_tracks[i].next_due)
                > Duration::from_millis(200)
            {
                self.send_tracks[i].next_due = now;
            }
            let mut burst = 0;
            while self.send_tracks[i].next_due <= now && burst < 4 {
                burst += 1;
                let t = &mut self.send_tracks[i];
                t.next_due += iv;
                let counter = t.counter;
                let (payload, clock, keyframe) = match kind {
                    MediaKind::Video => {
                        let kf = t.force_keyframe
                            || t.last_keyframe
                                .is_none_or(|k| now.saturating_duration_since(k) >= kf_iv);
                        if kf {
                            t.force_keyframe = false;
                            t.last_keyframe = Some(now);
                        }
                        (build_video_payload(counter, kf), 90_000u64, kf)
                    }
                    MediaKind::Audio => (build_audio_payload(counter), 48_000u64, false),
                };
                let _ = keyframe;
                let elapsed = now.saturating_duration_since(start);
                let ts = t
                    .ts_offset
                    .wrapping_add((elapsed.as_micros() as u64 * clock / 1_000_000) as u32);
                let seq = t.seq;
                let mut api = self.rtc.direct_api();
                let Some(stream) = api.stream_tx_by_mid(mid, None) else {
                    break;
                };
                stream.write_rtp(
                    RtpWrite::new(pt, seq.into(), ts, Instant::now(), payload)
                        .marker(kind == MediaKind::Video)
                        .nackable(true),
                );
                self.drain();
                let t = &mut self.send_tracks[i];
                t.counter += 1;
                t.seq += 1;
                wrote = true;
                let mut g = lock(&self.shared);
                match kind {
                    MediaKind::Video => g.stats.sent_video += 1,
                    MediaKind::Audio => g.stats.sent_audio += 1,
                }
            }
        }
        if wrote {
            self.timeout(Instant::now());
        }
    }
}

fn rand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u64(now_us());
    h.finish()
}

fn filler_byte(counter: u64, i: usize) -> u8 {
    (counter as u8).wrapping_add(i as u8)
}

fn push_body(v: &mut Vec<u8>, counter: u64, total: usize) {
    v.extend_from_slice(&counter.to_be_bytes());
    v.extend_from_slice(&now_us().to_be_bytes());
    let n = total.saturating_sub(v.len());
    v.extend((0..n).map(|i| filler_byte(counter, i)));
}

/// Synthetic VP8 payload: descriptor, payload header, counter, send time, filler.
pub fn build_video_payload(counter: u64, keyframe: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(VIDEO_PAYLOAD_LEN);
    v.push(0x10); // X=0, N=0, S=1, PID=0
                  // VP8 payload header first byte: size0(3) | show_frame(1) | version(3) | P(1).
    v.push(if keyframe { 0x10 } else { 0x11 });
    push_body(&mut v, counter, VIDEO_PAYLOAD_LEN);
    v
}

/// Synthetic Opus payload: counter, send time, filler.
pub fn build_audio_payload(counter: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(AUDIO_PAYLOAD_LEN);
    push_body(&mut v, counter, AUDIO_PAYLOAD_LEN);
    v
}

/// Parse a synthetic payload. Returns (counter, send time µs, keyframe) if intact.
/// Video descriptors with extensions (picture id etc., possibly added by an SFU) are skipped.
pub fn parse_payload(p: &[u8], video: bool) -> Option<(u64, u64, bool)> {
    let mut idx = 0;
    let mut keyframe = false;
    if video {
        let b0 = *p.first()?;
        if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
            return None;
        }
        idx = 1;
        if b0 & 0x80 != 0 {
            let ext = *p.get(idx)?;
            idx += 1;
            if ext & 0x80 != 0 {
                idx += if *p.get(idx)? & 0x80 != 0 { 2 } else { 1 };
            }
            if ext & 0x40 != 0 {
                idx += 1;
            }
            if ext & 0x30 != 0 {
                idx += 1;
            }
        }
        let hdr = *p.get(idx)?;
        keyframe = hdr & 0x01 == 0;
        if keyframe != detect_vp8_keyframe(p) {
            return None;
        }
        idx += 1;
    }
    let body = p.get(idx..)?;
    if body.len() < 16 {
        return None;
    }
    let counter = u64::from_be_bytes(body[0..8].try_into().ok()?);
    let sent = u64::from_be_bytes(body[8..16].try_into().ok()?);
    let filler = &body[16..];
    let expected_total = if video {
        VIDEO_PAYLOAD_LEN
    } else {
        AUDIO_PAYLOAD_LEN
    };
    // Allow descriptor growth by an SFU, but the body must be exactly what we sent.
    let expected_filler = expected_total - 16 - if video { 2 } else { 0 };
    if filler.len() != expected_filler {
        return None;
    }
    if filler
        .iter()
        .enumerate()
        .any(|(i, b)| *b != filler_byte(counter, i))
    {
        return None;
    }
    Some((counter, sent, keyframe))
}

/// Parse the m-sections of an SDP: mid, kind, msid track id and whether the
/// remote side sends on it.
fn parse_sdp_mlines(sdp: &str) -> Vec<RemoteLine> {
    struct Cur {
        kind: String,
        port0: bool,
        mid: Option<String>,
        msid_track: Option<String>,
        ssrc_track: Option<String>,
        dir: Option<&'static str>,
    }
    let mut out = Vec::new();
    let mut cur: Option<Cur> = None;
    let finish = |c: Cur, out: &mut Vec<RemoteLine>| {
        if let Some(mid) = c.mid {
            let dir = c.dir.unwrap_or("sendrecv");
            out.push(RemoteLine {
                mid,
                kind: c.kind,
                track_id: c.msid_track.or(c.ssrc_track),
                remote_sends: !c.port0 && (dir == "sendrecv" || dir == "sendonly"),
            });
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r').trim();
        if let Some(m) = line.strip_prefix("m=") {
            if let Some(c) = cur.take() {
                finish(c, &mut out);
            }
            let mut it = m.split_whitespace();
            let kind = it.next().unwrap_or("").to_string();
            let port0 = it.next() == Some("0");
            cur = Some(Cur {
                kind,
                port0,
                mid: None,
                msid_track: None,
                ssrc_track: None,
                dir: None,
            });
            continue;
        }
        let Some(c) = cur.as_mut() else { continue };
        if let Some(v) = line.strip_prefix("a=mid:") {
            c.mid = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("a=msid:") {
            let mut it = v.split_whitespace();
            let _stream = it.next();
            if let Some(t) = it.next() {
                c.msid_track = Some(t.to_string());
            }
        } else if let Some(v) = line.strip_prefix("a=ssrc:") {
            // a=ssrc:<ssrc> msid:<stream> <track>
            if let Some(rest) = v.split_once(' ').map(|x| x.1) {
                if let Some(ms) = rest.strip_prefix("msid:") {
                    if let Some(t) = ms.split_whitespace().nth(1) {
                        c.ssrc_track.get_or_insert_with(|| t.to_string());
                    }
                }
            }
        } else {
            match line {
                "a=sendrecv" => c.dir = Some("sendrecv"),
                "a=sendonly" => c.dir = Some("sendonly"),
                "a=recvonly" => c.dir = Some("recvonly"),
                "a=inactive" => c.dir = Some("inactive"),
                _ => {}
            }
        }
    }
    if let Some(c) = cur.take() {
        finish(c, &mut out);
    }
    out
}
