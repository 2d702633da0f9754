//! A crate outside the Rheomesh workspace, as a user would write it (scripts/consumer_check.sh
//! copies this file into a fresh crate in a temporary directory that depends on the packaged
//! `rheomesh` crate, builds it and runs it).
//!
//! The server half is the original Rheomesh getting-started code (only the `use` lines and the
//! STUN URL differ: tests stay on 127.0.0.1). The browser half is played by two str0m client
//! peers from `rheomesh::testing` (the `testing` feature) over real UDP sockets on 127.0.0.1:
//! one publishes a VP8 track, the other subscribes to it, and the run succeeds only when
//! the subscriber has received RTP that went through the server. Exit code 0 on success.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rheomesh::config::{MediaConfig, RTCIceServer, WebRTCTransportConfig, WorkerConfig};
use rheomesh::testing::{ClientPeer, MediaKind};
use rheomesh::worker::Worker;
use rheomesh::{IceCandidateInit, SessionDescription};

/// A client peer with its own UDP socket on 127.0.0.1.
struct Browser {
    peer: ClientPeer,
    socket: UdpSocket,
}

impl Browser {
    fn new() -> Browser {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a client socket");
        socket.set_nonblocking(true).expect("non-blocking socket");
        let addr = socket.local_addr().expect("client socket address");
        Browser {
            peer: ClientPeer::new(addr, Instant::now()),
            socket,
        }
    }

    fn candidate(&self) -> IceCandidateInit {
        IceCandidateInit {
            candidate: self.peer.candidate(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        }
    }

    /// Send what the peer queued, read what arrived, run its timers.
    fn pump(&mut self) {
        let now = Instant::now();
        if self.peer.next_timeout() <= now {
            let _ = self.peer.timeout(now);
        }
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            let _ = self.peer.receive(from, &buf[..n], Instant::now());
        }
        let out: Vec<(SocketAddr, Vec<u8>)> = self.peer.take_outgoing().collect();
        for (dest, data) in out {
            let _ = self.socket.send_to(&data, dest);
        }
    }
}

/// Drive both peers until `done` holds, or fail after `limit`.
async fn pump_until(
    peers: &mut [&mut Browser],
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&mut [&mut Browser]) -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done(peers) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for p in peers.iter_mut() {
            p.pump();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main]
async fn main() {
    let started = Instant::now();

    // "First, create a Worker and Router."
    let worker = Worker::new(WorkerConfig::default()).await.unwrap();
    let config = MediaConfig::default();
    let mut w = worker.lock().await;
    let router = w.new_router(config);
    drop(w);

    // "Next, please create publish and subscribe transports."
    let mut config = WebRTCTransportConfig::default();
    config.configuration.ice_servers = vec![RTCIceServer {
        // The guide names a public STUN server; this check stays on 127.0.0.1.
        urls: vec!["stun:127.0.0.1:3478".to_owned()],
        ..Default::default()
    }];
    let publish_transport = router.create_publish_transport(config.clone()).await;
    let subscribe_transport = router.create_subscribe_transport(config.clone()).await;

    publish_transport
        .on_ice_candidate(Box::new(move |candidate| {
            let candidate_init = candidate.to_json().expect("failed to parse candidate");
            // Send `candidate_init` message to client.
            let _ = candidate_init;
        }))
        .await;

    // The publishing browser.
    let mut camera = Browser::new();
    let candidate = camera.candidate();
    let offer = camera
        .peer
        .publish_offer("stream-camera", &[(MediaKind::Video, "camera")])
        .expect("an offer to publish");
    let offer = SessionDescription::offer(offer);
    let publisher_id = "camera".to_string();

    let _ = publish_transport
        .add_ice_candidate(candidate)
        .await
        .expect("failed to add ICE candidate");
    let answer = publish_transport
        .get_answer(offer)
        .await
        .expect("failed to connect publish_transport");
    camera
        .peer
        .accept_answer(&answer.sdp)
        .expect("the server's answer fits the offer");
    let publisher = publish_transport.publish(publisher_id).await;
    assert!(publisher.error().is_none(), "{:?}", publisher.error());

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
    let mut viewer = Browser::new();
    let answer = SessionDescription::answer(
        viewer
            .peer
            .accept_offer(&offer.sdp)
            .expect("the viewer accepts the server's offer"),
    );
    let _ = subscribe_transport
        .set_answer(answer)
        .await
        .expect("failed to set answer");
    assert_eq!(subscriber.publisher_id(), "camera");
    // Simulcast layer preference (a no-op for this single-encoding track).
    subscriber
        .set_preferred_layer(1, None)
        .await
        .expect("set_preferred_layer");
    assert_eq!(subscriber.layers().current, None, "no simulcast layers");

    // Media: the camera sends VP8 (a keyframe first, then every 30 packets) until the viewer
    // has received 20 RTP packets through the server.
    pump_until(
        &mut [&mut camera, &mut viewer],
        Duration::from_secs(10),
        "both peers to connect",
        |p| p[0].peer.connected() && p[1].peer.connected(),
    )
    .await;
    let mut sent = 0u64;
    camera.peer.set_payload_len(0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while viewer.peer.rtp_received() < 20 {
        assert!(
            Instant::now() < deadline,
            "the viewer received {} RTP packets of {sent} sent",
            viewer.peer.rtp_received()
        );
        let now = Instant::now();
        assert!(camera.peer.write_media(0, sent % 30 == 0, 0, now));
        sent += 1;
        for _ in 0..5 {
            camera.pump();
            viewer.pump();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    let stats = worker.lock().await.stats().await;
    println!(
        "consumer: published and subscribed through rheomesh from outside its workspace: \
         {} RTP packets received of {sent} sent, {} forwarded by the server, in {:.2} s",
        viewer.peer.rtp_received(),
        stats.total(|s| s.rtp_forwarded),
        started.elapsed().as_secs_f64()
    );
    subscribe_transport.close().await;
    publish_transport.close().await;
}
