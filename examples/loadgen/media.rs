//! The media side: every str0m peer (one UDP socket and one sans-IO
//! [`ClientPeer`](rheomesh::testing::ClientPeer) each) lives on one of a few media threads
//! (`media_thread.rs`), so hundreds of peers cost no threads. This file owns creating peers
//! and the handles the rest of loadgen holds: the [`Engine`] over all media threads, and a
//! [`PeerRef`] per peer for its signaling task (commands go over a channel plus a mio
//! `Waker`, replies come back on tokio oneshots, connection events on a tokio channel).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Waker};
use rheomesh::testing::{ClientConfig, ClientPeer, MediaKind};
use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::media_thread::{Worker, WAKER};
use crate::net::bind_socket;
use crate::stats::{gettid, instant_of_us, Histogram};

/// Connection events of one peer, for its signaling task.
#[derive(Debug)]
pub enum PeerEvent {
    Connected,
    Disconnected,
    /// A subscriber's first RTP packet arrived (its signaling task logs the join with
    /// `LOADGEN_DEBUG`).
    FirstMedia(JoinTimes),
    Error(String),
}

/// A subscriber's join, in [`now_us`](crate::stats::now_us) time: how long after its answer
/// the first media came, and where the time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct JoinTimes {
    /// The signaling task sent our first answer to the server.
    pub answer_sent_us: Option<u64>,
    /// str0m reported ICE and DTLS connected.
    pub connected_us: Option<u64>,
    /// The first RTP packet of a subscribed track arrived (the kernel receive time of its
    /// datagram when known).
    pub first_media_us: Option<u64>,
    /// The publisher's send time stamped into that packet (`None` if it was not intact).
    pub first_media_sent_us: Option<u64>,
}

impl JoinTimes {
    /// First answer sent → first RTP packet received, µs.
    pub fn first_media_after_answer_us(&self) -> Option<u64> {
        Some(self.first_media_us?.saturating_sub(self.answer_sent_us?))
    }

    /// First answer sent → ICE/DTLS connected, µs.
    pub fn connected_after_answer_us(&self) -> Option<u64> {
        Some(self.connected_us?.saturating_sub(self.answer_sent_us?))
    }

    /// ICE/DTLS connected → first RTP packet received, µs.
    pub fn first_media_after_connected_us(&self) -> Option<u64> {
        Some(self.first_media_us?.saturating_sub(self.connected_us?))
    }
}

/// What a new peer does.
pub enum Role {
    /// Publishes one VP8 track (local track 0) as publisher `index`.
    Publisher { index: u32 },
    /// Receives the track of publisher `publisher`.
    Subscriber { publisher: u32 },
}

/// A peer before it moves to its media thread.
pub struct NewPeer {
    pub(crate) client: ClientPeer,
    pub(crate) socket: StdUdpSocket,
    pub(crate) role: Role,
    pub(crate) events: tmpsc::UnboundedSender<PeerEvent>,
}

/// A bound socket and a client peer with its host candidate: returns the peer-to-be, the
/// candidate line (`candidate:...`) to trickle, and for publishers the offer SDP.
pub struct PeerSetup {
    pub peer: NewPeer,
    pub candidate: String,
    pub offer: Option<String>,
}

/// A socket on `ip` and a client peer on its address, stamping payloads as `publisher`
/// and timing them with the [`now_us`](crate::stats::now_us) clock.
fn new_peer(ip: Ipv4Addr, cfg: ClientConfig) -> Result<(StdUdpSocket, ClientPeer), String> {
    let socket = bind_socket(ip).map_err(|e| format!("binding a UDP socket on {ip}: {e}"))?;
    let local_addr: SocketAddr = socket.local_addr().map_err(|e| e.to_string())?;
    Ok((
        socket,
        ClientPeer::with_config(local_addr, cfg, Instant::now()),
    ))
}

/// The simulcast encodings of `--simulcast`: rid and the size their keyframes announce.
const SIMULCAST: [(&str, (u16, u16)); 3] =
    [("l", (320, 180)), ("m", (640, 360)), ("h", (1280, 720))];

/// Create a publisher peer with an offer for one sendonly VP8 track `track_id` (three
/// simulcast encodings if `simulcast`).
pub fn new_publisher(
    bind: Ipv4Addr,
    index: u32,
    track_id: &str,
    simulcast: bool,
    events: tmpsc::UnboundedSender<PeerEvent>,
) -> Result<PeerSetup, String> {
    let cfg = ClientConfig {
        vp8_only: true,
        publisher: index,
        ..ClientConfig::new(instant_of_us(0))
    };
    let (socket, mut client) = new_peer(bind, cfg)?;
    let stream_id = format!("loadgen-stream-{index}");
    let offer = if simulcast {
        client.publish_simulcast_offer(&stream_id, track_id, &SIMULCAST)
    } else {
        client.publish_offer(&stream_id, &[(MediaKind::Video, track_id)])
    }
    .map_err(|_| "str0m made no offer")?;
    Ok(PeerSetup {
        candidate: client.candidate(),
        peer: NewPeer {
            client,
            socket,
            role: Role::Publisher { index },
            events,
        },
        offer: Some(offer),
    })
}

/// Create a subscriber peer (it answers the server's offers).
pub fn new_subscriber(
    bind: Ipv4Addr,
    publisher: u32,
    events: tmpsc::UnboundedSender<PeerEvent>,
) -> Result<PeerSetup, String> {
    let cfg = ClientConfig {
        expect_publisher: Some(publisher),
        record_arrivals: true,
        ..ClientConfig::new(instant_of_us(0))
    };
    let (socket, client) = new_peer(bind, cfg)?;
    Ok(PeerSetup {
        candidate: client.candidate(),
        peer: NewPeer {
            client,
            socket,
            role: Role::Subscriber { publisher },
            events,
        },
        offer: None,
    })
}

/// The measured window, in [`now_us`] time. Packets whose send time is inside count.
pub struct Window {
    start_us: AtomicU64,
    end_us: AtomicU64,
}

impl Window {
    pub(crate) fn get(&self) -> (u64, u64) {
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
    /// When it answered, connected and got its first media.
    pub join: JoinTimes,
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

pub(crate) enum Cmd {
    Add(usize, Box<NewPeer>),
    AcceptAnswer(usize, String, oneshot::Sender<Result<(), String>>),
    AcceptOffer(usize, String, oneshot::Sender<Result<String, String>>),
    AddCandidate(usize, String),
    /// The signaling task sent the subscriber's first answer at this [`now_us`] time.
    AnswerSent(usize, u64),
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

    /// Subscriber: our first answer left for the server at `us` ([`now_us`] time), the
    /// start of the first-media measurement.
    pub fn answer_sent(&self, us: u64) {
        self.send(Cmd::AnswerSent(self.local, us));
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
            let mut worker = Worker::new(poll, rx, window.clone(), counters.clone());
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
