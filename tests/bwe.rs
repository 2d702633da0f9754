//! Bandwidth estimation and allocation with real str0m peers over UDP on 127.0.0.1 (issue
//! 12, test 4): a subscriber behind a shaped downlink (an in-process bottleneck with a 50 ms
//! drop-tail queue in front of its peer, `TestPeer::set_downlink`; this kernel has no
//! netem, see TESTING.md) gets the simulcast layer its link carries, as the server's
//! transport-wide congestion control estimates it, while another subscriber of the same
//! track on an open link keeps the top layer. Every wait has a deadline.
//!
//! The publisher sends three encodings at 50 packets/s each, of 120, 280 and 480 kbit/s of
//! payload (about 175, 330 and 530 kbit/s on the wire), and an audio track of 8 kbit/s of
//! payload (about 45 kbit/s on the wire: headers dominate small packets).

mod common;

use std::time::{Duration, Instant};

use common::peer::PeerConfig;
use common::sfu::{
    connect_publisher, connect_simulcast_publisher, connect_subscriber, setup_with, wait_until,
    SimulcastPub, Sub,
};
use rheomesh::config::{MediaConfig, DEFAULT_INITIAL_BITRATE_BPS};
use rheomesh::router::Router;
use rheomesh::subscriber::Subscriber;

/// Offer order: (rid, keyframe size), and the payload size of each encoding's packets.
const ENCODINGS: [(&str, (u16, u16)); 3] =
    [("h", (1280, 720)), ("l", (320, 180)), ("m", (640, 360))];
const PAYLOAD: [usize; 3] = [1200, 300, 700];
/// The local track (offer order) of each rank.
const TRACK_OF_RANK: [usize; 3] = [1, 2, 0];

async fn simulcast_publisher(router: &Router) -> SimulcastPub {
    let publisher = connect_simulcast_publisher(router, "v", &ENCODINGS).await;
    for (i, len) in PAYLOAD.iter().enumerate() {
        publisher.peer.set_payload_len(i, *len);
    }
    publisher.peer.start_sending(50, 0, Duration::from_secs(2));
    publisher
}

/// The spatial layer `subscriber` forwards now (`None`: paused or not started).
fn spatial(subscriber: &Subscriber) -> Option<u8> {
    subscriber.layers().current.map(|l| l.spatial)
}

/// Packets of track `id` the peer received in the last `window`, sampled now and after it.
async fn received_over(sub: &Sub, id: &str, window: Duration) -> u64 {
    let before = sub.peer.received(id).packets;
    tokio::time::sleep(window).await;
    sub.peer.received(id).packets - before
}

async fn estimate(sub: &Sub) -> Option<u64> {
    sub.transport
        .stats()
        .await
        .ok()
        .and_then(|s| s.bandwidth_estimate)
}

/// Wait for `cond` on the shaped subscriber's layer, printing the estimate on failure.
async fn reaches(
    sub: &Sub,
    subscriber: &Subscriber,
    within: Duration,
    what: &str,
    cond: impl Fn(Option<u8>) -> bool,
) -> Duration {
    let start = Instant::now();
    let ok = wait_until(within, || cond(spatial(subscriber))).await;
    let took = start.elapsed();
    let stats = sub.transport.stats().await.ok();
    assert!(
        ok,
        "{what} within {within:?}: layer {:?}, estimate {:?}, allocated {:?}, desired {:?}",
        subscriber.layers(),
        stats.as_ref().and_then(|s| s.bandwidth_estimate),
        stats.as_ref().and_then(|s| s.bandwidth_allocated),
        stats.as_ref().and_then(|s| s.bandwidth_desired),
    );
    eprintln!(
        "{what}: after {took:?} (estimate {:?} bit/s)",
        estimate(sub).await
    );
    took
}

/// The subscriber on the open link is on the top layer, or back on it within 15 s: its
/// estimate, of a loopback link on a loaded two-core machine, dips now and then (one run
/// in about twenty saw it at 395 kbit/s and the middle layer), and a forced downgrade holds
/// upgrades for 10 s (`CONGESTION_HOLD`).
async fn keeps_top(sub: &Sub, subscriber: &Subscriber) {
    if spatial(subscriber) == Some(2) {
        return;
    }
    let start = Instant::now();
    let was = subscriber.layers();
    if wait_until(Duration::from_secs(15), || spatial(subscriber) == Some(2)).await {
        eprintln!(
            "the other subscriber was off the top ({was:?}), back after {:?}",
            start.elapsed()
        );
        return;
    }
    let stats = sub.transport.stats().await.ok();
    panic!(
        "the other subscriber keeps the top: {:?}, estimate {:?}, allocated {:?}, desired {:?}",
        subscriber.layers(),
        stats.as_ref().and_then(|s| s.bandwidth_estimate),
        stats.as_ref().and_then(|s| s.bandwidth_allocated),
        stats.as_ref().and_then(|s| s.bandwidth_desired),
    );
}

/// Test 4 of the issue: the shaped subscriber reaches the top layer on an open link, falls
/// to the lowest within 10 s at 300 kbit/s with its audio uninterrupted, pauses its video at
/// 60 kbit/s while audio goes on, and climbs back to the top within 20 s at 5 Mbit/s; the
/// other subscriber of the track keeps the top layer throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shaped_subscriber_gets_the_layer_its_link_carries() {
    let mut media = MediaConfig::default();
    media.bandwidth_estimation = Some(DEFAULT_INITIAL_BITRATE_BPS);
    let (worker, router) = setup_with(2, media).await;
    let publisher = simulcast_publisher(&router).await;
    let audio = connect_publisher(&router, Some("a"), None, PeerConfig::default()).await;
    audio.peer.set_payload_len(0, 20);
    audio.peer.start_sending(0, 50, Duration::from_secs(600));

    let mut shaped = connect_subscriber(&router, PeerConfig::default()).await;
    let video = shaped.subscribe("v").await;
    shaped.subscribe("a").await;
    let mut open = connect_subscriber(&router, PeerConfig::default()).await;
    let other = open.subscribe("v").await;

    // Open link: the estimate starts at 300 kbit/s (the lowest layer and audio) and grows
    // by probing until the top encoding fits.
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(30) {
        last = estimate(&shaped).await;
        if spatial(&video) == Some(2) && last.is_some_and(|e| e > 560_000) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        spatial(&video) == Some(2) && last.is_some_and(|e| e > 560_000),
        "open link: the top layer on an estimate that carries it within 30 s: {:?}, estimate {last:?}",
        video.layers()
    );
    eprintln!(
        "open link: top layer after {:?} (estimate {last:?})",
        start.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(10), || spatial(&other) == Some(2)).await,
        "the other subscriber is on the top layer: {:?}",
        other.layers()
    );

    // 300 kbit/s: the lowest layer within 10 s, audio uninterrupted.
    shaped.peer.set_downlink(Some(300_000));
    let audio_before = shaped.peer.received("a").packets;
    let shaped_at = Instant::now();
    let mut reaction = Vec::new();
    while shaped_at.elapsed() < Duration::from_secs(10) && spatial(&video) != Some(0) {
        let st = shaped.transport.stats().await.ok();
        reaction.push((
            shaped_at.elapsed().as_millis(),
            spatial(&video),
            st.as_ref().and_then(|s| s.bandwidth_estimate),
            st.as_ref().and_then(|s| s.bandwidth_loss_cap),
            st.as_ref().and_then(|s| s.bandwidth_allocated),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "reaction to 300 kbit/s: {:?} (ms, layer, estimate, loss cap, allocated): {reaction:?}",
        shaped_at.elapsed()
    );
    reaches(
        &shaped,
        &video,
        Duration::from_secs(1),
        "300 kbit/s: lowest layer within 10 s",
        |l| l == Some(0),
    )
    .await;
    // It stays there, and only the lowest encoding arrives (after 2 s, when the repairs of
    // what the bottleneck dropped while the top one flowed are over: they are packets of
    // the old encoding).
    let audio_settled = shaped.peer.received("a").packets;
    let settled_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let low = TRACK_OF_RANK[0];
    let before = shaped.peer.received("v");
    let (audio_rx0, audio_tx0) = (
        shaped.peer.received("a").packets,
        audio.peer.sent(0).packets,
    );
    let mut trace = Vec::new();
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(3) {
        let st = shaped.transport.stats().await.ok();
        let rtx = worker.lock().await.stats().await.total(|s| s.rtx_sent);
        trace.push((
            (
                rtx,
                shaped.peer.downlink_dropped(),
                st.as_ref().map(|s| (s.datagrams_out, s.bytes_out)),
            ),
            window.elapsed().as_millis(),
            spatial(&video),
            st.as_ref().and_then(|s| s.bandwidth_estimate),
            st.as_ref().and_then(|s| s.bandwidth_allocated),
            st.as_ref()
                .map(|s| (s.bitrate_out, s.rtp_packets_out, s.nacks_received)),
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = shaped.peer.received("v");
    let (audio_rx1, audio_tx1) = (
        shaped.peer.received("a").packets,
        audio.peer.sent(0).packets,
    );
    eprintln!("at 300 kbit/s ((rtx sent, bottleneck drops, (datagrams out, bytes out)), ms, layer, estimate, allocated, (bitrate out, rtp out, nacks in)): {trace:?}");
    assert_eq!(spatial(&video), Some(0), "stays on the lowest layer");
    let low_packets = after.by_layer[low] - before.by_layer[low];
    assert!(
        low_packets >= 120,
        "the lowest encoding flows at ~50 packets/s: {low_packets} in 3 s"
    );
    for (rank, &t) in TRACK_OF_RANK.iter().enumerate().skip(1) {
        assert!(
            after.by_layer[t] - before.by_layer[t] <= 5,
            "rank {rank} no longer arrives: {after:?}"
        );
    }
    // Audio: what the bottleneck dropped before the server reacted (it was flooded by
    // the top encoding), then nothing lost once settled.
    let transition_sent = (settled_at - shaped_at).as_millis() as u64 * 50 / 1000;
    eprintln!(
        "audio while the server reacted: {} of ~{transition_sent} packets",
        audio_settled - audio_before
    );
    eprintln!(
        "audio in the first 2 s on the lowest layer: {} of ~100 packets",
        audio_rx0 - audio_settled
    );
    // Then, over the 3 s window: what the publisher sent in it (± the one in flight).
    let (audio_got, audio_sent) = (audio_rx1 - audio_rx0, audio_tx1 - audio_tx0);
    assert!(
        audio_got + 2 >= audio_sent,
        "audio uninterrupted on the lowest layer at 300 kbit/s: {audio_got} of {audio_sent} packets"
    );
    keeps_top(&open, &other).await;

    // 60 kbit/s: video pauses, audio continues.
    shaped.peer.set_downlink(Some(60_000));
    reaches(
        &shaped,
        &video,
        Duration::from_secs(15),
        "60 kbit/s: video paused",
        |l| l.is_none(),
    )
    .await;
    // What str0m's pacer queued before the pause still drains at the pacing rate (see
    // the closing note of issue 12): look after it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v0 = shaped.peer.received("v");
    let video_paused = received_over(&shaped, "v", Duration::from_secs(2)).await;
    assert!(
        video_paused <= 5,
        "no video while paused: {video_paused} packets in 2 s: {v0:?} -> {:?}",
        shaped.peer.received("v")
    );
    // Audio goes on, whole: nothing pads the link (the session's automatic padding floor
    // is off, the vendored str0m's patch 14) and nothing else is forwarded.
    let sent0 = audio.peer.sent(0).packets;
    let audio_paused = received_over(&shaped, "a", Duration::from_secs(2)).await;
    let audio_sent = audio.peer.sent(0).packets - sent0;
    eprintln!(
        "audio while video is paused at 60 kbit/s: {audio_paused} of {audio_sent} packets in 2 s"
    );
    assert!(
        audio_paused + 2 >= audio_sent,
        "audio uninterrupted while video is paused at 60 kbit/s: {audio_paused} of {audio_sent} packets"
    );
    keeps_top(&open, &other).await;

    // 5 Mbit/s: back to the top within 20 s.
    shaped.peer.set_downlink(Some(5_000_000));
    reaches(
        &shaped,
        &video,
        Duration::from_secs(20),
        "5 Mbit/s: top layer",
        |l| l == Some(2),
    )
    .await;
    keeps_top(&open, &other).await;
    let dropped = shaped.peer.set_downlink(None);
    eprintln!("the bottleneck dropped {dropped} datagrams");
    let other_rx = open.peer.received("v");
    assert_eq!(
        other_rx.seq_gaps, 0,
        "the open subscriber lost nothing: {other_rx:?}"
    );
    drop(publisher);
}

/// Initial bitrates out of range (0, `u64::MAX`) are clamped: a subscriber of a plain
/// video track (no layers) gets its packets either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_initial_bitrates_are_clamped() {
    for initial in [0, u64::MAX] {
        let mut media = MediaConfig::default();
        media.bandwidth_estimation = Some(initial);
        let (_worker, router) = setup_with(1, media).await;
        let publisher = connect_publisher(&router, None, Some("v"), PeerConfig::default()).await;
        publisher.peer.set_payload_len(0, 300);
        publisher.peer.start_sending(50, 0, Duration::from_secs(1));
        let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
        sub.subscribe("v").await;
        assert!(
            wait_until(Duration::from_secs(10), || sub.peer.received("v").packets
                >= 100)
            .await,
            "initial bitrate {initial}: the subscriber receives the video: {:?}",
            sub.peer.received("v")
        );
        let estimate = estimate(&sub).await;
        assert!(
            estimate.is_some_and(|e| e > 0),
            "initial bitrate {initial}: an estimate: {estimate:?}"
        );
    }
}
