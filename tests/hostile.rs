//! Hostile and careless clients (issue 11): what an attacker can send through the API a
//! server exposes to browsers, and what comes back.

mod common;

use std::time::Duration;

use rheomesh::config::{MediaConfig, WebRTCTransportConfig, WorkerConfig, MAX_REMOTE_ADDRS};
use rheomesh::worker::Worker;
use rheomesh::{IceCandidateInit, SessionDescription};
use str0m::ice::{StunMessage, TransId};

use common::peer::{PeerConfig, TestPeer};
use common::sfu;

/// What an error that reaches a client must not contain: heap addresses and debug dumps.
fn assert_written_for_clients(what: &str, message: &str) {
    for leak in ["PointerOffset", "0x7", "0x5", "{ ", "Some(", "Err("] {
        assert!(
            !message.contains(leak),
            "{what}: the error leaks internals ({leak:?}): {message}"
        );
    }
    assert!(
        message.len() <= 400,
        "{what}: an error of {} bytes",
        message.len()
    );
}

/// Garbage offers, answers and candidates get errors that say what was wrong, without the
/// parser's pointers into server memory (`Parse error at PointerOffset(0x7fa3…)` before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_for_bad_sdp_do_not_leak_internals() {
    let mut config = WorkerConfig::default();
    config.shards = 1;
    let worker = Worker::new(config).await.unwrap();
    let router = worker.lock().await.new_router(MediaConfig::default());
    let publish = router
        .create_publish_transport(WebRTCTransportConfig::default())
        .await;
    let long_token = format!("v=0\r\no=- 1 2 IN IP4 {}\r\n", "x".repeat(5000));
    let offers = [
        "garbage".to_string(),
        "v=x\r\n".to_string(),
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio nine\r\n".to_string(),
        long_token,
    ];
    for offer in offers {
        let err = publish
            .get_answer(SessionDescription::offer(offer.clone()))
            .await
            .expect_err("garbage is refused");
        let message = err.to_string();
        assert_written_for_clients("offer", &message);
        assert!(message.contains("line"), "no position in {message:?}");
    }

    for candidate in [
        "candidate:garbage",
        "candidate:1 1 udp x 127.0.0.1 9 typ host",
    ] {
        let err = publish
            .add_ice_candidate(IceCandidateInit {
                candidate: candidate.into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: None,
            })
            .await
            .expect_err("a bad candidate is refused");
        assert_written_for_clients("candidate", &err.to_string());
    }

    let subscribe = router
        .create_subscribe_transport(WebRTCTransportConfig::default())
        .await;
    let err = subscribe
        .set_answer(SessionDescription::answer("v=x\r\n"))
        .await
        .expect_err("garbage is refused");
    assert_written_for_clients("answer", &err.to_string());

    publish.close().await;
    subscribe.close().await;
}

/// A client repeating `RestartICE` while an offer is unanswered is told so at once, instead
/// of each request waiting 21 s and then answering "no offer is outstanding".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_storm_is_refused_promptly() {
    let mut config = WorkerConfig::default();
    config.shards = 1;
    let worker = Worker::new(config).await.unwrap();
    let router = worker.lock().await.new_router(MediaConfig::default());
    let subscribe = router
        .create_subscribe_transport(WebRTCTransportConfig::default())
        .await;
    let first = subscribe
        .restart_ice()
        .await
        .expect("the first restart makes an offer");
    assert!(first.sdp.starts_with("v=0"));
    let storm = futures_util::future::join_all((0..50).map(|_| subscribe.restart_ice()));
    let results = tokio::time::timeout(std::time::Duration::from_secs(2), storm)
        .await
        .expect("restarts are answered at once, not after the answer timeout");
    for r in results {
        assert_eq!(r, Err(rheomesh::error::NegotiationError::OfferOutstanding));
    }
    subscribe.close().await;
}

/// Valid STUN checks for an attacker's own session from many source ports: each answered
/// one became a peer-reflexive candidate (≈ 1 KB, never freed, and a costlier check every
/// time). At most [`MAX_REMOTE_ADDRS`] are answered, the rest refused and counted, while a
/// call on the same shard loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_from_many_ports_is_capped_per_session() {
    const PORTS: usize = 300;
    let (worker, router) = sfu::setup(1).await;
    let publisher =
        sfu::connect_publisher(&router, Some("a"), Some("v"), PeerConfig::default()).await;
    let mut sub = sfu::connect_subscriber(&router, PeerConfig::default()).await;
    sub.subscribe("a").await;
    sub.subscribe("v").await;
    publisher.peer.start_sending(50, 50, Duration::from_secs(1));

    // The attacker negotiates a session of its own (a valid offer), then sends its checks
    // by hand instead of connecting.
    let attacker = TestPeer::new(PeerConfig::default());
    let offer = attacker.publish_offer(None, Some("x"));
    let transport = router
        .create_publish_transport(WebRTCTransportConfig::default())
        .await;
    let answer = transport
        .get_answer(SessionDescription::offer(offer.clone()))
        .await
        .expect("the attacker's offer is valid");
    let attr = |sdp: &str, name: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {name} in {sdp}"))
    };
    let username = format!(
        "{}:{}",
        attr(&answer.sdp, "a=ice-ufrag:"),
        attr(&offer, "a=ice-ufrag:")
    );
    let password = attr(&answer.sdp, "a=ice-pwd:");
    let candidate = attr(&answer.sdp, "a=candidate:");
    let fields: Vec<&str> = candidate.split_whitespace().collect();
    let server: std::net::SocketAddr = format!("{}:{}", fields[4], fields[5]).parse().unwrap();

    let sockets = tokio::task::spawn_blocking(move || {
        let crypto = str0m::crypto::from_feature_flags();
        let hmac = |k: &[u8], p: &[&[u8]]| crypto.sha1_hmac_provider.sha1_hmac(k, p);
        let mut buf = [0u8; 1500];
        (0..PORTS)
            .map(|_| {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let check = StunMessage::binding_request(
                    &username,
                    TransId::new(),
                    true,
                    7,
                    1 << 24,
                    false,
                );
                let n = check
                    .to_bytes(Some(password.as_bytes()), &mut buf, hmac)
                    .unwrap();
                s.send_to(&buf[..n], server).unwrap();
                s
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();

    // Every check is either answered (a new address of the session) or refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = worker.lock().await.stats().await;
        let refused = stats.total(|s| s.stun_addr_limit) as usize;
        if refused >= PORTS - MAX_REMOTE_ADDRS || tokio::time::Instant::now() >= deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let refused = stats.total(|s| s.stun_addr_limit) as usize;
    assert!(
        refused >= PORTS - MAX_REMOTE_ADDRS,
        "refused {refused} of {PORTS} checks"
    );
    let answered = sockets
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            s.recv(&mut [0u8; 1500]).is_ok()
        })
        .count();
    assert!(
        answered <= MAX_REMOTE_ADDRS,
        "{answered} of {PORTS} source ports answered"
    );
    assert!(
        answered > 0,
        "the attacker's valid checks were not answered at all"
    );

    // The call on the same shard lost nothing.
    sfu::expect_complete_delivery(&publisher.peer, &sub.peer, "a", "v", 100)
        .await
        .expect("the live call delivers everything");
    assert_eq!(stats.total(|s| s.session_panics), 0);
    transport.close().await;
}

/// Candidates trickled without end are refused once a transport has its share, with an
/// error, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_trickled_candidates_are_refused() {
    let (worker, router) = sfu::setup(1).await;
    let publish = router
        .create_publish_transport(WebRTCTransportConfig::default())
        .await;
    let mut refused = 0;
    for port in 0..200u16 {
        let r = publish
            .add_ice_candidate(IceCandidateInit {
                candidate: format!(
                    "candidate:1 1 udp 2122260223 127.0.0.1 {} typ host",
                    20000 + port
                ),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: None,
            })
            .await;
        match r {
            Ok(()) => assert!(refused == 0, "a candidate accepted after a refusal"),
            Err(rheomesh::error::TransportError::TooManyCandidates(n)) => {
                assert_eq!(n, rheomesh::config::MAX_REMOTE_CANDIDATES);
                refused += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(refused, 200 - rheomesh::config::MAX_REMOTE_CANDIDATES);
    let stats = worker.lock().await.stats().await;
    assert_eq!(stats.total(|s| s.candidates_refused), refused as u64);
    publish.close().await;
}
