//! Captured relay datagrams replayed (its own test binary: the replay hook is process-wide).
//! Worker A's relay session keeps a copy of every n-th SRTP/SRTCP datagram it sends to
//! worker B and sends it again later from the same socket to the same destination (a
//! replay of captured ciphertext from the legitimate source address): right after the
//! original, inside the receiver's reorder window (~100 sequence numbers), and far behind
//! it. B's publish session (str0m's receive register, before SRTP is unprotected) must
//! drop every replayed RTP packet: B receives no more RTP than A forwarded and
//! retransmitted, the subscribers on B see no duplicate and ≥ 99.9 % of what was sent,
//! and the relay stays up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::peer::PeerConfig;
use common::relay::relay_worker;
use common::sfu::{connect_publisher, connect_subscriber, wait_for, wait_until};
use rheomesh::worker::Worker;
use tokio::sync::Mutex;

const SECRET: &str = "relay-replay-secret-0123456789";

async fn totals(w: &Arc<Mutex<Worker>>) -> (u64, u64, u64, u64) {
    let s = w.lock().await.stats().await;
    (
        s.total(|s| s.rtp_in),
        s.total(|s| s.rtp_forwarded),
        s.total(|s| s.rtx_sent),
        s.total(|s| s.session_input_errors),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_relay_datagrams_are_dropped_and_the_relay_stays_up() {
    let workers = [relay_worker(SECRET).await, relay_worker(SECRET).await];
    let (wa, ra, _) = &workers[0];
    let (wb, rb, addr_b) = &workers[1];
    let p = connect_publisher(ra, Some("rp-a"), Some("rp-v"), PeerConfig::default()).await;
    for publisher in &p.publishers {
        publisher.relay_to(*addr_b, rb.id()).await.expect("relayed");
    }
    let mut subs = Vec::new();
    for _ in 0..2 {
        let mut sub = connect_subscriber(rb, PeerConfig::default()).await;
        sub.subscribe("rp-v").await;
        sub.subscribe("rp-a").await;
        subs.push(sub);
    }
    p.peer.start_sending(150, 50, Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(10), || subs.iter().all(|s| s
            .peer
            .received("rp-v")
            .distinct_counters
            >= 50))
        .await,
        "media flows to B before the replays start"
    );

    // (every n-th datagram, replayed this many of the session's datagrams later): right
    // after the original; ~45 video / ~15 audio sequence numbers later (inside the reorder
    // window); ~450 video / ~150 audio later (behind it).
    for (every, delay) in [(5, 0), (5, 60), (5, 600)] {
        let (rtp0, rtcp0) = Worker::relay_replays_for_tests();
        let video0 = p.peer.stats().sent_video;
        Worker::set_relay_replay_for_tests(every, delay);
        let ok = wait_until(Duration::from_secs(15), || {
            Worker::relay_replays_for_tests().0 >= rtp0 + 50
                && p.peer.stats().sent_video >= video0 + 300
        })
        .await;
        let (rtp1, rtcp1) = Worker::relay_replays_for_tests();
        println!(
            "every {every}th datagram again {delay} datagrams later: replayed {} SRTP, {} SRTCP",
            rtp1 - rtp0,
            rtcp1 - rtcp0
        );
        assert!(
            ok,
            "the hook replayed SRTP: {} (delay {delay})",
            rtp1 - rtp0
        );
    }
    // No more captures; the relay session sends 600 more datagrams (~450 video packets), so
    // what the hook still holds goes out too.
    Worker::set_relay_replay_for_tests(0, 600);
    let video0 = p.peer.stats().sent_video;
    assert!(
        wait_until(Duration::from_secs(10), || p.peer.stats().sent_video
            >= video0 + 500)
        .await
    );
    p.peer.stop_sending();
    let sent = p.peer.stats();

    for sub in &subs {
        let ok = wait_until(Duration::from_secs(10), || {
            sub.peer.received("rp-v").distinct_counters * 1000 >= sent.sent_video * 999
                && sub.peer.received("rp-a").distinct_counters * 1000 >= sent.sent_audio * 999
        })
        .await;
        let (v, a) = (sub.peer.received("rp-v"), sub.peer.received("rp-a"));
        println!(
            "subscriber on B: video {} distinct of {} sent ({} packets, {} duplicates), audio \
             {} of {} ({} packets, {} duplicates)",
            v.distinct_counters,
            sent.sent_video,
            v.packets,
            v.duplicates,
            a.distinct_counters,
            sent.sent_audio,
            a.packets,
            a.duplicates
        );
        assert!(ok, "≥ 99.9 % delivered on B");
        assert_eq!(
            (v.duplicates, a.duplicates, v.corrupt, a.corrupt),
            (0, 0, 0, 0),
            "no duplicate or corrupt packet reached a subscriber"
        );
    }

    // What B's relayed publishers received against what A wrote into the relay session
    // (and retransmitted on it): every accepted replay would show here, even one the
    // subscribers' own receive registers would hide.
    let a = totals(wa).await;
    let ok = wait_for(Duration::from_secs(5), || async {
        totals(wb).await.0 * 1000 >= a.1 * 999
    })
    .await;
    let b = totals(wb).await;
    let (replayed_rtp, replayed_rtcp) = Worker::relay_replays_for_tests();
    println!(
        "A: {} RTP in, {} forwarded into the relay, {} retransmitted; B: {} RTP in, {} \
         forwarded, {} session input errors; replayed {replayed_rtp} SRTP and \
         {replayed_rtcp} SRTCP datagrams",
        a.0, a.1, a.2, b.0, b.1, b.3
    );
    assert!(ok, "B received what A forwarded");
    assert!(
        b.0 <= a.1 + a.2,
        "B accepted replayed RTP: {} in, A forwarded {} and retransmitted {}",
        b.0,
        a.1,
        a.2
    );
    assert!(replayed_rtp >= 150, "replayed SRTP: {replayed_rtp}");

    // The relay is up: the same link and session, both tracks published on B, and media
    // still flows.
    let (sa, sb) = (
        wa.lock().await.relay_stats().await,
        wb.lock().await.relay_stats().await,
    );
    assert_eq!((sa.links_out, sa.sessions_out), (1, 1), "A: {sa:?}");
    assert_eq!((sb.links_in, sb.sessions_in), (1, 1), "B: {sb:?}");
    assert_eq!(sb.bad_frames + sb.auth_failures, 0, "B: {sb:?}");
    assert_eq!(
        rb.publisher_ids(),
        vec!["rp-a".to_string(), "rp-v".to_string()]
    );
    for sub in &subs {
        assert!(sub.subscribers.iter().all(|s| !s.is_closed()));
    }
    let before = subs[0].peer.received("rp-v").distinct_counters;
    p.peer.start_sending(150, 50, Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(5), || subs[0]
            .peer
            .received("rp-v")
            .distinct_counters
            >= before + 100)
        .await,
        "media still flows after the replays"
    );
    p.peer.stop_sending();
}
