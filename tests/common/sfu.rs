//! Server-side setup for integration tests: a worker and router, and helpers that connect
//! str0m test peers to it as publishers and subscribers through the public API.

use std::sync::Arc;
use std::time::Duration;

use rheomesh::config::{MediaConfig, WebRTCTransportConfig, WorkerConfig};
use rheomesh::data::{DataPublisher, DataSubscriber};
use rheomesh::publisher::Publisher;
use rheomesh::router::Router;
use rheomesh::subscriber::Subscriber;
use rheomesh::transport::{PublishTransport, SubscribeTransport};
use rheomesh::worker::Worker;
use rheomesh::{IceCandidateInit, SessionDescription};
use str0m::ice::{StunMessage, TransId};
use tokio::sync::Mutex;

use super::peer::{PeerConfig, TestPeer};

/// A worker with `shards` shards on 127.0.0.1 and one router.
pub async fn setup(shards: usize) -> (Arc<Mutex<Worker>>, Router) {
    setup_with(shards, MediaConfig::default()).await
}

/// A worker with `shards` shards on 127.0.0.1 and one router of `media`.
pub async fn setup_with(shards: usize, media: MediaConfig) -> (Arc<Mutex<Worker>>, Router) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let mut config = WorkerConfig::default();
    config.shards = shards;
    let worker = Worker::new(config).await.expect("worker starts");
    let router = worker.lock().await.new_router(media);
    (worker, router)
}

/// The worker's session count once it reaches 0, or after 2 s (what is left).
pub async fn sessions_after(worker: &Arc<Mutex<Worker>>) -> usize {
    let mut sessions = usize::MAX;
    for _ in 0..100 {
        sessions = worker.lock().await.stats().await.sessions();
        if sessions == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sessions
}

/// Poll `f` every 20 ms until it is true or `timeout` passes. Returns the last value.
pub async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`wait_until`] for a condition that must be awaited (e.g. reads worker stats).
pub async fn wait_for<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    mut f: impl FnMut() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (off the runtime's worker threads) for a peer to connect.
pub async fn wait_connected(peer: &Arc<TestPeer>, timeout: Duration) -> bool {
    let p = peer.clone();
    tokio::task::spawn_blocking(move || p.wait_connected(timeout))
        .await
        .unwrap_or(false)
}

/// The test peer's host candidate, as a browser would trickle it.
pub fn candidate_init(peer: &TestPeer) -> IceCandidateInit {
    IceCandidateInit {
        candidate: peer.local_candidate(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    }
}

/// A publishing peer: connected, with its tracks published.
pub struct Pub {
    pub transport: PublishTransport,
    pub peer: Arc<TestPeer>,
    pub publishers: Vec<Publisher>,
    /// The server's answer SDP.
    pub answer: String,
}

/// Connect a test peer as a publisher of the given audio / video track ids.
pub async fn connect_publisher(
    router: &Router,
    audio: Option<&str>,
    video: Option<&str>,
    cfg: PeerConfig,
) -> Pub {
    let peer = Arc::new(TestPeer::new(cfg));
    let transport = router
        .create_publish_transport(WebRTCTransportConfig::default())
        .await;
    let offer = peer.publish_offer(audio, video);
    let answer = negotiate_publisher(&transport, &peer, offer).await;
    let mut publishers = Vec::new();
    for id in [audio, video].into_iter().flatten() {
        publishers.push(transport.try_publish(id).await.expect("track published"));
    }
    Pub {
        transport,
        peer,
        publishers,
        answer,
    }
}

/// Offer `offer` from `peer` to the publish `transport`, apply the answer, trickle the peer's
/// candidate and wait until it connects. Returns the answer SDP.
async fn negotiate_publisher(
    transport: &PublishTransport,
    peer: &Arc<TestPeer>,
    offer: String,
) -> String {
    let answer = transport
        .get_answer(SessionDescription::offer(offer))
        .await
        .expect("publish offer accepted");
    peer.accept_answer(&answer.sdp).expect("answer accepted");
    transport
        .add_ice_candidate(candidate_init(peer))
        .await
        .expect("candidate accepted");
    assert!(
        wait_connected(peer, Duration::from_secs(10)).await,
        "publisher connects"
    );
    answer.sdp
}

/// A connected publisher of one simulcast VP8 track (not sending yet).
pub struct SimulcastPub {
    pub transport: PublishTransport,
    pub peer: Arc<TestPeer>,
    #[allow(dead_code)]
    pub publisher: rheomesh::publisher::Publisher,
}

/// Connect a test peer publishing `track_id` as simulcast with `encodings` (rid and the
/// picture size its keyframes announce; local tracks 0.. in that order), checking that the
/// answer receives them as simulcast. The caller starts the sending.
pub async fn connect_simulcast_publisher(
    router: &Router,
    track_id: &str,
    encodings: &[(&str, (u16, u16))],
) -> SimulcastPub {
    let peer = Arc::new(TestPeer::new(PeerConfig::default()));
    let transport = router.create_publish_transport(Default::default()).await;
    let offer = peer.publish_simulcast_offer(track_id, encodings);
    let answer = negotiate_publisher(&transport, &peer, offer).await;
    assert!(
        answer.contains("a=simulcast:recv"),
        "the answer receives simulcast:\n{answer}"
    );
    let publisher = transport
        .try_publish(track_id)
        .await
        .expect("track published");
    SimulcastPub {
        transport,
        peer,
        publisher,
    }
}

/// A subscribing peer.
pub struct Sub {
    pub transport: SubscribeTransport,
    pub peer: Arc<TestPeer>,
    pub subscribers: Vec<Subscriber>,
}

/// Create a subscribe transport and its test peer (not connected until the first subscribe).
pub async fn connect_subscriber(router: &Router, cfg: PeerConfig) -> Sub {
    let peer = Arc::new(TestPeer::new(cfg));
    let transport = router
        .create_subscribe_transport(WebRTCTransportConfig::default())
        .await;
    Sub {
        transport,
        peer,
        subscribers: Vec::new(),
    }
}

impl Sub {
    /// Subscribe to `track_id`: offer → test peer answer → set_answer; connect on first use.
    pub async fn subscribe(&mut self, track_id: &str) -> Subscriber {
        let (subscriber, offer) = self
            .transport
            .subscribe(track_id)
            .await
            .expect("subscribe succeeds");
        let answer = self.peer.accept_offer(&offer.sdp).expect("peer answers");
        self.transport
            .set_answer(SessionDescription::answer(answer))
            .await
            .expect("answer applied");
        if self.subscribers.is_empty() {
            self.transport
                .add_ice_candidate(candidate_init(&self.peer))
                .await
                .expect("candidate accepted");
            assert!(
                wait_connected(&self.peer, Duration::from_secs(10)).await,
                "subscriber connects"
            );
        }
        self.subscribers.push(subscriber.clone());
        subscriber
    }
}

/// A publisher of the video track "v" sending 50 pps with keyframes only on request (no
/// periodic keyframe), and one connected subscriber of it.
pub async fn video_on_request(router: &Router) -> (Pub, Sub) {
    let publisher = connect_publisher(router, None, Some("v"), PeerConfig::default()).await;
    let mut sub = connect_subscriber(router, PeerConfig::default()).await;
    sub.subscribe("v").await;
    publisher
        .peer
        .start_sending(50, 0, Duration::from_secs(600));
    (publisher, sub)
}

/// A STUN server on 127.0.0.1 that answers every Binding request with a fixed mapped
/// address (as a NAT would), so tests can check server-reflexive discovery offline.
pub fn fake_stun_server(mapped_ip: std::net::Ipv4Addr) -> std::net::SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        // Ends with the test process; bounded by the tests that use it.
        let crypto = str0m::crypto::from_feature_flags();
        let hmac = |key: &[u8], parts: &[&[u8]]| crypto.sha1_hmac_provider.sha1_hmac(key, parts);
        let mut out = [0u8; 1500];
        while let Ok((n, src)) = sock.recv_from(&mut buf) {
            // The shards' requests carry no credentials, which str0m's parser insists on for
            // binding requests: look at the type and take the transaction id by hand.
            if n < 20 || buf[0..2] != [0, 1] {
                continue;
            }
            // TransId has no public constructor from bytes but deserializes from them.
            let Ok(txid) = serde_json::from_value::<TransId>(serde_json::json!(buf[8..20])) else {
                continue;
            };
            let mapped = std::net::SocketAddr::new(mapped_ip.into(), src.port());
            let reply = StunMessage::binding_reply(txid, mapped);
            if let Ok(len) = reply.to_bytes(None, &mut out, hmac) {
                let _ = sock.send_to(&out[..len], src);
            }
        }
    });
    addr
}

/// Let `publisher` send until it has sent `min_video` video packets, stop it, and wait until
/// `sub` has every distinct packet of tracks `audio` and `video` (no loss tolerated).
/// Returns (received video, sent video, received audio, sent audio) for messages.
pub async fn expect_complete_delivery(
    publisher: &TestPeer,
    sub: &TestPeer,
    audio: &str,
    video: &str,
    min_video: u64,
) -> Result<(), String> {
    if !wait_until(Duration::from_secs(10), || {
        publisher.stats().sent_video >= min_video
    })
    .await
    {
        return Err(format!("publisher sent only {:?}", publisher.stats()));
    }
    publisher.stop_sending();
    let sent = publisher.stats();
    let ok = wait_until(Duration::from_secs(10), || {
        sub.received(video).distinct_counters == sent.sent_video
            && sub.received(audio).distinct_counters == sent.sent_audio
    })
    .await;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "lost packets: video {}/{} audio {}/{}",
            sub.received(video).distinct_counters,
            sent.sent_video,
            sub.received(audio).distinct_counters,
            sent.sent_audio
        ))
    }
}

/// A connected publisher with one data channel `label`, published.
pub async fn data_publisher(
    router: &Router,
    label: &str,
    ordered: bool,
    max_retransmits: Option<u16>,
) -> (PublishTransport, Arc<TestPeer>, DataPublisher) {
    let peer = Arc::new(TestPeer::new(PeerConfig::default()));
    let transport = router
        .create_publish_transport(WebRTCTransportConfig::default())
        .await;
    let offer = peer.data_channel_offer(label, ordered, max_retransmits);
    let answer = transport
        .get_answer(SessionDescription::offer(offer))
        .await
        .expect("a data-only offer is accepted");
    peer.accept_answer(&answer.sdp).expect("answer accepted");
    transport
        .add_ice_candidate(candidate_init(&peer))
        .await
        .expect("candidate");
    assert!(
        wait_connected(&peer, Duration::from_secs(10)).await,
        "publisher connects"
    );
    let publisher = transport.data_publish(label).await.expect("data published");
    (transport, peer, publisher)
}

/// A connected subscriber of data publisher `label`, its channel open.
pub async fn data_subscriber(
    router: &Router,
    label: &str,
) -> (SubscribeTransport, Arc<TestPeer>, DataSubscriber) {
    let peer = Arc::new(TestPeer::new(PeerConfig::default()));
    let transport = router
        .create_subscribe_transport(WebRTCTransportConfig::default())
        .await;
    let (sub, offer) = transport
        .data_subscribe(label)
        .await
        .expect("data subscribe");
    let offer = offer.expect("the first data channel of a connection needs an offer");
    let answer = peer.accept_offer(&offer.sdp).expect("peer answers");
    transport
        .set_answer(SessionDescription::answer(answer))
        .await
        .expect("answer applied");
    transport
        .add_ice_candidate(candidate_init(&peer))
        .await
        .expect("candidate");
    let connected = wait_connected(&peer, Duration::from_secs(10)).await;
    assert!(connected, "subscriber connects: {:?}", peer.error());
    let p = peer.clone();
    let label2 = label.to_string();
    assert!(
        wait_until(Duration::from_secs(10), move || p
            .data_channel(&label2)
            .is_some_and(|c| c.open))
        .await,
        "the subscriber's channel opens"
    );
    (transport, peer, sub)
}
