//! Hostile and careless clients (issue 11): what an attacker can send through the API a
//! server exposes to browsers, and what comes back.

use rheomesh::config::{MediaConfig, WebRTCTransportConfig, WorkerConfig};
use rheomesh::worker::Worker;
use rheomesh::{IceCandidateInit, SessionDescription};

/// What an error that reaches a client must not contain: heap addresses and debug dumps.
fn assert_written_for_clients(what: &str, message: &str) {
    for leak in ["PointerOffset", "0x7", "0x5", "{ ", "Some(", "Err("] {
        assert!(
            !message.contains(leak),
            "{what}: the error leaks internals ({leak:?}): {message}"
        );
    }
    assert!(
        message.len() <= 400,
        "{what}: an error of {} bytes",
        message.len()
    );
}

/// Garbage offers, answers and candidates get errors that say what was wrong, without the
/// parser's pointers into server memory (`Parse error at PointerOffset(0x7fa3…)` before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_for_bad_sdp_do_not_leak_internals() {
    let mut config = WorkerConfig::default();
    config.shards = 1;
    let worker = Worker::new(config).await.unwrap();
    let router = worker.lock().await.new_router(MediaConfig::default());
    let publish = router
        .create_publish_transport(WebRTCTransportConfig::default())
        .await;
    let long_token = format!("v=0\r\no=- 1 2 IN IP4 {}\r\n", "x".repeat(5000));
    let offers = [
        "garbage".to_string(),
        "v=x\r\n".to_string(),
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio nine\r\n".to_string(),
        long_token,
    ];
    for offer in offers {
        let err = publish
            .get_answer(SessionDescription::offer(offer.clone()))
            .await
            .expect_err("garbage is refused");
        let message = err.to_string();
        assert_written_for_clients("offer", &message);
        assert!(message.contains("line"), "no position in {message:?}");
    }

    for candidate in [
        "candidate:garbage",
        "candidate:1 1 udp x 127.0.0.1 9 typ host",
    ] {
        let err = publish
            .add_ice_candidate(IceCandidateInit {
                candidate: candidate.into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: None,
            })
            .await
            .expect_err("a bad candidate is refused");
        assert_written_for_clients("candidate", &err.to_string());
    }

    let subscribe = router
        .create_subscribe_transport(WebRTCTransportConfig::default())
        .await;
    let err = subscribe
        .set_answer(SessionDescription::answer("v=x\r\n"))
        .await
        .expect_err("garbage is refused");
    assert_written_for_clients("answer", &err.to_string());

    publish.close().await;
    subscribe.close().await;
}

/// A client repeating `RestartICE` while an offer is unanswered is told so at once, instead
/// of each request waiting 21 s and then answering "no offer is outstanding".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_storm_is_refused_promptly() {
    let mut config = WorkerConfig::default();
    config.shards = 1;
    let worker = Worker::new(config).await.unwrap();
    let router = worker.lock().await.new_router(MediaConfig::default());
    let subscribe = router
        .create_subscribe_transport(WebRTCTransportConfig::default())
        .await;
    let first = subscribe
        .restart_ice()
        .await
        .expect("the first restart makes an offer");
    assert!(first.sdp.starts_with("v=0"));
    let storm = futures_util::future::join_all((0..50).map(|_| subscribe.restart_ice()));
    let results = tokio::time::timeout(std::time::Duration::from_secs(2), storm)
        .await
        .expect("restarts are answered at once, not after the answer timeout");
    for r in results {
        assert_eq!(r, Err(rheomesh::error::NegotiationError::OfferOutstanding));
    }
    subscribe.close().await;
}
