//! Relay between two workers in one process (separate shards, UDP ports and relay ports on
//! 127.0.0.1): a str0m publisher on worker A relayed to a router of worker B, where str0m
//! subscribers receive it; keyframe requests cross the relay; the link's failure
//! unpublishes on B; a wrong secret, an unknown router and garbage are refused and counted
//! while a live relay goes on.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::peer::PeerConfig;
use common::relay::{relay_stats, relay_worker};
use common::sfu::{connect_publisher, connect_subscriber, wait_until};
use rheomesh::error::RelayError;
use rheomesh::worker::Worker;
use tokio::sync::Mutex;

const SECRET: &str = "relay-test-secret-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_relayed_to_another_worker_reaches_its_subscribers() {
    let (wa, ra, _addr_a) = relay_worker(SECRET).await;
    let (wb, rb, addr_b) = relay_worker(SECRET).await;
    let p = connect_publisher(&ra, Some("rl-a"), Some("rl-v"), PeerConfig::default()).await;
    for publisher in &p.publishers {
        publisher
            .relay_to(addr_b, rb.id())
            .await
            .unwrap_or_else(|e| panic!("relay {}: {e}", publisher.id()));
    }
    assert_eq!(
        rb.publisher_ids(),
        vec!["rl-a".to_string(), "rl-v".to_string()]
    );
    let s = relay_stats(&wa).await;
    assert_eq!(
        (s.links_out, s.sessions_out),
        (1, 1),
        "one link, one session: {s:?}"
    );
    let s = relay_stats(&wb).await;
    assert_eq!((s.links_in, s.sessions_in), (1, 1), "{s:?}");

    // Two subscribers on B get everything A's publisher sends.
    let mut subs = Vec::new();
    for _ in 0..2 {
        let mut sub = connect_subscriber(&rb, PeerConfig::default()).await;
        sub.subscribe("rl-v").await;
        sub.subscribe("rl-a").await;
        subs.push(sub);
    }
    p.peer.start_sending(150, 50, Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(10), || p.peer.stats().sent_video
            >= 1000)
        .await,
        "A's publisher sends"
    );
    p.peer.stop_sending();
    let sent = p.peer.stats();
    for sub in &subs {
        let ok = wait_until(Duration::from_secs(10), || {
            sub.peer.received("rl-v").distinct_counters * 1000 >= sent.sent_video * 999
                && sub.peer.received("rl-a").distinct_counters * 1000 >= sent.sent_audio * 999
        })
        .await;
        assert!(
            ok,
            "≥ 99.9 % on B: video {} of {}, audio {} of {}",
            sub.peer.received("rl-v").distinct_counters,
            sent.sent_video,
            sub.peer.received("rl-a").distinct_counters,
            sent.sent_audio
        );
    }

    // A keyframe request of a subscriber on B reaches the publisher on A.
    let before = p.peer.stats().keyframe_requests;
    p.peer.start_sending(50, 0, Duration::from_secs(60));
    assert!(subs[0].peer.request_keyframe("rl-v"));
    assert!(
        wait_until(Duration::from_secs(1), || p.peer.stats().keyframe_requests
            > before)
        .await,
        "the keyframe request crossed the relay within 1 s"
    );
    p.peer.stop_sending();

    // The publisher leaves A: B unpublishes it, its subscribers are told.
    p.transport.close().await;
    assert!(
        wait_until(Duration::from_secs(5), || rb.publisher_ids().is_empty()).await,
        "B unpublishes what A's publisher relayed: {:?}",
        rb.publisher_ids()
    );
    for sub in &subs {
        assert!(sub.subscribers.iter().all(|s| s.is_closed()));
    }
    // Nothing left of the relay on either side: the idle session pair closed (the control
    // link stays, for later relays).
    assert!(
        wait_until(Duration::from_secs(5), || {
            let (a, b) = (futures_like_stats(&wa), futures_like_stats(&wb));
            a.sessions_out == 0 && b.sessions_in == 0
        })
        .await,
        "relay sessions closed: A {:?}, B {:?}",
        futures_like_stats(&wa),
        futures_like_stats(&wb)
    );
    assert_eq!(
        common::sfu::sessions_after(&wa).await,
        0,
        "no session left on A"
    );
    let b_sessions = wb.lock().await.stats().await.sessions();
    assert_eq!(
        b_sessions,
        subs.len(),
        "on B only the subscribers' own transports"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_worker_dying_unpublishes_within_5_s_and_relaying_again_works() {
    let (wb, rb, addr_b) = relay_worker(SECRET).await;
    let mut sub = connect_subscriber(&rb, PeerConfig::default()).await;
    {
        let (wa, ra, _) = relay_worker(SECRET).await;
        let p = connect_publisher(&ra, None, Some("die-v"), PeerConfig::default()).await;
        p.publishers[0]
            .relay_to(addr_b, rb.id())
            .await
            .expect("relayed");
        let s = sub.subscribe("die-v").await;
        assert_eq!(rb.publisher_ids(), vec!["die-v".to_string()]);
        assert!(!s.is_closed());
        // Worker A dies: its relay link closes.
        let t0 = std::time::Instant::now();
        drop(wa);
        assert!(
            wait_until(Duration::from_secs(5), || rb.publisher_ids().is_empty()
                && s.is_closed())
            .await,
            "B unpublished A's track within 5 s"
        );
        println!(
            "unpublished on B {} ms after A died",
            t0.elapsed().as_millis()
        );
        drop((p, ra));
    }
    assert!(
        wait_until(Duration::from_secs(5), || {
            futures_like_stats(&wb).sessions_in == 0
        })
        .await
    );
    // A restarted worker relays again.
    let (_wa2, ra2, _) = relay_worker(SECRET).await;
    let p2 = connect_publisher(&ra2, None, Some("die-v"), PeerConfig::default()).await;
    p2.publishers[0]
        .relay_to(addr_b, rb.id())
        .await
        .expect("relayed again");
    sub.subscribe("die-v").await;
    p2.peer.start_sending(100, 0, Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(10), || sub
            .peer
            .received("die-v")
            .distinct_counters
            >= 50)
        .await,
        "media flows again"
    );
}

/// The relay stats without awaiting (for `wait_until`'s closure).
fn futures_like_stats(w: &Arc<Mutex<Worker>>) -> rheomesh::relay::RelayStats {
    let w = w.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move { w.lock().await.relay_stats().await })
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secrets_unknown_routers_and_garbage_are_refused_and_counted() {
    let (_wa, ra, _) = relay_worker(SECRET).await;
    let (wb, rb, addr_b) = relay_worker(SECRET).await;
    // A live relay with a subscriber on B.
    let p = connect_publisher(&ra, None, Some("live-v"), PeerConfig::default()).await;
    p.publishers[0]
        .relay_to(addr_b, rb.id())
        .await
        .expect("relayed");
    let mut sub = connect_subscriber(&rb, PeerConfig::default()).await;
    sub.subscribe("live-v").await;
    p.peer.start_sending(100, 0, Duration::from_secs(1));

    // A worker with another secret.
    let (_we, re, _) = relay_worker("another-secret-0123456789").await;
    let pe = connect_publisher(&re, None, Some("evil-v"), PeerConfig::default()).await;
    let e = pe.publishers[0]
        .relay_to(addr_b, rb.id())
        .await
        .unwrap_err();
    assert!(matches!(e, RelayError::Refused(_)), "{e}");
    // An unknown router.
    let e = p.publishers[0]
        .relay_to(addr_b, "router-nope")
        .await
        .unwrap_err();
    assert!(
        matches!(e, RelayError::Refused(ref m) if m.contains("unknown router")),
        "{e}"
    );
    // No relay configured here.
    let (_wn, rn) = common::sfu::setup(1).await;
    let pn = connect_publisher(&rn, None, Some("n-v"), PeerConfig::default()).await;
    assert_eq!(
        pn.publishers[0]
            .relay_to(addr_b, rb.id())
            .await
            .unwrap_err(),
        RelayError::NotConfigured
    );
    // Garbage at the relay port: a text line, a huge length, a hello-sized length too
    // large for a hello (refused before it is read), a frame with a forged tag.
    for junk in [
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        u32::MAX.to_be_bytes().to_vec(),
        100_000u32.to_be_bytes().to_vec(),
        [&100u32.to_be_bytes()[..], &[7u8; 100][..]].concat(),
    ] {
        let mut c = std::net::TcpStream::connect(addr_b).unwrap();
        let _ = c.write_all(&junk);
        let _ = c.shutdown(std::net::Shutdown::Write);
    }
    // Connections that never say hello: at most 32 wait in their handshake, the rest are
    // closed at once and counted.
    let idle: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(addr_b).unwrap())
        .collect();
    assert!(
        wait_until(Duration::from_secs(5), || futures_like_stats(&wb).refused
            >= 8)
        .await,
        "handshakes beyond 32 refused: {:?}",
        futures_like_stats(&wb)
    );
    drop(idle);
    // Garbage UDP at B's shards.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for a in wb.lock().await.local_addrs() {
        for _ in 0..50 {
            let _ = udp.send_to(&[0x80, 0x60, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], a);
        }
    }
    let ok = wait_until(Duration::from_secs(5), || {
        let s = futures_like_stats(&wb);
        // The wrong secret and the forged tag fail authentication; the text line and the
        // huge length are malformed.
        s.auth_failures >= 2 && s.unknown_router >= 1 && s.bad_frames >= 3
    })
    .await;
    assert!(ok, "counted: {:?}", futures_like_stats(&wb));
    // The live relay lost nothing meanwhile.
    let before = sub.peer.received("live-v").distinct_counters;
    assert!(
        wait_until(Duration::from_secs(5), || sub
            .peer
            .received("live-v")
            .distinct_counters
            >= before + 100)
        .await,
        "the live relay keeps delivering"
    );
    p.peer.stop_sending();
    let sent = p.peer.stats().sent_video;
    assert!(
        wait_until(Duration::from_secs(5), || sub
            .peer
            .received("live-v")
            .distinct_counters
            * 1000
            >= sent * 999)
        .await,
        "≥ 99.9 %: {} of {sent}",
        sub.peer.received("live-v").distinct_counters
    );
    assert_eq!(
        rb.publisher_ids(),
        vec!["live-v".to_string()],
        "nothing else was published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_channel_relayed_to_another_worker_reaches_its_subscribers() {
    let (_wa, ra, _) = relay_worker(SECRET).await;
    let (_wb, rb, addr_b) = relay_worker(SECRET).await;
    let (_pt, peer, publisher) = common::sfu::data_publisher(&ra, "rl-chat", true, None).await;
    publisher
        .relay_to(addr_b, rb.id())
        .await
        .expect("data relayed");
    assert_eq!(rb.data_publisher_ids(), vec!["rl-chat".to_string()]);
    let (_st, sub_peer, _sub) = common::sfu::data_subscriber(&rb, "rl-chat").await;
    for i in 0..100 {
        assert!(peer.send_data("rl-chat", i % 2 == 0, format!("m{i}").as_bytes()));
    }
    let ok = wait_until(Duration::from_secs(10), || {
        sub_peer
            .data_channel("rl-chat")
            .is_some_and(|c| c.messages.len() == 100)
    })
    .await;
    let got = sub_peer
        .data_channel("rl-chat")
        .map(|c| c.messages)
        .unwrap_or_default();
    assert!(ok, "100 messages across the relay: got {}", got.len());
    for (i, (binary, data)) in got.iter().enumerate() {
        assert_eq!(
            (*binary, data.as_slice()),
            (i % 2 == 0, format!("m{i}").as_bytes())
        );
    }
    // Unpublished on A: unpublished on B.
    publisher.close();
    assert!(
        wait_until(Duration::from_secs(5), || rb
            .data_publisher_ids()
            .is_empty())
        .await,
        "B unpublishes the relayed channel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_relay_unpublishes_it_on_the_other_worker_and_it_can_start_again() {
    let (wa, ra, _) = relay_worker(SECRET).await;
    let (wb, rb, addr_b) = relay_worker(SECRET).await;
    let p = connect_publisher(&ra, Some("st-a"), Some("st-v"), PeerConfig::default()).await;
    for publisher in &p.publishers {
        publisher.relay_to(addr_b, rb.id()).await.expect("relayed");
    }
    let mut sub = connect_subscriber(&rb, PeerConfig::default()).await;
    let video = sub.subscribe("st-v").await;
    let audio = sub.subscribe("st-a").await;
    p.peer.start_sending(150, 50, Duration::from_secs(60));

    // Stop the video relay only: B unpublishes it, the audio relay goes on.
    let v = p.publishers.iter().find(|x| x.id() == "st-v").unwrap();
    assert!(v.stop_relay(addr_b, rb.id()).await, "it was relayed");
    assert!(
        !v.stop_relay(addr_b, rb.id()).await,
        "a second stop finds nothing"
    );
    assert!(
        wait_until(Duration::from_secs(5), || rb.publisher_ids()
            == vec!["st-a".to_string()]
            && video.is_closed())
        .await,
        "B unpublished the video: {:?}",
        rb.publisher_ids()
    );
    assert!(!audio.is_closed());
    let before = sub.peer.received("st-a").distinct_counters;
    assert!(
        wait_until(Duration::from_secs(5), || sub
            .peer
            .received("st-a")
            .distinct_counters
            >= before + 50)
        .await,
        "the audio relay keeps delivering"
    );
    assert_eq!(
        futures_like_stats(&wa).sessions_out,
        1,
        "audio still relayed"
    );

    // The last relay stopped: the session pair closes on both sides.
    let a = p.publishers.iter().find(|x| x.id() == "st-a").unwrap();
    assert!(a.stop_relay(addr_b, rb.id()).await);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let (sa, sb) = (futures_like_stats(&wa), futures_like_stats(&wb));
            rb.publisher_ids().is_empty()
                && sa.sessions_out == 0
                && sb.sessions_in == 0
                && audio.is_closed()
        })
        .await,
        "relay sessions closed, B's audio subscriber closed: A {:?}, B {:?}, closed {}",
        futures_like_stats(&wa),
        futures_like_stats(&wb),
        audio.is_closed()
    );

    // And it starts again: new media reaches a new subscription on B.
    v.relay_to(addr_b, rb.id()).await.expect("relayed again");
    sub.subscribe("st-v").await;
    let before = sub.peer.received("st-v").distinct_counters;
    assert!(
        wait_until(Duration::from_secs(10), || sub
            .peer
            .received("st-v")
            .distinct_counters
            >= before + 100)
        .await,
        "media flows after the relay restarts"
    );
    p.peer.stop_sending();
}

/// Offer order: (rid, keyframe size). Ranks: "b" 0, "c" 1, "a" 2 (as in tests/simulcast.rs).
const SIMULCAST: [(&str, (u16, u16)); 3] =
    [("a", (1280, 720)), ("b", (320, 180)), ("c", (640, 360))];
/// The publisher's local track (offer order) of each rank.
const TRACK_OF_RANK: [usize; 3] = [1, 2, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_simulcast_track_carries_every_encoding() {
    let (_wa, ra, _) = relay_worker(SECRET).await;
    let (_wb, rb, addr_b) = relay_worker(SECRET).await;
    let publisher = common::sfu::connect_simulcast_publisher(&ra, "sv", &SIMULCAST).await;
    publisher.peer.start_sending(50, 0, Duration::from_secs(2));
    publisher
        .publisher
        .relay_to(addr_b, rb.id())
        .await
        .expect("relayed");

    // On B, three subscribers preferring each layer get that encoding only.
    let mut subs = Vec::new();
    for rank in 0..3u8 {
        let mut sub = connect_subscriber(&rb, PeerConfig::default()).await;
        let subscriber = sub.subscribe("sv").await;
        subscriber
            .set_preferred_layer(rank, None)
            .await
            .expect("preference set");
        subs.push((sub, subscriber, rank));
    }
    for (sub, subscriber, rank) in &subs {
        let reached = wait_until(Duration::from_secs(10), || {
            let l = subscriber.layers();
            l.current.map(|c| c.spatial) == Some(*rank) && l.available == 3
        })
        .await;
        assert!(
            reached,
            "B's subscriber of rank {rank} settles, three encodings available on B: {:?}",
            subscriber.layers()
        );
        let track = TRACK_OF_RANK[usize::from(*rank)];
        let at = sub.peer.received("sv").by_layer[track];
        assert!(
            wait_until(Duration::from_secs(5), || sub.peer.received("sv").by_layer
                [track]
                > at)
            .await,
            "rank {rank}'s encoding arrives"
        );
        let before = sub.peer.received("sv");
        assert!(
            wait_until(Duration::from_secs(10), || sub.peer.received("sv").intact
                >= before.intact + 60)
            .await,
            "60 more packets of rank {rank}"
        );
        let after = sub.peer.received("sv");
        for (r, &t) in TRACK_OF_RANK.iter().enumerate() {
            if r != usize::from(*rank) {
                assert_eq!(
                    after.by_layer[t], before.by_layer[t],
                    "subscriber of rank {rank} got only its encoding: {after:?}"
                );
            }
        }
        assert_eq!(after.corrupt, 0, "{after:?}");
        assert_eq!(after.duplicates, before.duplicates, "{after:?}");
        assert_eq!(after.seq_gaps, before.seq_gaps, "{after:?}");
    }

    // Each encoding crossed the relay: every rank's keyframes reached B's subscribers, and
    // a keyframe request from B's top-layer subscriber reaches A's top encoding.
    let top = TRACK_OF_RANK[2];
    let before = publisher.peer.sent(top).keyframes;
    assert!(subs[2].0.peer.request_keyframe("sv"));
    assert!(
        wait_until(Duration::from_secs(2), || publisher
            .peer
            .sent(top)
            .keyframes
            > before)
        .await,
        "the top encoding on A sent a keyframe on B's request"
    );
    publisher.peer.stop_sending();
}
