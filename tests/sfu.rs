//! Integration tests of the SFU with real str0m peers over real UDP on 127.0.0.1.
//! All wait on conditions with deadlines; none sleeps for a fixed time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::peer::PeerConfig;
use common::sfu::{
    connect_publisher, connect_subscriber, expect_complete_delivery, setup, video_on_request,
    wait_until,
};

/// 1. One publisher (audio + video) → one subscriber: payloads arrive intact and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_one_subscriber_intact_in_order() {
    let (_worker, router) = setup(1).await;
    let publisher = connect_publisher(&router, Some("a1"), Some("v1"), PeerConfig::default()).await;
    let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
    sub.subscribe("a1").await;
    sub.subscribe("v1").await;
    publisher.peer.start_sending(50, 50, Duration::from_secs(1));
    let ok = wait_until(Duration::from_secs(15), || {
        sub.peer.received("v1").packets >= 100 && sub.peer.received("a1").packets >= 100
    })
    .await;
    let v = sub.peer.received("v1");
    let a = sub.peer.received("a1");
    assert!(ok, "media arrives: video {v:?} audio {a:?}");
    for t in [&v, &a] {
        assert_eq!(t.corrupt, 0, "no corrupt payloads: {t:?}");
        assert_eq!(t.intact, t.packets, "every payload intact: {t:?}");
        assert!(t.in_order, "in order: {t:?}");
        assert_eq!(t.ssrcs.len(), 1, "one SSRC per track: {t:?}");
    }
}

/// 2. One publisher → 20 subscribers over 2 shards: each gets ≥ 99.9% of the packets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_twenty_subscribers_on_two_shards() {
    let (worker, router) = setup(2).await;
    let publisher = connect_publisher(&router, Some("a"), Some("v"), PeerConfig::default()).await;
    let mut subs = Vec::new();
    for _ in 0..20 {
        let mut s = connect_subscriber(&router, PeerConfig::default()).await;
        s.subscribe("a").await;
        s.subscribe("v").await;
        subs.push(s);
    }
    publisher.peer.start_sending(50, 50, Duration::from_secs(1));
    // Let at least 150 video packets go out, then stop and count.
    assert!(
        wait_until(Duration::from_secs(20), || publisher
            .peer
            .stats()
            .sent_video
            >= 150)
        .await
    );
    publisher.peer.stop_sending();
    let sent = publisher.peer.stats();
    let need_v = (sent.sent_video as f64 * 0.999).ceil() as u64;
    let need_a = (sent.sent_audio as f64 * 0.999).ceil() as u64;
    let all = wait_until(Duration::from_secs(10), || {
        subs.iter().all(|s| {
            s.peer.received("v").distinct_counters >= need_v
                && s.peer.received("a").distinct_counters >= need_a
        })
    })
    .await;
    for (i, s) in subs.iter().enumerate() {
        let v = s.peer.received("v");
        let a = s.peer.received("a");
        assert!(
            all,
            "subscriber {i}: video {}/{} audio {}/{}",
            v.distinct_counters, sent.sent_video, a.distinct_counters, sent.sent_audio
        );
        assert_eq!(v.corrupt + a.corrupt, 0);
    }
    let stats = worker.lock().await.stats().await;
    assert!(
        stats
            .shards
            .iter()
            .all(|s| s.sessions > 0 && s.rtp_forwarded > 0),
        "both shards carry subscribers: {stats:?}"
    );
}

/// 3. A late joiner makes the server ask the publisher for a keyframe within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_triggers_keyframe_request() {
    let (_worker, router) = setup(2).await;
    // Keyframes only on request: no periodic keyframe during the test.
    let (publisher, first) = video_on_request(&router).await;
    assert!(
        wait_until(Duration::from_secs(10), || first.peer.received("v").packets
            >= 20)
        .await
    );
    let before = publisher.peer.stats().keyframe_requests;

    let mut late = connect_subscriber(&router, PeerConfig::default()).await;
    let joined = std::time::Instant::now();
    late.subscribe("v").await;
    let asked = wait_until(Duration::from_secs(5), || {
        publisher.peer.stats().keyframe_requests > before
    })
    .await;
    assert!(asked, "publisher got a keyframe request");
    let at = *publisher
        .peer
        .stats()
        .keyframe_request_times
        .last()
        .expect("request time recorded");
    let delay = at.saturating_duration_since(joined);
    assert!(
        delay <= Duration::from_secs(1),
        "keyframe requested after {delay:?}"
    );
    // And the late joiner decodes from that keyframe on.
    assert!(
        wait_until(Duration::from_secs(5), || late.peer.received("v").keyframes
            >= 1
            && late.peer.received("v").packets >= 10)
        .await,
        "late joiner receives video starting at a keyframe: {:?}",
        late.peer.received("v")
    );
}

/// A publisher sends 500 video packets at 100 pps to one subscriber per `sub_cfgs` (over
/// `shards` shards) with loss injected as configured; every subscriber must end with 99.5 %
/// of them, intact. Returns the worker for its counters.
async fn loss_run(
    shards: usize,
    pub_cfg: PeerConfig,
    sub_cfgs: &[PeerConfig],
) -> Arc<tokio::sync::Mutex<rheomesh::worker::Worker>> {
    let (worker, router) = setup(shards).await;
    let publisher = connect_publisher(&router, None, Some("v"), pub_cfg).await;
    let mut subs = Vec::new();
    for cfg in sub_cfgs {
        let mut sub = connect_subscriber(&router, cfg.clone()).await;
        sub.subscribe("v").await;
        subs.push(sub);
    }
    publisher.peer.start_sending(100, 0, Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(20), || publisher
            .peer
            .stats()
            .sent_video
            >= 500)
        .await
    );
    publisher.peer.stop_sending();
    let sent = publisher.peer.stats().sent_video;
    let need = (sent as f64 * 0.995).ceil() as u64;
    for (i, sub) in subs.iter().enumerate() {
        let ok = wait_until(Duration::from_secs(10), || {
            sub.peer.received("v").distinct_counters >= need
        })
        .await;
        let got = sub.peer.received("v");
        let dropped = publisher.peer.stats().dropped_out + sub.peer.stats().dropped_in;
        assert!(dropped > 0, "subscriber {i}: loss was injected");
        assert!(
            ok,
            "subscriber {i}: delivered {}/{sent} after repair (need {need})",
            got.distinct_counters
        );
        assert_eq!(got.corrupt, 0, "subscriber {i}");
    }
    worker
}

/// 4a. 5% loss publisher → server is repaired by the server's NACKs and the publisher's RTX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_publisher_to_server_is_repaired() {
    let lossy = PeerConfig {
        loss_out: 0.05,
        seed: 7,
        ..Default::default()
    };
    loss_run(1, lossy, &[PeerConfig::default()]).await;
}

/// 4b. 5% loss server → subscriber is repaired from the server's retransmission store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_server_to_subscriber_is_repaired() {
    let lossy = PeerConfig {
        loss_in: 0.05,
        seed: 11,
        ..Default::default()
    };
    loss_run(1, PeerConfig::default(), &[lossy]).await;
}

/// 4c. Three subscribers over two shards, each losing different packets (and numbered
/// differently by the server), are all repaired from one store per track per shard. A
/// retransmission under the wrong sequence number would leave the lost packet's counter
/// missing at that subscriber; a damaged payload counts as corrupt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_to_many_subscribers_is_repaired_from_the_shared_store() {
    let lossy = |seed| PeerConfig {
        loss_in: 0.05,
        seed,
        ..Default::default()
    };
    let worker = loss_run(2, PeerConfig::default(), &[lossy(11), lossy(12), lossy(13)]).await;
    let stats = worker.lock().await.stats().await;
    let rtx: Vec<u64> = stats.shards.iter().map(|s| s.rtx_sent).collect();
    assert!(
        rtx.iter().all(|&n| n > 0),
        "both shards resent from their store: {rtx:?}"
    );
}

/// 5. A publisher leaving closes every subscriber and renegotiates each subscribe transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_leaving_notifies_and_renegotiates_subscribers() {
    let (worker, router) = setup(2).await;
    let publisher = connect_publisher(&router, Some("a"), Some("v"), PeerConfig::default()).await;
    let mut subs = Vec::new();
    let mut offers = Vec::new();
    for _ in 0..2 {
        let mut s = connect_subscriber(&router, PeerConfig::default()).await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        s.transport
            .on_negotiation_needed(Box::new(move |offer| {
                let _ = tx.send(offer);
            }))
            .await;
        s.subscribe("a").await;
        s.subscribe("v").await;
        subs.push(s);
        offers.push(rx);
    }
    publisher.peer.start_sending(50, 50, Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(10), || subs.iter().all(|s| s
            .peer
            .received("v")
            .packets
            > 10))
        .await
    );
    assert_eq!(
        router.publisher_ids(),
        vec!["a".to_string(), "v".to_string()]
    );

    publisher.transport.close().await;

    for (s, rx) in subs.iter().zip(offers.iter_mut()) {
        assert!(
            wait_until(Duration::from_secs(5), || s
                .subscribers
                .iter()
                .all(|x| x.is_closed()))
            .await,
            "subscriber handles report closed"
        );
        // Answer renegotiation offers until the peer sees no sending m-line.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !s.peer.remote_track_ids().is_empty() {
            let offer = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("renegotiation offer arrives")
                .expect("offer channel open");
            let answer = s.peer.accept_offer(&offer.sdp).expect("peer answers");
            s.transport
                .set_answer(rheomesh::SessionDescription::answer(answer))
                .await
                .expect("renegotiation answer applied");
        }
    }
    assert!(router.publisher_ids().is_empty());
    let stats = worker.lock().await.stats().await;
    assert_eq!(stats.down_tracks(), 0, "{stats:?}");
    assert_eq!(stats.routes(), 0, "{stats:?}");
}

/// 6. 200 join/leave cycles leave no session, route, down-track or ring entry behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_cycles_leak_nothing() {
    let (worker, router) = setup(2).await;
    for i in 0..200usize {
        let a = format!("a{i}");
        let v = format!("v{i}");
        let publisher = connect_publisher(&router, Some(&a), Some(&v), PeerConfig::default()).await;
        let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
        sub.subscribe(&a).await;
        sub.subscribe(&v).await;
        if i % 20 == 0 {
            publisher
                .peer
                .start_sending(100, 50, Duration::from_secs(1));
            assert!(
                wait_until(Duration::from_secs(10), || sub.peer.received(&v).packets
                    > 0)
                .await,
                "cycle {i}: media flows"
            );
        }
        match i % 3 {
            0 => {
                publisher.transport.close().await;
                sub.transport.close().await;
            }
            1 => {
                sub.transport.close().await;
                publisher.transport.close().await;
            }
            _ => {
                // Drop every handle without closing: the last handle closes the session.
                drop(sub);
                drop(publisher);
            }
        }
    }
    let clean = wait_until(Duration::from_secs(10), || {
        router.publisher_ids().is_empty()
    })
    .await;
    assert!(clean, "publishers left: {:?}", router.publisher_ids());
    let w = worker.clone();
    let mut last = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = w.lock().await.stats().await;
        let zero = stats.sessions() == 0
            && stats.routes() == 0
            && stats.ring_entries() == 0
            && stats.down_tracks() == 0
            && stats
                .shards
                .iter()
                .all(|s| s.up_tracks == 0 && s.known_addrs == 0);
        if zero {
            assert_eq!(stats.total(|s| s.sessions_closed), 400, "{stats:?}");
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            last = Some(stats);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.is_none(), "state left behind: {last:?}");
}

/// A STUN Binding request as an attacker would send it: USERNAME, PRIORITY (which ICE
/// requires in binding requests), MESSAGE-INTEGRITY (if `with_integrity`) under a password
/// the server never gave out, and FINGERPRINT; built and signed by str0m's STUN code.
fn stun_binding_request(username: &str, with_integrity: bool) -> Vec<u8> {
    use str0m::ice::{StunMessageBuilder, TransId};
    let message = StunMessageBuilder::new()
        .binding()
        .request()
        .username(username)
        .prio(0x6e00_1eff)
        .build(TransId::new());
    let crypto = str0m::crypto::from_feature_flags();
    let hmac = |key: &[u8], parts: &[&[u8]]| crypto.sha1_hmac_provider.sha1_hmac(key, parts);
    let password: &[u8] = b"not the server's password";
    let mut buf = vec![0u8; 1500];
    let n = message
        .to_bytes(with_integrity.then_some(password), &mut buf, hmac)
        .expect("a binding request fits 1500 bytes");
    buf.truncate(n);
    buf
}

/// 7. Garbage, truncated RTP and bad STUN at a shard's port are dropped and counted,
/// and a live call on the same shard loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_datagrams_are_dropped_and_counted() {
    let (worker, router) = setup(1).await;
    let publisher = connect_publisher(&router, Some("a"), Some("v"), PeerConfig::default()).await;
    let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
    sub.subscribe("a").await;
    sub.subscribe("v").await;
    let server = worker.lock().await.local_addrs()[0];
    let server_ufrag = publisher
        .answer
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .expect("answer has ufrag")
        .to_string();

    publisher.peer.start_sending(50, 50, Duration::from_secs(1));
    let attacker = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..600u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 1200) as usize;
        let mut junk: Vec<u8> = (0..len).map(|j| (x >> (j % 56)) as u8).collect();
        match i % 6 {
            0 => junk[0] = 0xff,                      // not STUN/DTLS/RTP
            1 => junk = vec![0x80, 0x60, 0x00, 0x01], // truncated RTP header
            2 => {
                junk.resize(len.max(12), 0);
                junk[0] = 0x80;
                junk[1] = 0x60; // RTP-shaped, from an unknown address
            }
            3 => junk = stun_binding_request("nobody:evil", true),
            4 => junk = stun_binding_request(&format!("{server_ufrag}:evil"), true),
            _ => junk.truncate(3),
        }
        attacker.send_to(&junk, server).unwrap();
    }
    expect_complete_delivery(&publisher.peer, &sub.peer, "a", "v", 150)
        .await
        .expect("the live call loses nothing");
    let stats = worker.lock().await.stats().await;
    let s = &stats.shards[0];
    assert!(s.dropped_malformed >= 200, "{s:?}");
    assert!(s.dropped_unknown_source >= 100, "{s:?}");
    assert!(s.stun_rejected >= 100, "{s:?}");
    assert!(s.stun_unanswered >= 100, "{s:?}");
    assert_eq!(s.session_panics, 0);
}

/// A backlog larger than one receive pass (the shard reads at most 256 datagrams before
/// other work gets a turn) is drained without new arrivals: the socket is edge-triggered,
/// so a shard that waited for the next event would stall with a full buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_backlog_is_drained_without_new_arrivals() {
    let (worker, _router) = setup(1).await;
    let server = worker.lock().await.local_addrs()[0];
    worker
        .lock()
        .await
        .pause_shards_for_tests(Duration::from_millis(500));
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // Not STUN, DTLS, RTP or RTCP: each is read, classified and counted as malformed.
    for _ in 0..1500 {
        let _ = sender.send_to(&[0xffu8; 8], server);
    }
    let queued = udp_rx_queue(server.port()).expect("/proc/net/udp lists the shard socket");
    assert!(queued > 0, "datagrams queued while the shard is paused");
    let drained = wait_until(Duration::from_secs(5), || {
        udp_rx_queue(server.port()) == Some(0)
    })
    .await;
    let stats = worker.lock().await.stats().await;
    let s = &stats.shards[0];
    assert!(drained, "the backlog stays in the socket: {s:?}");
    assert!(
        s.dropped_malformed > 256,
        "more than one receive pass was queued and read: {s:?}"
    );
}

/// Overload: a shard that falls far behind (here: paused for 600 ms while a call goes on,
/// so its socket holds 600 ms of packets, more than `SHED_ALWAYS_AFTER`) sheds the video it
/// is late with instead of delivering it all late, keeps every audio packet, counts what it
/// shed, and the subscriber's video resumes at a keyframe. (A growing backlog, the other
/// trigger, needs more load than a test should make; `loadgen` measures it.) Linux's tuned
/// path only: the portable one has no receive timestamps to see the backlog with.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_late_video_keeps_audio_and_resumes_at_a_keyframe() {
    let (worker, router) = setup(1).await;
    let publisher = connect_publisher(&router, Some("a"), Some("v"), PeerConfig::default()).await;
    let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
    sub.subscribe("a").await;
    sub.subscribe("v").await;
    publisher
        .peer
        .start_sending(100, 50, Duration::from_millis(500));
    assert!(
        wait_until(Duration::from_secs(10), || sub.peer.received("v").packets
            >= 50
            && sub.peer.received("a").packets >= 25)
        .await,
        "the call runs: {:?}",
        sub.peer.received("v")
    );
    worker
        .lock()
        .await
        .pause_shards_for_tests(Duration::from_millis(600));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = worker.lock().await.stats().await.shards[0].clone();
        if s.overload_pauses > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "late video was shed: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let keyframes_after_shedding = sub.peer.received("v").keyframes;
    let video_after_shedding = sub.peer.received("v").distinct_counters;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let v = sub.peer.received("v");
            v.keyframes > keyframes_after_shedding
                && v.distinct_counters > video_after_shedding + 50
        })
        .await,
        "video resumes at a keyframe: {:?}",
        sub.peer.received("v")
    );
    publisher.peer.stop_sending();
    let sent = publisher.peer.stats();
    assert!(
        wait_until(Duration::from_secs(10), || sub
            .peer
            .received("a")
            .distinct_counters
            == sent.sent_audio)
        .await,
        "every audio packet arrives: {}/{}",
        sub.peer.received("a").distinct_counters,
        sent.sent_audio
    );
    let v = sub.peer.received("v");
    assert!(v.distinct_counters < sent.sent_video, "{v:?}");
    assert_eq!(v.corrupt + sub.peer.received("a").corrupt, 0);
    let stats = worker.lock().await.stats().await;
    assert_eq!(stats.shards[0].session_panics, 0);
}

/// Bytes waiting in the receive queue of the 127.0.0.1 UDP socket bound to `port`.
fn udp_rx_queue(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) != Some(&local.as_str()) {
            return None;
        }
        let queues = f.get(4)?; // tx_queue:rx_queue in hex
        u64::from_str_radix(queues.split(':').nth(1)?, 16).ok()
    })
}

/// 8. Malformed or hostile SDP gets errors; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sdp_is_rejected() {
    use rheomesh::config::WebRTCTransportConfig;
    use rheomesh::error::{NegotiationError, PublishError, SubscribeError, TransportError};
    use rheomesh::{IceCandidateInit, SessionDescription};

    let (worker, router) = setup(2).await;
    let peer = common::peer::TestPeer::new(PeerConfig::default());
    let real = peer.publish_offer(Some("a"), Some("v"));
    let session_part = real.split("\r\nm=").next().unwrap().to_string() + "\r\n";
    let first_m = real.find("\r\nm=").unwrap() + 2;
    let video_m = &real[real.find("m=video").unwrap()..];

    let mut cases: Vec<(&str, String)> = vec![
        ("garbage", "hello, world".into()),
        ("no media", session_part.clone()),
        (
            "unknown codecs only",
            real.replace("opus/48000", "FOO/48000")
                .replace("VP8/90000", "BAR/90000")
                .replace("VP9/90000", "BAR/90000")
                .replace("H264/90000", "BAR/90000")
                .replace("AV1/90000", "BAR/90000")
                .replace("rtx/90000", "BAZ/90000"),
        ),
        (
            "no fingerprint",
            real.lines()
                .filter(|l| !l.starts_with("a=fingerprint"))
                .collect::<Vec<_>>()
                .join("\r\n")
                + "\r\n",
        ),
        ("bad fingerprint", {
            real.lines()
                .map(|l| {
                    if l.starts_with("a=fingerprint") {
                        "a=fingerprint:sha-256 ZZ:not:hex".to_string()
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\r\n")
                + "\r\n"
        }),
        (
            "oversized",
            format!("{}{}", real, "a=x-junk:".to_string() + &"y".repeat(1 << 20)),
        ),
        ("truncated", real[..first_m + 40].to_string()),
    ];
    let mut many = session_part.clone();
    for i in 0..10_000 {
        many.push_str(&video_m.replace("a=mid:", &format!("a=mid:x{i}")));
    }
    cases.push(("10k m-lines", many));

    for (name, sdp) in cases {
        let t = router
            .create_publish_transport(WebRTCTransportConfig::default())
            .await;
        let r = t.get_answer(SessionDescription::offer(sdp)).await;
        assert!(r.is_err(), "{name}: expected an error, got an answer");
        t.close().await;
    }
    // Wrong description type, unknown ids, bad candidates, answers without offers.
    let t = router
        .create_publish_transport(WebRTCTransportConfig::default())
        .await;
    assert_eq!(
        t.get_answer(SessionDescription::answer(real.clone()))
            .await
            .unwrap_err(),
        NegotiationError::WrongType { expected: "offer" }
    );
    t.get_answer(SessionDescription::offer(real.clone()))
        .await
        .expect("real offer works");
    assert!(matches!(
        t.try_publish("nope").await,
        Err(PublishError::UnknownTrack(_))
    ));
    assert!(t.publish("nope").await.error().is_some());
    assert!(matches!(
        t.add_ice_candidate(IceCandidateInit {
            candidate: "candidate:garbage".into(),
            ..Default::default()
        })
        .await,
        Err(TransportError::InvalidCandidate(_))
    ));
    let s = router
        .create_subscribe_transport(WebRTCTransportConfig::default())
        .await;
    assert!(matches!(
        s.subscribe("nope").await,
        Err(SubscribeError::UnknownPublisher(_))
    ));
    assert_eq!(
        s.set_answer(SessionDescription::answer(real.clone()))
            .await
            .unwrap_err(),
        NegotiationError::NoPendingOffer
    );
    t.close().await;
    s.close().await;

    // The server still serves a normal call, and nothing panicked.
    let publisher = connect_publisher(&router, None, Some("v"), PeerConfig::default()).await;
    let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
    sub.subscribe("v").await;
    publisher.peer.start_sending(50, 0, Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(10), || sub.peer.received("v").packets
            >= 20)
        .await
    );
    let stats = worker.lock().await.stats().await;
    assert_eq!(stats.total(|s| s.session_panics), 0);
}

/// A panic inside one session closes that session only; the shard keeps serving the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_panic_is_contained() {
    // The injected panic is expected: print nothing for it. With RUST_BACKTRACE set, the
    // default hook's backtrace stalls the shard for ≈ 300 ms in a debug build, long enough
    // for overload shedding to drop the other call's late video by design.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"injected by a test") {
            default_hook(info);
        }
    }));
    let (worker, router) = setup(1).await;
    let victim = connect_publisher(&router, None, Some("victim"), PeerConfig::default()).await;
    let survivor = connect_publisher(&router, Some("a"), Some("v"), PeerConfig::default()).await;
    let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
    sub.subscribe("a").await;
    sub.subscribe("v").await;
    sub.subscribe("victim").await;
    survivor.peer.start_sending(50, 50, Duration::from_secs(1));
    victim.peer.start_sending(50, 0, Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(10), || sub
            .peer
            .received("victim")
            .packets
            > 10)
        .await
    );

    victim.transport.inject_panic_for_tests().await;
    assert!(
        wait_until(Duration::from_secs(5), || victim.publishers[0].is_closed()).await,
        "the panicked session's publisher is closed"
    );
    assert!(wait_until(Duration::from_secs(5), || sub.subscribers[2].is_closed()).await);

    expect_complete_delivery(&survivor.peer, &sub.peer, "a", "v", 150)
        .await
        .expect("the other call loses nothing");
    let stats = worker.lock().await.stats().await;
    assert_eq!(stats.total(|s| s.session_panics), 1);
    assert_eq!(
        router.publisher_ids(),
        vec!["a".to_string(), "v".to_string()]
    );
}

/// Keyframe requests (PLI) from a subscriber reach the publisher, throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_pli_reaches_publisher_throttled() {
    let (_worker, router) = setup(2).await;
    // Keyframes only on request: no periodic keyframe during the test.
    let (publisher, sub) = video_on_request(&router).await;
    assert!(
        wait_until(Duration::from_secs(10), || sub.peer.received("v").keyframes
            >= 1
            && sub.peer.received("v").packets >= 20)
        .await
    );
    let before = publisher.peer.stats().keyframe_requests;
    let kf_before = sub.peer.received("v").keyframes;
    for _ in 0..10 {
        assert!(sub.peer.request_keyframe("v"));
    }
    assert!(
        wait_until(Duration::from_secs(5), || publisher
            .peer
            .stats()
            .keyframe_requests
            > before)
        .await,
        "PLI reached the publisher"
    );
    // The publisher answers with a keyframe, which reaches the subscriber.
    assert!(
        wait_until(Duration::from_secs(5), || sub.peer.received("v").keyframes
            > kf_before)
        .await
    );
    let extra = publisher.peer.stats().keyframe_requests - before;
    assert!(extra <= 2, "10 PLIs in a burst became {extra} requests");
}

/// Subscribers get RTCP sender reports mapping the forwarded RTP time to wallclock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_receive_sender_reports() {
    let (_worker, router) = setup(1).await;
    let publisher = connect_publisher(&router, Some("a"), Some("v"), PeerConfig::default()).await;
    let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
    sub.subscribe("a").await;
    sub.subscribe("v").await;
    publisher.peer.start_sending(50, 50, Duration::from_secs(1));
    let ok = wait_until(Duration::from_secs(15), || {
        sub.peer.received("a").sender_reports >= 1 && sub.peer.received("v").sender_reports >= 1
    })
    .await;
    assert!(
        ok,
        "sender reports: audio {:?} video {:?}",
        sub.peer.received("a"),
        sub.peer.received("v")
    );
    for (track, rate) in [("a", 48_000f64), ("v", 90_000f64)] {
        let t = sub.peer.received(track);
        let (ntp, rtp) = t.last_sr.unwrap();
        let age = std::time::SystemTime::now()
            .duration_since(ntp)
            .unwrap_or_default();
        assert!(
            age < Duration::from_secs(5),
            "{track}: SR wallclock is current ({age:?})"
        );
        // The SR's RTP time is in the subscriber's (rewritten) timeline: near the packets.
        let last = t.last_rtp_ts.unwrap() as i64;
        let diff = ((rtp as u32) as i64 - last).rem_euclid(1 << 32);
        let diff = diff.min((1 << 32) - diff) as f64 / rate;
        assert!(
            diff < 6.0,
            "{track}: SR RTP time {rtp} is {diff:.2}s from the stream ({last})"
        );
    }
}

/// A `stun:` ICE server makes the shard learn its server-reflexive address and announce it;
/// `announced_ips` are announced too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_and_announced_ips_become_candidates() {
    use rheomesh::config::{RTCIceServer, WebRTCTransportConfig};
    let (_worker, router) = setup(1).await;
    let stun = common::sfu::fake_stun_server("127.0.0.55".parse().unwrap());
    let mut cfg = WebRTCTransportConfig::default();
    cfg.configuration.ice_servers = vec![RTCIceServer {
        urls: vec![format!("stun:{stun}")],
        ..Default::default()
    }];
    cfg.announced_ips = vec!["127.0.0.77".parse().unwrap()];
    let t = router.create_publish_transport(cfg).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    t.on_ice_candidate(Box::new(move |c| {
        let _ = tx.send(c.to_json().unwrap().candidate);
    }))
    .await;
    let peer = common::peer::TestPeer::new(PeerConfig::default());
    t.get_answer(rheomesh::SessionDescription::offer(
        peer.publish_offer(None, Some("v")),
    ))
    .await
    .unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !(seen
        .iter()
        .any(|c: &String| c.contains("127.0.0.55") && c.contains("srflx"))
        && seen.iter().any(|c| c.contains("127.0.0.77"))
        && seen
            .iter()
            .any(|c| c.contains("127.0.0.1") && c.contains("host")))
    {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(c)) => seen.push(c),
            _ => panic!("candidates seen: {seen:?}"),
        }
    }
}

/// An answer that parses but does not fit the offer is refused before it can touch the
/// session: the offer stays outstanding, the right answer still applies, and negotiation
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answer_is_refused_and_the_offer_stays_answerable() {
    use rheomesh::error::NegotiationError;
    use rheomesh::SessionDescription;
    let (_worker, router) = setup(1).await;
    let publisher = connect_publisher(&router, Some("a"), Some("v"), PeerConfig::default()).await;
    let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
    sub.subscribe("a").await;
    let (_v, offer) = sub.transport.subscribe("v").await.expect("subscribe v");
    // Well-formed SDPs of the wrong shape: another peer's offer (other mids), and the right
    // peer's answer with other ICE credentials.
    let foreign = publisher.peer.publish_offer(Some("x"), Some("y"));
    let err = sub
        .transport
        .set_answer(SessionDescription::answer(foreign))
        .await
        .unwrap_err();
    assert!(matches!(err, NegotiationError::InvalidSdp(_)), "{err:?}");
    let answer = sub.peer.accept_offer(&offer.sdp).expect("peer answers");
    let ufrag = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .trim_end()
        .to_string();
    let forged = answer.replace(&format!("a=ice-ufrag:{ufrag}"), "a=ice-ufrag:zzzz");
    let err = sub
        .transport
        .set_answer(SessionDescription::answer(forged))
        .await
        .unwrap_err();
    assert!(matches!(err, NegotiationError::InvalidSdp(_)), "{err:?}");
    sub.transport
        .set_answer(SessionDescription::answer(answer))
        .await
        .expect("the right answer still applies");
    publisher.peer.start_sending(50, 50, Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(10), || sub.peer.received("v").packets
            >= 20)
        .await,
        "{:?}",
        sub.peer.received("v")
    );
}
