//! The server code of the original Rheomesh getting-started guide, as written there; only the
//! `use` lines differ. It must compile against this crate, and it runs against a real worker
//! (the values a browser would send come from a str0m test peer).

// The guide writes `let _ = x.await.expect(..)` for unit results; keep it verbatim.
#![allow(clippy::let_unit_value)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use rheomesh::config::RTCIceServer;
use rheomesh::config::WebRTCTransportConfig;
use rheomesh::config::{MediaConfig, WorkerConfig};
use rheomesh::worker::Worker;
use rheomesh::{IceCandidateInit, SessionDescription};

use common::peer::{PeerConfig, TestPeer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_server_code_runs() {
    // "First, create a Worker and Router."
    let worker = Worker::new(WorkerConfig::default()).await.unwrap();
    let config = MediaConfig::default();
    let mut w = worker.lock().await;
    let router = w.new_router(config);
    drop(w);

    // "Next, please create publish and subscribe transports."
    let mut config = WebRTCTransportConfig::default();
    config.configuration.ice_servers = vec![RTCIceServer {
        // The guide names a public STUN server; tests stay on 127.0.0.1.
        urls: vec![format!(
            "stun:{}",
            common::sfu::fake_stun_server("127.0.0.9".parse().unwrap())
        )],
        ..Default::default()
    }];
    let publish_transport = router.create_publish_transport(config.clone()).await;
    let subscribe_transport = router.create_subscribe_transport(config.clone()).await;

    let (cand_tx, mut cand_rx) = tokio::sync::mpsc::unbounded_channel::<IceCandidateInit>();
    publish_transport
        .on_ice_candidate(Box::new(move |candidate| {
            let candidate_init = candidate.to_json().expect("failed to parse candidate");
            // Send `candidate_init` message to client.
            let _ = cand_tx.send(candidate_init);
        }))
        .await;

    // The browser side, played by a str0m peer.
    let browser = Arc::new(TestPeer::new(PeerConfig::default()));
    let candidate = IceCandidateInit {
        candidate: browser.local_candidate(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    };
    let offer = SessionDescription::offer(browser.publish_offer(None, Some("camera")));
    let publisher_id = "camera".to_string();

    let _ = publish_transport
        .add_ice_candidate(candidate)
        .await
        .expect("failed to add ICE candidate");
    let answer = publish_transport
        .get_answer(offer)
        .await
        .expect("failed to connect publish_transport");
    browser.accept_answer(&answer.sdp).unwrap();
    let publisher = publish_transport.publish(publisher_id).await;

    let got = tokio::time::timeout(Duration::from_secs(5), cand_rx.recv())
        .await
        .expect("server trickles a candidate")
        .expect("candidate");
    assert!(got.candidate.starts_with("candidate:"), "{got:?}");
    browser.add_remote_candidate(&got.candidate).unwrap();

    subscribe_transport
        .on_ice_candidate(Box::new(move |candidate| {
            let _candidate_init = candidate.to_json().expect("failed to parse candidate");
        }))
        .await;
    subscribe_transport
        .on_negotiation_needed(Box::new(move |_offer| {
            // Send `offer` message to client.
        }))
        .await;

    // "When you get track from the publisher, please call subscribe method."
    let track_id = publisher.track().id();
    let (subscriber, offer) = subscribe_transport
        .subscribe(track_id)
        .await
        .expect("failed to connect subscribe_transport");
    let viewer = TestPeer::new(PeerConfig::default());
    let answer = SessionDescription::answer(viewer.accept_offer(&offer.sdp).unwrap());
    let _ = subscribe_transport
        .set_answer(answer)
        .await
        .expect("failed to set answer");
    assert_eq!(subscriber.publisher_id(), "camera");
    assert!(!subscriber.is_closed());
}
