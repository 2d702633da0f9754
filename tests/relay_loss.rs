//! Relay under loss (its own test binary: the loss hook is process-wide): the relay link
//! loses every 20th SRTP datagram (5 %); NACK/RTX across the link repairs it, so the
//! subscribers on worker B still get ≥ 99.9 % of what the publisher on worker A sends.

mod common;

use std::time::Duration;

use common::peer::PeerConfig;
use common::relay::relay_worker;
use common::sfu::{connect_publisher, connect_subscriber, wait_until};
use rheomesh::worker::Worker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_repairs_5_percent_loss_on_the_relay_link() {
    let secret = "relay-loss-secret-0123456789";
    let workers = [relay_worker(secret).await, relay_worker(secret).await];
    let (wa, ra, _) = &workers[0];
    let (_wb, rb, addr_b) = &workers[1];
    let p = connect_publisher(ra, Some("loss-a"), Some("loss-v"), PeerConfig::default()).await;
    for publisher in &p.publishers {
        publisher.relay_to(*addr_b, rb.id()).await.expect("relayed");
    }
    let mut sub = connect_subscriber(rb, PeerConfig::default()).await;
    sub.subscribe("loss-v").await;
    sub.subscribe("loss-a").await;
    Worker::set_relay_loss_for_tests(20);
    p.peer.start_sending(150, 50, Duration::from_secs(1));
    assert!(
        wait_until(Duration::from_secs(15), || p.peer.stats().sent_video
            >= 1000)
        .await
    );
    p.peer.stop_sending();
    let sent = p.peer.stats();
    let ok = wait_until(Duration::from_secs(10), || {
        sub.peer.received("loss-v").distinct_counters * 1000 >= sent.sent_video * 999
    })
    .await;
    Worker::set_relay_loss_for_tests(0);
    let rtx = wa.lock().await.stats().await.total(|s| s.rtx_sent);
    let lost = Worker::relay_losses_for_tests();
    println!(
        "relay link lost {lost} SRTP datagrams; video {} of {}, audio {} of {} (audio is not \
         retransmitted); A sent {rtx} retransmissions",
        sub.peer.received("loss-v").distinct_counters,
        sent.sent_video,
        sub.peer.received("loss-a").distinct_counters,
        sent.sent_audio
    );
    assert!(lost >= 50, "the link lost: {lost}");
    assert!(ok, "video repaired to ≥ 99.9 %");
    assert!(rtx > 0, "A repaired the relay's losses");
}
