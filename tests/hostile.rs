//! Hostile and careless clients (issue 11): what an attacker can send through the API a
//! server exposes to browsers, and what comes back.

mod common;

use std::time::Duration;

use rheomesh::config::{WebRTCTransportConfig, MAX_REMOTE_ADDRS};
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
    let (_worker, router) = sfu::setup(1).await;
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
        // Says where: "line N: …" (not just any mention of "m-lines").
        let at_line = message
            .match_indices("line ")
            .any(|(i, m)| message[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
        assert!(at_line, "no line number in {message:?}");
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
    let (_worker, router) = sfu::setup(1).await;
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

/// A valid Chrome-like offer of `pairs` audio + video m-line pairs (`pairs` = 64: 128
/// m-lines, ≈ 230 KB), made from the `chrome_audio_video` fuzz seed.
fn big_offer(pairs: usize) -> String {
    let seed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/sdp_offer/chrome_audio_video"),
    )
    .expect("seed");
    let lines: Vec<&str> = seed.lines().map(str::trim_end).collect();
    let m = |kind: &str| lines.iter().position(|l| l.starts_with(kind)).unwrap();
    let (audio, video) = (m("m=audio"), m("m=video"));
    let mut out: Vec<String> = Vec::new();
    let mids: Vec<String> = (0..pairs)
        .flat_map(|i| [format!("a{i}"), format!("v{i}")])
        .collect();
    for l in &lines[..audio] {
        if l.starts_with("a=group:BUNDLE") {
            out.push(format!("a=group:BUNDLE {}", mids.join(" ")));
        } else {
            out.push(l.to_string());
        }
    }
    for i in 0..pairs {
        for (section, name) in [(&lines[audio..video], "a"), (&lines[video..], "v")] {
            for l in section {
                if l.starts_with("a=ssrc") {
                    continue;
                } else if l.starts_with("a=mid:") {
                    out.push(format!("a=mid:{name}{i}"));
                } else if l.starts_with("a=msid:") {
                    out.push(format!("a=msid:stream0 {name}{i}"));
                } else {
                    out.push(l.to_string());
                }
            }
        }
    }
    out.join("\r\n") + "\r\n"
}

/// Ten clients sending large valid offers (128 m-lines) as fast as they are answered: a call
/// on the same (only) shard keeps its packets flowing: all delivered, p99 latency ≤ 20 ms
/// (optimized build). Before, the shard parsed every offer itself and ran its whole command
/// queue before reading its socket again: the call got no packet at all for the attack's
/// 3 s. Now offers are parsed on low-priority threads and the shard spends at most 2 ms per
/// pass on commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_offers_do_not_freeze_media() {
    let (worker, router) = sfu::setup(1).await;
    let publisher =
        sfu::connect_publisher(&router, Some("a"), Some("v"), PeerConfig::default()).await;
    let mut sub = sfu::connect_subscriber(&router, PeerConfig::default()).await;
    sub.subscribe("a").await;
    sub.subscribe("v").await;
    publisher
        .peer
        .start_sending(150, 50, Duration::from_secs(1));
    assert!(
        sfu::wait_until(Duration::from_secs(5), || sub.peer.received("v").intact
            > 100)
        .await,
        "the call flows"
    );
    let before = sub.peer.received("v");

    let offer = big_offer(64);
    assert!(offer.len() > 200_000, "offer of {} bytes", offer.len());
    let stop = tokio::time::Instant::now() + Duration::from_secs(3);
    let attackers = (0..10).map(|_| {
        let router = router.clone();
        let offer = offer.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            while tokio::time::Instant::now() < stop {
                let t = router
                    .create_publish_transport(WebRTCTransportConfig::default())
                    .await;
                if t.get_answer(SessionDescription::offer(offer.clone()))
                    .await
                    .is_ok()
                {
                    answered += 1;
                }
                t.close().await;
            }
            answered
        })
    });
    let answered: usize = futures_util::future::join_all(attackers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    let after = sub.peer.received("v");
    let p99 = after
        .latency_quantile_ms(&before, 0.99)
        .expect("packets during the attack");
    let max = after.latency_quantile_ms(&before, 1.0).unwrap();
    eprintln!(
        "{answered} large offers answered in 3 s; the call's video during them: {} packets, \
         p99 < {p99} ms, max < {max} ms",
        after.intact - before.intact
    );
    assert!(answered >= 10, "only {answered} offers answered");
    // The bound is ≤ 20 ms; the histogram's buckets are powers of two, so it lies in
    // the 16–32 ms bucket. An optimized build (CI runs this file as one too: `cargo test
    // --release --test hostile`) usually stays under 16 ms, but one CI run in four and one
    // local run in three (2026-12-02) had its p99 in the 16–32 ms bucket, max < 32 ms, with
    // the attackers' SDP parsing, the peers and the shard sharing two cores: the bound is
    // the bucket that holds 20 ms, and the figure is printed above. A debug build applies
    // one 128-m-line offer on the shard in tens of milliseconds (≈ 5 optimized), so there
    // the bound only catches a frozen shard.
    let bound = if cfg!(debug_assertions) { 128 } else { 32 };
    assert!(
        p99 <= bound,
        "the call's p99 latency was up to {p99} ms under large offers (bound {bound})"
    );
    sfu::expect_complete_delivery(&publisher.peer, &sub.peer, "a", "v", 0)
        .await
        .expect("the live call delivers everything");
    let stats = worker.lock().await.stats().await;
    assert_eq!(stats.total(|s| s.session_panics), 0);
}

/// A captured SRTCP datagram sent again is refused (RFC 3711 replay protection, a patch to
/// str0m, whose SRTCP had none): a subscriber behind 10 % loss NACKs and asks for keyframes;
/// every SRTCP datagram it sent is captured, and once the publisher stopped, all of them are
/// sent again from the subscriber's own address. They reach the server (its datagram count
/// grows by as many) but no NACK or PLI is counted again, and nothing is retransmitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_srtcp_is_refused() {
    let (worker, router) = sfu::setup(1).await;
    let publisher = sfu::connect_publisher(&router, None, Some("rv"), PeerConfig::default()).await;
    let lossy = PeerConfig {
        loss_in: 0.1,
        seed: 17,
        ..Default::default()
    };
    let mut sub = sfu::connect_subscriber(&router, lossy).await;
    sub.subscribe("rv").await;
    sub.peer.capture_rtcp(true);
    publisher.peer.start_sending(150, 0, Duration::from_secs(1));
    let stats = || async { sub.transport.stats().await.expect("stats") };
    assert!(
        sfu::wait_until(Duration::from_secs(10), || sub
            .peer
            .received("rv")
            .distinct_counters
            >= 300)
        .await,
        "media flows"
    );
    let nacks = stats().await.nacks_received;
    assert!(nacks > 0, "the lossy subscriber NACKed: {nacks}");
    publisher.peer.stop_sending();
    assert!(sub.peer.request_keyframe("rv"), "one PLI, captured too");
    // The last feedback is counted before the replay starts.
    let mut settled = stats().await;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = stats().await;
        if (now.nacks_received, now.plis_received)
            == (settled.nacks_received, settled.plis_received)
        {
            break;
        }
        settled = now;
    }
    let rtx_before = worker.lock().await.stats().await.total(|s| s.rtx_sent);

    let replayed = sub.peer.replay_captured_rtcp();
    assert!(replayed >= 10, "captured SRTCP to replay: {replayed}");
    let before_in = settled.datagrams_in;
    let arrived = sfu::wait_for(Duration::from_secs(2), || async {
        stats().await.datagrams_in >= before_in + replayed as u64
    })
    .await;
    assert!(
        arrived,
        "the {replayed} replayed datagrams reached the server"
    );
    let after = stats().await;
    assert_eq!(
        (after.nacks_received, after.plis_received),
        (settled.nacks_received, settled.plis_received),
        "no replayed NACK or PLI counted ({replayed} replayed)"
    );
    let rtx_after = worker.lock().await.stats().await.total(|s| s.rtx_sent);
    assert_eq!(
        rtx_after, rtx_before,
        "nothing retransmitted for replayed NACKs"
    );
    println!("{replayed} SRTCP datagrams replayed: refused ({nacks} NACKs before)");
}
