//! Data channels with real str0m peers over UDP on 127.0.0.1: a publisher's channel fans
//! out to subscribers on two shards, complete and in order, kinds and channel settings
//! kept; a subscriber that stops reading neither slows nor loses the others' messages and
//! has its reliable channel closed; a 64 KiB message goes through, a larger one is dropped
//! and counted; closing the publisher closes the subscribers' channels.

mod common;

use std::time::Duration;

use common::peer::{PeerConfig, TestPeer};
use common::sfu::{connect_publisher, data_publisher, data_subscriber, setup, wait_until};
use rheomesh::config::WebRTCTransportConfig;
use rheomesh::error::{PublishError, SubscribeError};

/// The `i`-th message: binary for even `i`, text for odd, carrying `i`.
fn message(i: usize) -> (bool, Vec<u8>) {
    if i.is_multiple_of(2) {
        (true, (i as u32).to_be_bytes().repeat(8))
    } else {
        (false, format!("message {i}").into_bytes())
    }
}

/// Send `n` messages from `from`, retrying while its buffer is full.
async fn send_all(peer: &TestPeer, label: &str, range: std::ops::Range<usize>) {
    for i in range {
        let (binary, data) = message(i);
        let mut tries = 0;
        while !peer.send_data(label, binary, &data) {
            tries += 1;
            assert!(tries < 500, "message {i} could not be sent");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_fan_out_complete_and_in_order_to_ten_subscribers_on_two_shards() {
    let (worker, router) = setup(2).await;
    let (_pt, publisher, dp) = data_publisher(&router, "chat", true, None).await;
    assert_eq!(router.data_publisher_ids(), vec!["chat".to_string()]);
    assert!(dp.ordered() && dp.reliable());
    let mut subs = Vec::new();
    for _ in 0..10 {
        subs.push(data_subscriber(&router, "chat").await);
    }
    const N: usize = 1000;
    send_all(&publisher, "chat", 0..N).await;
    for (i, (_, peer, _)) in subs.iter().enumerate() {
        let p = peer.clone();
        assert!(
            wait_until(Duration::from_secs(20), move || p
                .data_channel("chat")
                .is_some_and(|c| c.messages.len() >= N))
            .await,
            "subscriber {i} got {} of {N}",
            peer.data_channel("chat").map_or(0, |c| c.messages.len())
        );
        let c = peer.data_channel("chat").unwrap();
        assert_eq!(c.messages.len(), N, "no duplicates");
        for (j, m) in c.messages.iter().enumerate() {
            assert_eq!(
                *m,
                message(j),
                "subscriber {i}, message {j}: in order, kind kept"
            );
        }
        let cfg = c.config.expect("config");
        assert!(cfg.ordered);
        assert_eq!(cfg.reliability, str0m::channel::Reliability::Reliable);
    }
    let stats = worker.lock().await.stats().await;
    let forwarded: u64 = stats.shards.iter().map(|s| s.data_forwarded).sum();
    assert_eq!(forwarded, (10 * N) as u64);
    assert!(
        stats.shards.iter().all(|s| s.data_forwarded > 0),
        "both shards forward"
    );

    // An unordered channel without retransmissions stays so on the subscriber's side; a
    // second channel on a connection that has one opens in-band, without an offer.
    let (_pt2, _p2, dp2) = data_publisher(&router, "cursor", false, Some(0)).await;
    assert!(!dp2.ordered() && !dp2.reliable());
    let (st, sp, _) = &subs[0];
    let (_, offer) = st
        .data_subscribe("cursor")
        .await
        .expect("second data subscribe");
    assert!(offer.is_none(), "no renegotiation for a second channel");
    let p = sp.clone();
    assert!(
        wait_until(Duration::from_secs(10), move || p
            .data_channel("cursor")
            .is_some_and(|c| c.open))
        .await,
        "the second channel opens in-band"
    );
    let cfg = sp.data_channel("cursor").unwrap().config.expect("config");
    assert!(!cfg.ordered);
    assert_eq!(
        cfg.reliability,
        str0m::channel::Reliability::MaxRetransmits { retransmits: 0 }
    );

    // Closing the publisher closes the subscribers' channels.
    dp.close();
    for (i, (_, peer, sub)) in subs.iter().enumerate() {
        let p = peer.clone();
        assert!(
            wait_until(Duration::from_secs(10), move || p
                .data_channel("chat")
                .is_some_and(|c| c.closed))
            .await,
            "subscriber {i}'s channel closes"
        );
        assert!(sub.is_closed());
    }
    assert_eq!(router.data_publisher_ids(), vec!["cursor".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_does_not_hold_up_the_others() {
    let (worker, router) = setup(1).await;
    let (_pt, publisher, _dp) = data_publisher(&router, "feed", true, None).await;
    let (_t1, fast, _) = data_subscriber(&router, "feed").await;
    let (_t2, slow, slow_sub) = data_subscriber(&router, "feed").await;
    slow.set_deaf(true);
    // 4000 messages of 1 KiB, paced at about 1000 a second (8 Mbit/s): far more than a
    // subscriber's SCTP buffer and queue hold (128 KiB + 1 MiB), which a reading subscriber
    // drains as they come.
    const N: usize = 4000;
    for i in 0..N {
        let data = vec![(i % 251) as u8; 1024];
        let mut tries = 0;
        while !publisher.send_data("feed", true, &data) {
            tries += 1;
            assert!(tries < 1000, "message {i} could not be sent");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if i % 4 == 3 {
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
    }
    let f = fast.clone();
    assert!(
        wait_until(Duration::from_secs(30), move || f
            .data_channel("feed")
            .is_some_and(|c| c.messages.len() >= N))
        .await,
        "the reading subscriber got {} of {N}",
        fast.data_channel("feed").map_or(0, |c| c.messages.len())
    );
    let c = fast.data_channel("feed").unwrap();
    assert!(c
        .messages
        .iter()
        .enumerate()
        .all(|(i, (_, d))| d.len() == 1024 && d[0] == (i % 251) as u8));
    // The one that stopped reading had its reliable channel closed, and it was counted.
    let s = slow_sub.clone();
    assert!(
        wait_until(Duration::from_secs(10), move || s.is_closed()).await,
        "the slow subscriber's reliable channel is closed"
    );
    let stats = worker.lock().await.stats().await;
    assert_eq!(
        stats.shards[0].data_channels_closed_slow, 1,
        "{:?}",
        stats.shards[0]
    );
    slow.set_deaf(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_kib_message_is_delivered_a_larger_one_is_dropped_and_counted() {
    let (worker, router) = setup(1).await;
    let (pt, publisher, _dp) = data_publisher(&router, "files", true, None).await;
    let (_st, sub, _) = data_subscriber(&router, "files").await;
    let big = vec![7u8; 64 * 1024];
    assert!(publisher.send_data("files", true, &big));
    let s = sub.clone();
    assert!(
        wait_until(Duration::from_secs(10), move || s
            .data_channel("files")
            .is_some_and(|c| !c.messages.is_empty()))
        .await,
        "the 64 KiB message arrives"
    );
    assert_eq!(sub.data_channel("files").unwrap().messages[0].1, big);
    let too_big = vec![8u8; 64 * 1024 + 1];
    assert!(publisher.send_data("files", true, &too_big));
    assert!(publisher.send_data("files", false, b"after"));
    let s = sub.clone();
    assert!(
        wait_until(Duration::from_secs(10), move || s
            .data_channel("files")
            .is_some_and(|c| c.messages.len() >= 2))
        .await,
        "the next message arrives"
    );
    let c = sub.data_channel("files").unwrap();
    assert_eq!(
        c.messages.len(),
        2,
        "the oversized message is not forwarded"
    );
    assert_eq!(c.messages[1], (false, b"after".to_vec()));
    assert!(
        publisher.data_channel("files").unwrap().open,
        "the publisher's channel stays open"
    );
    let stats = worker.lock().await.stats().await;
    assert_eq!(stats.shards[0].data_dropped, 1);
    // Bad requests: unknown ids, data subscribe to a media id and publishing twice.
    let t = router
        .create_subscribe_transport(WebRTCTransportConfig::default())
        .await;
    assert!(t.data_subscribe("nobody").await.is_err());
    assert!(pt.data_publish("files").await.is_err(), "already published");
    assert!(
        pt.data_publish("no-such-channel").await.is_err(),
        "a label no channel has"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_gets_64_data_channels_more_are_closed_and_counted() {
    let (worker, router) = setup(1).await;
    let (pt, peer, _first) = data_publisher(&router, "ch-0", true, None).await;
    // 63 more in-band, as a browser opens its later channels: all usable.
    for i in 1..64 {
        peer.open_data_channel(&format!("ch-{i}"), true, None);
    }
    for i in 1..64 {
        pt.data_publish(format!("ch-{i}"))
            .await
            .unwrap_or_else(|e| panic!("ch-{i}: {e}"));
    }
    assert_eq!(router.data_publisher_ids().len(), 64);
    // The 65th is closed by the server, refused to data_publish and counted.
    peer.open_data_channel("ch-64", true, None);
    assert!(
        wait_until(Duration::from_secs(5), || peer
            .data_channel("ch-64")
            .is_some_and(|c| c.closed))
        .await,
        "the channel beyond the cap is closed: {:?}",
        peer.data_channel("ch-64").map(|c| (c.open, c.closed))
    );
    assert_eq!(
        pt.data_publish("ch-64").await.unwrap_err(),
        PublishError::TooManyDataChannels("ch-64".into())
    );
    let stats = worker.lock().await.stats().await;
    assert_eq!(stats.total(|s| s.data_channels_refused), 1);
    // The 64 still carry messages.
    let (_st, sub_peer, _sub) = data_subscriber(&router, "ch-63").await;
    assert!(peer.send_data("ch-63", false, b"still here"));
    assert!(
        wait_until(Duration::from_secs(5), || sub_peer
            .data_channel("ch-63")
            .is_some_and(
                |c| c.messages == vec![(false, b"still here".to_vec())]
            ))
        .await,
        "a message on the 64th channel arrives"
    );
    // Media and data ids do not mix: a data subscribe to a media track and the reverse fail.
    let _media = connect_publisher(&router, None, Some("media-v"), PeerConfig::default()).await;
    let t = router
        .create_subscribe_transport(WebRTCTransportConfig::default())
        .await;
    assert!(t.data_subscribe("media-v").await.is_err());
    assert_eq!(
        t.subscribe("ch-0").await.unwrap_err(),
        SubscribeError::UnknownPublisher("ch-0".into())
    );
}
