//! Simulcast with real str0m peers over UDP on 127.0.0.1 (issue 12): a publisher sends
//! three encodings by rid, subscribers get the one their preference and the flowing
//! encodings allow, as one continuous stream. Every wait has a deadline.
//!
//! The publisher's encodings count their packets from `i * LAYER_COUNTER_SPAN` (encoding
//! `i` in offer order), so a subscriber's `by_layer` says which encoding each delivered
//! packet came from. The rids are listed high, low, mid and named without meaning: the
//! server must rank them by the picture size their keyframes announce.

mod common;

use std::time::{Duration, Instant};

use common::peer::PeerConfig;
use common::sfu::{
    connect_simulcast_publisher, connect_subscriber, setup, wait_until, SimulcastPub, Sub,
};
use rheomesh::router::Router;
use rheomesh::subscriber::Subscriber;
use rheomesh::testing::ReceivedTrack;

/// Offer order: (rid, keyframe size). Ranks: "b" 0, "c" 1, "a" 2.
const ENCODINGS: [(&str, (u16, u16)); 3] =
    [("a", (1280, 720)), ("b", (320, 180)), ("c", (640, 360))];
/// The local track (offer order) of each rank.
const TRACK_OF_RANK: [usize; 3] = [1, 2, 0];

async fn simulcast_publisher(router: &Router) -> SimulcastPub {
    let publisher = connect_simulcast_publisher(router, "v", &ENCODINGS).await;
    // 50 packets/s per encoding, a keyframe every 2 s and on request.
    publisher.peer.start_sending(50, 0, Duration::from_secs(2));
    publisher
}

/// Which encoding (rank) a subscriber's packets came from since `before`.
fn delivered_by_rank(now: &ReceivedTrack, before: &ReceivedTrack) -> [u64; 3] {
    std::array::from_fn(|rank| {
        let t = TRACK_OF_RANK[rank];
        now.by_layer[t] - before.by_layer[t]
    })
}

/// Wait until `sub`'s subscriber reports `rank` as its current spatial layer and then
/// receives only that encoding for `packets` more packets, with no sequence gap.
/// Returns how long the switch took.
async fn settles_on(
    sub: &Sub,
    subscriber: &Subscriber,
    rank: u8,
    packets: u64,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    let reached = wait_until(within, || {
        subscriber.layers().current.map(|l| l.spatial) == Some(rank)
    })
    .await;
    let took = start.elapsed();
    assert!(reached, "reports layer {rank}: {:?}", subscriber.layers());
    // Start counting at a packet of the new encoding that arrives after the report: the old
    // one's packets were forwarded before the switch and arrive before it on the one
    // loopback socket.
    let track = TRACK_OF_RANK[usize::from(rank)];
    let at_report = sub.peer.received("v").by_layer[track];
    let started = wait_until(Duration::from_secs(2), || {
        sub.peer.received("v").by_layer[track] > at_report
    })
    .await;
    assert!(started, "encoding of rank {rank} arrives");
    let before = sub.peer.received("v");
    let ok = wait_until(Duration::from_secs(10), || {
        let r = sub.peer.received("v");
        r.intact - before.intact >= packets
    })
    .await;
    let after = sub.peer.received("v");
    assert!(ok, "{packets} packets of rank {rank} arrive: {after:?}");
    let by_rank = delivered_by_rank(&after, &before);
    for (r, n) in by_rank.iter().enumerate() {
        if r != usize::from(rank) {
            assert_eq!(*n, 0, "only rank {rank} is forwarded, got {by_rank:?}");
        }
    }
    assert_eq!(
        after.seq_gaps, before.seq_gaps,
        "contiguous sequence numbers: {after:?}"
    );
    assert_eq!(after.corrupt, 0, "intact payloads: {after:?}");
    assert_eq!(
        after.ssrcs.len(),
        1,
        "one SSRC for the subscriber: {after:?}"
    );
    assert_eq!(
        after.duplicates, before.duplicates,
        "no duplicates: {after:?}"
    );
    took
}

/// Test 1: subscribers preferring layers 0, 1 and 2 (two of each, on two shards) receive
/// only their encoding, SSRC-rewritten, with contiguous sequence numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_receive_only_their_preferred_encoding() {
    let (_worker, router) = setup(2).await;
    let publisher = simulcast_publisher(&router).await;
    let mut subs = Vec::new();
    for i in 0..6u8 {
        let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
        let subscriber = sub.subscribe("v").await;
        subscriber
            .set_preferred_layer(i % 3, None)
            .await
            .expect("preference set");
        subs.push((sub, subscriber, i % 3));
    }
    for (sub, subscriber, rank) in &subs {
        settles_on(sub, subscriber, *rank, 100, Duration::from_secs(10)).await;
        let layers = subscriber.layers();
        assert_eq!(layers.available, 3, "three encodings flow: {layers:?}");
    }
    // Each encoding was asked for keyframes only as its subscribers needed them.
    for (rank, track) in TRACK_OF_RANK.iter().enumerate() {
        let sent = publisher.peer.sent(*track);
        assert!(sent.keyframes > 0, "rank {rank} sent keyframes: {sent:?}");
    }
}

/// Test 2 (str0m): one subscriber switching 0 → 2 → 0 reaches each layer within 2 s,
/// without a sequence gap or a lost packet of the stream it receives, and each switch
/// asks the target encoding for a keyframe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preference_switches_take_effect_at_keyframes() {
    let (_worker, router) = setup(1).await;
    let publisher = simulcast_publisher(&router).await;
    let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
    let subscriber = sub.subscribe("v").await;
    subscriber.set_preferred_layer(0, None).await.expect("set");
    settles_on(&sub, &subscriber, 0, 50, Duration::from_secs(10)).await;
    for rank in [2u8, 0] {
        let track = TRACK_OF_RANK[usize::from(rank)];
        let requests_before = publisher.peer.sent(track).keyframe_requests;
        let mut watch = subscriber.layer_watch();
        let asked = Instant::now();
        subscriber
            .set_preferred_layer(rank, None)
            .await
            .expect("set");
        // The watch sees the switch (the preference first, then the forwarded layer).
        let seen = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(state) = watch.changed().await {
                if state.current.map(|l| l.spatial) == Some(rank) {
                    return Some(state);
                }
            }
            None
        })
        .await;
        let seen = seen.ok().flatten().expect("layer_watch reports the switch");
        let took = asked.elapsed();
        assert_eq!(seen.preferred.spatial, rank, "{seen:?}");
        settles_on(&sub, &subscriber, rank, 50, Duration::from_secs(2)).await;
        let requests = publisher.peer.sent(track).keyframe_requests - requests_before;
        eprintln!("switch to {rank}: {took:?}, {requests} keyframe request(s) to its encoding");
        assert!(
            requests >= 1,
            "the target encoding was asked for a keyframe"
        );
    }
    let r = sub.peer.received("v");
    assert_eq!(r.seq_gaps, 0, "no gap over the switches: {r:?}");
    assert_eq!(r.duplicates, 0, "no duplicates over the switches: {r:?}");
}

/// Test 5: the publisher stops its top encoding: subscribers on it fall to the next one
/// within 2 s, and return when it flows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_encoding_falls_back_to_the_next() {
    let (_worker, router) = setup(1).await;
    let publisher = simulcast_publisher(&router).await;
    let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
    let subscriber = sub.subscribe("v").await;
    settles_on(&sub, &subscriber, 2, 50, Duration::from_secs(10)).await;
    publisher.peer.set_track_paused(TRACK_OF_RANK[2], true);
    let took = settles_on(&sub, &subscriber, 1, 50, Duration::from_secs(2)).await;
    eprintln!("fell back in {took:?}");
    let layers = subscriber.layers();
    assert_eq!(layers.available, 2, "two encodings flow: {layers:?}");
    publisher.peer.set_track_paused(TRACK_OF_RANK[2], false);
    settles_on(&sub, &subscriber, 2, 50, Duration::from_secs(3)).await;
    let r = sub.peer.received("v");
    assert_eq!(r.seq_gaps, 0, "no gap over the fall-back: {r:?}");
}

/// One batch of 40 packets through a fan-out, losing every `lose_nth` datagram upstream
/// (0: none); returns how many were lost.
fn batch(f: &mut rheomesh::testing::Fanout, lose_nth: usize) -> usize {
    f.stage(40, 500);
    let staged = f.staged();
    f.lose_staged(lose_nth);
    let lost = staged - f.staged();
    f.forward_staged_and_keep();
    f.pump();
    lost
}

/// Four batches for preferences to settle (a switch down waits for a frame boundary);
/// returns what each subscriber has received.
fn settle(f: &mut rheomesh::testing::Fanout) -> Vec<u64> {
    for _ in 0..4 {
        batch(f, 0);
    }
    f.received()
}

/// What each subscriber received since `before`.
fn since(f: &rheomesh::testing::Fanout, before: &[u64]) -> Vec<u64> {
    f.received()
        .iter()
        .zip(before)
        .map(|(a, b)| a - b)
        .collect()
}

/// The dependency descriptor drives layer selection (issue 12): a str0m publisher sends
/// libwebrtc's L1T3 descriptor with every packet of a stream whose own (VP8) descriptor
/// has no temporal ids, as Chromium does once the extension is negotiated. A subscriber
/// preferring temporal layer 0 gets the base layer (a quarter of the frames), one
/// preferring layer 1 half of them, one with no preference all, in memory shards.
#[test]
fn the_dependency_descriptor_gives_the_temporal_layers() {
    use rheomesh::testing::Fanout;
    let mut f = Fanout::with_dependency_descriptor(2, 3).expect("fan-out connects");
    f.set_preferred_layer(0, 0, 0);
    f.set_preferred_layer(1, 0, 1);
    let before = settle(&mut f);
    for _ in 0..10 {
        batch(&mut f, 0);
    }
    let got = since(&f, &before);
    eprintln!("of 400 packets (T0 T2 T1 T2 ...): {got:?}");
    assert_eq!(got[0], 100, "temporal layer 0: every fourth frame");
    assert_eq!(got[1], 200, "temporal layers 0 and 1: every second frame");
    assert_eq!(got[2], 400, "all layers");
}

/// Repairs keep their layers: with upstream loss the server NACKs the publisher, whose
/// retransmissions come on its RTX SSRC with the dependency descriptor in the clear but the
/// original sequence number encrypted. A packet whose layer only the descriptor gives is
/// dropped without it, so the repairs that arrive prove it was read; the base-layer
/// subscriber never gets more than the base layer's 100.
#[test]
fn repairs_keep_their_dependency_descriptor_layers() {
    use rheomesh::testing::Fanout;
    let mut f = Fanout::with_dependency_descriptor(1, 2).expect("fan-out connects");
    f.set_preferred_layer(0, 0, 0);
    let before = settle(&mut f);
    let distinct_before = f.distinct();
    let mut lost = 0;
    for _ in 0..10 {
        // Lose every 7th datagram upstream (of every layer).
        lost += batch(&mut f, 7);
    }
    // Let the NACKs and retransmissions go round (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        f.pump();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let got = since(&f, &before);
    let distinct: Vec<u64> = f
        .distinct()
        .iter()
        .zip(&distinct_before)
        .map(|(a, b)| a - b)
        .collect();
    eprintln!(
        "of 400 packets, {lost} datagrams lost upstream, after repairs: {got:?} ({distinct:?} distinct)"
    );
    assert!(lost >= 40, "the loss happened: {lost}");
    assert!(
        distinct[1] > 400 - lost as u64,
        "repairs reached the all-layers subscriber: {distinct:?} distinct"
    );
    assert!(
        distinct[0] <= 100 && distinct[0] >= 100 - lost as u64,
        "the base-layer subscriber gets base-layer packets only: {distinct:?} distinct"
    );
}
