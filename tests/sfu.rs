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
