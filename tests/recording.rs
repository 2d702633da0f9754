//! The recording transport with a real str0m publisher over UDP on 127.0.0.1: what arrives
//! at the receiver's sockets is plain RTP as `generate_sdp` describes it (payload types,
//! ports, one SSRC, contiguous sequence numbers, video starting at a keyframe), with RTCP
//! sender reports on the next port; errors for bad requests; nothing left behind.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::peer::PeerConfig;
use common::sfu::{connect_publisher, connect_subscriber, setup, wait_until};
use rheomesh::error::RecordingError;
use rheomesh::publisher::MediaKind;
use rheomesh::testing::payload;

/// A receiver's RTP and RTCP sockets on 127.0.0.1 (consecutive ports, RTP even).
struct Receiver {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

impl Receiver {
    fn bind() -> Receiver {
        for _ in 0..50 {
            let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let port = rtp.local_addr().unwrap().port();
            if !port.is_multiple_of(2) || port == u16::MAX {
                continue;
            }
            if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
                rtp.set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                rtcp.set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                return Receiver { rtp, rtcp };
            }
        }
        panic!("no consecutive port pair free");
    }

    fn port(&self) -> u16 {
        self.rtp.local_addr().unwrap().port()
    }
}

/// One plain RTP packet as received.
#[derive(Debug)]
struct Rtp {
    marker: bool,
    pt: u8,
    seq: u16,
    ssrc: u32,
    payload: Vec<u8>,
}

fn parse_rtp(b: &[u8]) -> Option<Rtp> {
    if b.len() < 12 || b[0] != 0x80 {
        return None; // version 2, no padding, extension or CSRCs
    }
    Some(Rtp {
        marker: b[1] & 0x80 != 0,
        pt: b[1] & 0x7f,
        seq: u16::from_be_bytes([b[2], b[3]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        payload: b[12..].to_vec(),
    })
}

/// Read what arrives on `sock` until `until` says enough or `timeout` passes.
fn collect(
    sock: &UdpSocket,
    timeout: Duration,
    mut until: impl FnMut(&[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && !until(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_is_recorded_as_plain_rtp_with_sender_reports() {
    let (worker, router) = setup(2).await;
    let p = connect_publisher(&router, Some("rec-a"), Some("rec-v"), PeerConfig::default()).await;
    p.peer.start_sending(150, 50, Duration::from_millis(500));
    let rx = Receiver::bind();
    let rec = router
        .create_recording_transport("127.0.0.1".into(), rx.port())
        .await
        .expect("recording transport");

    // One SDP for both tracks: video first at the transport's port, audio at port + 2.
    let sdp = rec
        .generate_sdp_for(&["rec-v".to_string(), "rec-a".to_string()])
        .await
        .expect("sdp");
    assert_eq!(rec.port_of("rec-v"), Some(rx.port()));
    assert_eq!(rec.port_of("rec-a"), Some(rx.port() + 2));
    assert!(sdp.contains("c=IN IP4 127.0.0.1"), "{sdp}");
    let video_line = sdp
        .lines()
        .find(|l| l.starts_with("m=video"))
        .expect("m=video");
    assert!(
        video_line.starts_with(&format!("m=video {} RTP/AVP ", rx.port())),
        "{sdp}"
    );
    assert!(
        sdp.contains(&format!("m=audio {} RTP/AVP ", rx.port() + 2)),
        "{sdp}"
    );
    assert!(sdp.contains("VP8/90000"), "{sdp}");
    assert!(sdp.contains("opus/48000/2"), "{sdp}");
    let vp8_pt: u8 = sdp
        .lines()
        .find_map(|l| {
            l.strip_prefix("a=rtpmap:")
                .filter(|r| r.contains("VP8/90000"))
        })
        .and_then(|r| r.split(' ').next())
        .and_then(|pt| pt.parse().ok())
        .expect("VP8 payload type");

    let track = rec
        .start_recording("rec-v".into())
        .await
        .expect("recording starts");
    assert_eq!(track.port(), rx.port());
    assert_eq!(track.kind(), MediaKind::Video);
    assert_eq!(
        rec.start_recording("rec-v".into()).await.unwrap_err(),
        RecordingError::AlreadyRecording("rec-v".into())
    );

    // 300 packets (2 s of video): one SSRC, the SDP's payload type, no gap, and the first
    // one starts a keyframe.
    let got = collect(&rx.rtp, Duration::from_secs(10), |g| g.len() >= 300);
    assert!(got.len() >= 300, "only {} RTP packets recorded", got.len());
    let pkts: Vec<Rtp> = got
        .iter()
        .map(|b| parse_rtp(b).expect("plain RTP"))
        .collect();
    let ssrc = pkts[0].ssrc;
    assert!(pkts.iter().all(|p| p.ssrc == ssrc && p.pt == vp8_pt));
    for w in pkts.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "sequence numbers contiguous"
        );
    }
    let first = payload::parse(&pkts[0].payload, str0m::media::MediaKind::Video)
        .expect("the publisher's payload, unchanged");
    assert!(
        first.keyframe,
        "the first packet recorded starts a keyframe"
    );
    assert!(pkts.iter().any(|p| p.marker), "frame ends marked");
    let counters: Vec<u64> = pkts
        .iter()
        .filter_map(|p| payload::parse(&p.payload, str0m::media::MediaKind::Video))
        .map(|s| s.counter)
        .collect();
    assert_eq!(counters.len(), pkts.len());
    assert!(
        counters.windows(2).all(|w| w[1] == w[0] + 1),
        "every packet, in order"
    );

    // Sender reports of that SSRC on the next port, about once a second.
    let reports = collect(&rx.rtcp, Duration::from_secs(5), |g| g.len() >= 2);
    assert!(reports.len() >= 2, "{} sender reports", reports.len());
    for r in &reports {
        assert_eq!(r[1], 200, "a sender report first");
        assert_eq!(u32::from_be_bytes([r[4], r[5], r[6], r[7]]), ssrc);
        let ntp_secs = u32::from_be_bytes([r[8], r[9], r[10], r[11]]);
        assert!(
            ntp_secs > 3_900_000_000,
            "NTP time of this century: {ntp_secs}"
        );
        let packets = u32::from_be_bytes([r[20], r[21], r[22], r[23]]);
        assert!(packets > 0);
        assert_eq!(r[29], 202, "an SDES with the CNAME follows");
    }

    // Audio to its own port.
    let audio_rx = UdpSocket::bind(("127.0.0.1", rx.port() + 2));
    if let Ok(audio_rx) = audio_rx {
        audio_rx
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        rec.start_recording("rec-a".into())
            .await
            .expect("audio recording");
        let got = collect(&audio_rx, Duration::from_secs(5), |g| g.len() >= 50);
        assert!(got.len() >= 50, "only {} audio packets", got.len());
        let a: Vec<Rtp> = got.iter().map(|b| parse_rtp(b).unwrap()).collect();
        assert!(a.iter().all(|p| p.ssrc == a[0].ssrc && p.ssrc != ssrc));
    }

    // Stopping and closing leave nothing behind.
    rec.stop_recording("rec-v").await.expect("stops");
    assert_eq!(
        rec.stop_recording("rec-v").await.unwrap_err(),
        RecordingError::NotRecording("rec-v".into())
    );
    rec.close().await;
    assert!(rec.is_closed());
    assert_eq!(
        rec.start_recording("rec-v".into()).await.unwrap_err(),
        RecordingError::Closed
    );
    let w = worker.clone();
    let mut down_tracks = usize::MAX;
    for _ in 0..100 {
        down_tracks = w.lock().await.stats().await.down_tracks();
        if down_tracks == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(down_tracks, 0, "recording down-tracks removed");
    let _ = rx.rtp.set_read_timeout(Some(Duration::from_millis(300)));
    // Drain what was in flight, then nothing more comes.
    collect(&rx.rtp, Duration::from_millis(300), |_| false);
    let after = collect(&rx.rtp, Duration::from_millis(500), |g| !g.is_empty());
    assert!(after.is_empty(), "packets after close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_recording_requests_get_errors() {
    let (_worker, router) = setup(1).await;
    for (ip, port) in [
        ("not an ip", 5000),
        ("0.0.0.0", 5000),
        ("127.0.0.1", 0),
        ("127.0.0.1", 65535), // no port left for RTCP
        ("224.0.0.1", 5000),
    ] {
        let e = router
            .create_recording_transport(ip.into(), port)
            .await
            .unwrap_err();
        assert!(
            matches!(e, RecordingError::BadAddress(_)),
            "{ip}:{port}: {e}"
        );
    }
    let rec = router
        .create_recording_transport("127.0.0.1".into(), 40000)
        .await
        .expect("transport");
    assert_eq!(
        rec.generate_sdp("nobody".into()).await.unwrap_err(),
        RecordingError::UnknownPublisher("nobody".into())
    );
    assert!(matches!(
        rec.generate_sdp_for(&[]).await.unwrap_err(),
        RecordingError::BadRequest(_)
    ));
    assert_eq!(
        rec.start_recording("nobody".into()).await.unwrap_err(),
        RecordingError::UnknownPublisher("nobody".into())
    );
    let p = connect_publisher(&router, None, Some("rec-x"), PeerConfig::default()).await;
    assert!(matches!(
        rec.generate_sdp_for(&["rec-x".into(), "rec-x".into()])
            .await
            .unwrap_err(),
        RecordingError::BadRequest(_)
    ));
    // The publisher leaving ends its recording.
    let track = rec.start_recording("rec-x".into()).await.expect("starts");
    p.transport.close().await;
    assert!(
        wait_until(Duration::from_secs(5), || rec
            .stop_recording("rec-x")
            .now_or_never_err())
        .await,
        "recording of a publisher that left ends"
    );
    drop(track);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_router_mid_recording_leaves_nothing() {
    let (worker, router) = setup(2).await;
    let p = connect_publisher(&router, Some("rc-a"), Some("rc-v"), PeerConfig::default()).await;
    let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
    sub.subscribe("rc-v").await;
    let rx = Receiver::bind();
    let rec = router
        .create_recording_transport("127.0.0.1".into(), rx.port())
        .await
        .expect("transport");
    rec.start_recording("rc-v".into()).await.expect("starts");
    p.peer.start_sending(150, 50, Duration::from_millis(500));
    let got = collect(&rx.rtp, Duration::from_secs(10), |g| g.len() >= 20);
    assert!(got.len() >= 20, "recording flows: {} packets", got.len());

    router.close().await;
    assert!(router.is_closed());
    assert!(rec.is_closed(), "the recording transport is closed");
    assert_eq!(
        rec.start_recording("rc-v".into()).await.unwrap_err(),
        RecordingError::Closed
    );
    assert!(router.publisher_ids().is_empty(), "publishers unpublished");
    assert!(sub.subscribers[0].is_closed(), "the subscriber is told");
    let w = worker.clone();
    let mut left = (usize::MAX, usize::MAX, usize::MAX);
    for _ in 0..250 {
        let s = w.lock().await.stats().await;
        left = (s.sessions(), s.down_tracks(), s.routes());
        if left == (0, 0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, (0, 0, 0), "sessions, down-tracks, routes after close");

    // A closed router creates closed transports.
    let late = router.create_publish_transport(Default::default()).await;
    assert_eq!(late.state(), rheomesh::transport::TransportState::Closed);
    assert_eq!(
        router
            .create_recording_transport("127.0.0.1".into(), rx.port())
            .await
            .unwrap_err(),
        RecordingError::Closed
    );
}

/// `stop_recording` resolves at once: whether it said "not recording".
trait NowOrNever {
    fn now_or_never_err(self) -> bool;
}

impl<F: std::future::Future<Output = Result<(), RecordingError>>> NowOrNever for F {
    fn now_or_never_err(self) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(self);
        matches!(
            f.as_mut().poll(&mut cx),
            std::task::Poll::Ready(Err(RecordingError::NotRecording(_)))
        )
    }
}
