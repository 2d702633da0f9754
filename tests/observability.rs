//! Transport and worker statistics with real str0m peers over real UDP on 127.0.0.1: the
//! selected candidate pair, traffic that grows and matches what the peers sent and received,
//! keyframe requests and NACKs counted on both transports, and JSON export.
//! All wait on conditions with deadlines; none sleeps for a fixed time.

mod common;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::peer::{PeerConfig, AUDIO_PAYLOAD_LEN, VIDEO_PAYLOAD_LEN};
use common::sfu::{connect_publisher, connect_subscriber, setup, video_on_request, wait_until};
use rheomesh::error::TransportError;
use rheomesh::stats::TransportStats;
use rheomesh::transport::TransportState;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Ask for stats every 20 ms until `ok` holds or `timeout` passes; returns the last snapshot
/// and whether `ok` held.
async fn wait_stats<F, Fut>(
    timeout: Duration,
    mut stats: F,
    ok: impl Fn(&TransportStats) -> bool,
) -> (TransportStats, bool)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<TransportStats, TransportError>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let s = stats().await.expect("transport is open");
        if ok(&s) {
            return (s, true);
        }
        if tokio::time::Instant::now() >= deadline {
            return (s, false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_close(what: &str, got: u64, want: u64, tolerance: f64) {
    let diff = (got as f64 - want as f64).abs();
    assert!(
        diff <= want as f64 * tolerance + 2.0,
        "{what}: {got}, expected about {want}"
    );
}

/// A publisher and a subscriber in a call: both transports show a selected pair on
/// 127.0.0.1 (the shard's socket and the peer's), RTP in on the publish transport and out
/// on the subscribe transport that grows and matches what the peers sent and received,
/// bitrates, an RTT, and the whole snapshot (and the worker's) serializes to JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_stats_follow_a_call() {
    let (worker, router) = setup(1).await;
    let shard_addr = worker.lock().await.local_addrs()[0];
    let publisher = connect_publisher(&router, Some("a"), Some("v"), PeerConfig::default()).await;
    let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
    sub.subscribe("a").await;
    sub.subscribe("v").await;
    let pt = publisher.transport.clone();
    let st = sub.transport.clone();

    // Before media: connected, on the expected addresses, nothing forwarded yet.
    for (t, peer) in [
        (pt.stats().await.unwrap(), &publisher.peer),
        (st.stats().await.unwrap(), &sub.peer),
    ] {
        assert_eq!(t.state, TransportState::Connected, "{t:?}");
        let pair = t.selected_pair.clone().expect("a selected candidate pair");
        assert_eq!(pair.local.ip(), LOCALHOST, "{pair:?}");
        assert_eq!(pair.remote.ip(), LOCALHOST, "{pair:?}");
        assert_eq!(pair.local, shard_addr, "the shard's socket");
        assert_eq!(pair.remote, peer.local_addr(), "the peer's socket");
        assert!(
            t.datagrams_in > 0 && t.bytes_in > 0,
            "ICE and DTLS came in: {t:?}"
        );
        assert!(
            t.datagrams_out > 0 && t.bytes_out > 0,
            "ICE and DTLS went out: {t:?}"
        );
    }
    assert_eq!(pt.stats().await.unwrap().transport_id, pt.id());
    assert_eq!(st.stats().await.unwrap().transport_id, st.id());

    publisher.peer.start_sending(50, 50, Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(15), || {
            sub.peer.received("v").packets >= 50 && sub.peer.received("a").packets >= 50
        })
        .await,
        "media flows"
    );
    // Counters grow while media flows.
    let p1 = pt.stats().await.unwrap();
    let s1 = st.stats().await.unwrap();
    assert!(p1.rtp_packets_in > 0 && p1.rtp_bytes_in > 0, "{p1:?}");
    assert!(s1.rtp_packets_out > 0 && s1.rtp_bytes_out > 0, "{s1:?}");
    assert_eq!(
        p1.rtp_packets_out, 0,
        "a publish transport sends no media: {p1:?}"
    );
    assert_eq!(
        s1.rtp_packets_in, 0,
        "a subscribe transport receives no media: {s1:?}"
    );
    let (p2, grew) = wait_stats(
        Duration::from_secs(5),
        || pt.stats(),
        |p| p.rtp_packets_in > p1.rtp_packets_in && p.bytes_in > p1.bytes_in,
    )
    .await;
    assert!(grew, "publish transport counters grow: {p1:?} then {p2:?}");
    let (s2, grew) = wait_stats(
        Duration::from_secs(5),
        || st.stats(),
        |s| s.rtp_packets_out > s1.rtp_packets_out && s.bytes_out > s1.bytes_out,
    )
    .await;
    assert!(
        grew,
        "subscribe transport counters grow: {s1:?} then {s2:?}"
    );
    // Rates are computed over one-second windows.
    let (p3, ok) = wait_stats(Duration::from_secs(5), || pt.stats(), |p| p.bitrate_in > 0).await;
    assert!(ok, "publish transport has a receive bitrate: {p3:?}");
    // 50 pps of ≈1 KB video plus 50 pps of ≈100 B audio, with headers: ≈ 0.5 Mbit/s.
    assert!(
        (200_000..2_000_000).contains(&p3.bitrate_in),
        "publish bitrate in: {p3:?}"
    );
    let (s3, ok) = wait_stats(Duration::from_secs(5), || st.stats(), |s| s.bitrate_out > 0).await;
    assert!(ok, "subscribe transport has a send bitrate: {s3:?}");
    // Receiver reports from the subscriber give the subscribe transport an RTT.
    let (s4, ok) = wait_stats(
        Duration::from_secs(10),
        || st.stats(),
        |s| s.rtt_ms.is_some(),
    )
    .await;
    assert!(ok, "subscribe transport has an RTT: {s4:?}");
    assert!(s4.rtt_ms.unwrap() < 1000.0, "loopback RTT: {s4:?}");

    // Stop, let everything arrive, then compare with what the peers counted.
    publisher.peer.stop_sending();
    let sent = publisher.peer.stats();
    let sent_packets = sent.sent_video + sent.sent_audio;
    let (p, ok) = wait_stats(
        Duration::from_secs(10),
        || pt.stats(),
        |p| p.rtp_packets_in >= sent_packets,
    )
    .await;
    assert!(ok, "every sent packet counted in: {p:?}, sent {sent:?}");
    assert_close("RTP packets in", p.rtp_packets_in, sent_packets, 0.01);
    let video_len = VIDEO_PAYLOAD_LEN as u64;
    let audio_len = AUDIO_PAYLOAD_LEN as u64;
    let payload = sent.sent_video * video_len + sent.sent_audio * audio_len;
    assert_close("RTP payload bytes in", p.rtp_bytes_in, payload, 0.01);
    assert!(
        p.bytes_in > p.rtp_bytes_in,
        "UDP bytes include headers: {p:?}"
    );
    let received = || sub.peer.received("v").packets + sub.peer.received("a").packets;
    let (s, ok) = wait_stats(
        Duration::from_secs(10),
        || st.stats(),
        |s| s.rtp_packets_out > 0 && received() >= s.rtp_packets_out,
    )
    .await;
    assert!(
        ok,
        "the subscriber got what was sent: {s:?}, received {}",
        received()
    );
    assert_close("RTP packets out", s.rtp_packets_out, received(), 0.01);
    assert!(
        s.rtp_packets_out <= p.rtp_packets_in,
        "nothing out that did not come in: {s:?} {p:?}"
    );
    assert!(s.bytes_out > s.rtp_bytes_out, "{s:?}");
    assert_eq!(s.fraction_lost_out.unwrap_or(0.0), 0.0, "no loss: {s:?}");
    assert_eq!(s.packets_lost_out, 0, "no loss: {s:?}");

    // Export.
    let json = serde_json::to_string(&s).expect("stats serialize");
    eprintln!("publish: {}", serde_json::to_string(&p).unwrap());
    eprintln!("subscribe: {json}");
    assert!(json.contains("\"selected_pair\""), "{json}");
    assert!(json.contains("\"state\":\"connected\""), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["rtp_packets_out"].as_u64(), Some(s.rtp_packets_out));
    assert_eq!(
        v["selected_pair"]["remote"].as_str(),
        Some(sub.peer.local_addr().to_string().as_str())
    );
    let w = worker.lock().await.stats().await;
    let shard = &w.shards[0];
    assert!(shard.bytes_in >= p.bytes_in + s.bytes_in, "{shard:?}");
    assert!(shard.bytes_out >= p.bytes_out + s.bytes_out, "{shard:?}");
    assert!(shard.rtp_bytes_forwarded > 0, "{shard:?}");
    let json = serde_json::to_string(&w).expect("worker stats serialize");
    assert!(json.contains("\"rtp_bytes_forwarded\""), "{json}");

    // Closed transports answer with an error, not stale numbers.
    st.close().await;
    assert_eq!(st.stats().await, Err(TransportError::Closed));
}

/// A keyframe request from the subscriber shows as a PLI received on its subscribe
/// transport and as a PLI sent on the publisher's transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_stats_count_keyframe_requests() {
    let (_worker, router) = setup(2).await;
    // Keyframes only on request: no periodic keyframe during the test.
    let (publisher, sub) = video_on_request(&router).await;
    assert!(
        wait_until(Duration::from_secs(10), || sub.peer.received("v").keyframes
            >= 1)
        .await,
        "the first keyframe arrives"
    );
    let pt = publisher.transport.clone();
    let st = sub.transport.clone();
    let pub_before = pt.stats().await.unwrap();
    let sub_before = st.stats().await.unwrap();
    let requests_before = publisher.peer.stats().keyframe_requests;
    // The server asked for the first keyframe itself.
    assert!(
        pub_before.plis_sent + pub_before.firs_sent >= 1,
        "{pub_before:?}"
    );
    assert_eq!(sub_before.plis_received + sub_before.firs_received, 0);

    // Requests towards the publisher are throttled: ask again until one goes through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (mut p, mut s);
    loop {
        assert!(sub.peer.request_keyframe("v"));
        let wait = Duration::from_millis(500);
        (s, _) = wait_stats(wait, || st.stats(), |s| s.plis_received > 0).await;
        (p, _) = wait_stats(wait, || pt.stats(), |p| p.plis_sent > pub_before.plis_sent).await;
        if (s.plis_received > 0 && p.plis_sent > pub_before.plis_sent)
            || tokio::time::Instant::now() >= deadline
        {
            break;
        }
    }
    assert!(
        s.plis_received >= 1,
        "PLI received from the subscriber: {s:?}"
    );
    assert!(
        p.plis_sent > pub_before.plis_sent,
        "PLI sent to the publisher: before {pub_before:?}, after {p:?}"
    );
    assert_eq!(s.plis_sent + s.nacks_sent, 0, "{s:?}");
    assert_eq!(p.plis_received + p.nacks_received, 0, "{p:?}");
    assert!(
        wait_until(Duration::from_secs(5), || publisher
            .peer
            .stats()
            .keyframe_requests
            > requests_before)
        .await,
        "the publisher saw the request"
    );
}

/// Under the loss-injection of the NACK/RTX tests, NACKs are counted: sent by the publish
/// transport when the publisher's packets are lost, received by the subscribe transport
/// when packets to the subscriber are lost (and the retransmissions count as packets out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_stats_count_nacks_under_loss() {
    let (_worker, router) = setup(1).await;
    let lossy = |loss_in, loss_out, seed| PeerConfig {
        loss_in,
        loss_out,
        seed,
    };
    let publisher = connect_publisher(&router, None, Some("v"), lossy(0.0, 0.05, 7)).await;
    let mut sub = connect_subscriber(&router, lossy(0.05, 0.0, 11)).await;
    sub.subscribe("v").await;
    publisher.peer.start_sending(100, 0, Duration::from_secs(1));
    let pt = publisher.transport.clone();
    let st = sub.transport.clone();
    let (p, ok) = wait_stats(Duration::from_secs(20), || pt.stats(), |p| p.nacks_sent > 0).await;
    assert!(ok, "publish transport sent NACKs: {p:?}");
    let (s, ok) = wait_stats(
        Duration::from_secs(20),
        || st.stats(),
        |s| s.nacks_received > 0,
    )
    .await;
    assert!(ok, "subscribe transport received NACKs: {s:?}");
    assert!(
        wait_until(Duration::from_secs(10), || publisher
            .peer
            .stats()
            .dropped_out
            > 0
            && sub.peer.stats().dropped_in > 0)
        .await,
        "loss was injected on both legs"
    );
    assert_eq!(p.nacks_received, 0, "{p:?}");
    assert_eq!(s.nacks_sent, 0, "{s:?}");
    // Retransmissions to the subscriber are packets out too: more than it kept.
    publisher.peer.stop_sending();
    let (s, ok) = wait_stats(
        Duration::from_secs(10),
        || st.stats(),
        |s| s.rtp_packets_out > sub.peer.received("v").distinct_counters,
    )
    .await;
    assert!(
        ok,
        "retransmissions counted: {s:?}, distinct received {}",
        sub.peer.received("v").distinct_counters
    );
    let json = serde_json::to_string(&p).unwrap();
    assert!(json.contains("\"nacks_sent\""), "{json}");
}
