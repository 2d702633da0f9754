//! Integration tests of the SFU with real str0m peers over real UDP on 127.0.0.1.
//! All wait on conditions with deadlines; none sleeps for a fixed time.

mod common;

use std::time::Duration;

use common::peer::PeerConfig;
use common::sfu::{connect_publisher, connect_subscriber, setup, wait_until};

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
    assert!(wait_until(Duration::from_secs(20), || publisher.peer.stats().sent_video >= 150).await);
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
        stats.shards.iter().all(|s| s.sessions > 0 && s.rtp_forwarded > 0),
        "both shards carry subscribers: {stats:?}"
    );
}

/// 3. A late joiner makes the server ask the publisher for a keyframe within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_triggers_keyframe_request() {
    let (_worker, router) = setup(2).await;
    let publisher = connect_publisher(&router, None, Some("v"), PeerConfig::default()).await;
    let mut first = connect_subscriber(&router, PeerConfig::default()).await;
    first.subscribe("v").await;
    // Keyframes only on request: no periodic keyframe during the test.
    publisher.peer.start_sending(50, 0, Duration::from_secs(600));
    assert!(wait_until(Duration::from_secs(10), || first.peer.received("v").packets >= 20).await);
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
    assert!(delay <= Duration::from_secs(1), "keyframe requested after {delay:?}");
    // And the late joiner decodes from that keyframe on.
    assert!(
        wait_until(Duration::from_secs(5), || late.peer.received("v").keyframes >= 1
            && late.peer.received("v").packets >= 10)
        .await,
        "late joiner receives video starting at a keyframe: {:?}",
        late.peer.received("v")
    );
}

async fn loss_run(pub_cfg: PeerConfig, sub_cfg: PeerConfig) {
    let (_worker, router) = setup(1).await;
    let publisher = connect_publisher(&router, None, Some("v"), pub_cfg).await;
    let mut sub = connect_subscriber(&router, sub_cfg).await;
    sub.subscribe("v").await;
    publisher.peer.start_sending(100, 0, Duration::from_secs(1));
    assert!(wait_until(Duration::from_secs(20), || publisher.peer.stats().sent_video >= 500).await);
    publisher.peer.stop_sending();
    let sent = publisher.peer.stats().sent_video;
    let need = (sent as f64 * 0.995).ceil() as u64;
    let ok = wait_until(Duration::from_secs(10), || sub.peer.received("v").distinct_counters >= need).await;
    let got = sub.peer.received("v");
    let dropped = publisher.peer.stats().dropped_out + sub.peer.stats().dropped_in;
    assert!(dropped > 0, "loss was injected");
    assert!(ok, "delivered {}/{} after repair (need {need})", got.distinct_counters, sent);
    assert_eq!(got.corrupt, 0);
}

/// 4a. 5% loss publisher → server is repaired by the server's NACKs and the publisher's RTX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_publisher_to_server_is_repaired() {
    loss_run(
        PeerConfig {
            loss_out: 0.05,
            seed: 7,
            ..Default::default()
        },
        PeerConfig::default(),
    )
    .await;
}

/// 4b. 5% loss server → subscriber is repaired from the server's RTX cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_server_to_subscriber_is_repaired() {
    loss_run(
        PeerConfig::default(),
        PeerConfig {
            loss_in: 0.05,
            seed: 11,
            ..Default::default()
        },
    )
    .await;
}
