//! WHIP (RFC 9725) through `rheomesh::whip`, framework-independent, with a real str0m
//! publisher over UDP on 127.0.0.1: `POST` publishes every track of the offer (a subscriber
//! receives them), `PATCH` trickles candidates and restarts ICE, `DELETE` unpublishes; and
//! the error statuses for bad requests.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::peer::{PeerConfig, TestPeer};
use common::sfu::{connect_subscriber, sessions_after, setup, wait_connected, wait_until};
use rheomesh::router::Router;
use rheomesh::whip::{sdpfrag, Request, Response, Whip, WhipConfig};

const SDP: Option<&str> = Some("application/sdp");
const FRAG: Option<&str> = Some("application/trickle-ice-sdpfrag");

fn req<'a>(content_type: Option<&'a str>, if_match: Option<&'a str>, body: &'a str) -> Request<'a> {
    Request {
        content_type,
        authorization: None,
        if_match,
        body,
    }
}

/// The trickle fragment of `peer`'s host candidate.
fn trickle(peer: &TestPeer) -> String {
    format!(
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na={}\r\n",
        peer.local_candidate()
    )
}

/// A WHIP session of a str0m peer publishing `audio` and `video`, connected.
async fn whip_publish(
    whip: &Whip,
    router: &Router,
    audio: &str,
    video: &str,
) -> (Arc<TestPeer>, String, String) {
    let peer = Arc::new(TestPeer::new(PeerConfig::default()));
    let offer = peer.publish_offer(Some(audio), Some(video));
    let published = whip
        .post(router, "/whip/room/cam", &req(SDP, None, &offer))
        .await
        .unwrap_or_else(|r| panic!("POST refused: {} {}", r.status, r.body));
    let r = &published.response;
    assert_eq!(r.status, 201);
    assert_eq!(r.get("content-type"), Some("application/sdp"));
    let location = r.get("location").unwrap().to_string();
    assert_eq!(location, format!("/whip/room/cam/{}", published.resource));
    assert_eq!(
        r.get("accept-patch"),
        Some("application/trickle-ice-sdpfrag")
    );
    assert_eq!(r.get("access-control-allow-origin"), Some("*"));
    assert!(
        r.body.contains("a=candidate:"),
        "the answer carries the server's candidates:\n{}",
        r.body
    );
    let mut ids: Vec<String> = published
        .publishers
        .iter()
        .map(|p| p.id().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![audio.to_string(), video.to_string()]);
    let etag = r.get("etag").unwrap().to_string();
    peer.accept_answer(&r.body).expect("answer accepted");
    let patched = whip
        .patch(
            &published.resource,
            &req(FRAG, Some(&etag), &trickle(&peer)),
        )
        .await;
    assert_eq!(patched.status, 204, "{}", patched.body);
    assert!(
        wait_connected(&peer, Duration::from_secs(10)).await,
        "the WHIP publisher connects"
    );
    (peer, published.resource, etag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publishes_restarts_ice_and_deletes() {
    let (worker, router) = setup(2).await;
    let whip = Whip::new(WhipConfig::default());
    let (peer, resource, etag) = whip_publish(&whip, &router, "whip-a", "whip-v").await;
    assert_eq!(
        router.publisher_ids(),
        vec!["whip-a".to_string(), "whip-v".to_string()]
    );
    assert_eq!(whip.sessions(), 1);

    // A subscriber of the room receives it like any publisher.
    let mut sub = connect_subscriber(&router, PeerConfig::default()).await;
    let subscriber = sub.subscribe("whip-v").await;
    peer.start_sending(100, 50, Duration::from_millis(500));
    assert!(
        wait_until(Duration::from_secs(10), || sub
            .peer
            .received("whip-v")
            .distinct_counters
            >= 100)
        .await,
        "the subscriber gets the WHIP publisher's video: {:?}",
        sub.peer.received("whip-v")
    );

    // ICE restart: new client credentials with If-Match: *; the server answers its own new
    // ones and a new ETag; the old ETag no longer matches.
    let restart = "a=ice-ufrag:rstr\r\na=ice-pwd:restartrestartrestart0\r\n";
    let r = whip.patch(&resource, &req(FRAG, Some("*"), restart)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.get("content-type"),
        Some("application/trickle-ice-sdpfrag")
    );
    let new_etag = r.get("etag").unwrap().to_string();
    assert_ne!(new_etag, etag);
    let frag = sdpfrag::parse(&r.body).expect("the reply is a fragment");
    assert!(frag.ufrag.is_some() && frag.pwd.is_some(), "{}", r.body);
    assert!(
        !frag.candidates.is_empty(),
        "with the server's candidates: {}",
        r.body
    );
    let stale = whip
        .patch(&resource, &req(FRAG, Some(&etag), &trickle(&peer)))
        .await;
    assert_eq!(stale.status, 412);
    let same = whip
        .patch(&resource, &req(FRAG, Some(&new_etag), &trickle(&peer)))
        .await;
    assert_eq!(same.status, 204, "{}", same.body);

    // DELETE ends it: tracks unpublished, the subscriber told, nothing left.
    assert_eq!(
        whip.delete(&resource, &req(None, None, "")).await.status,
        200
    );
    assert_eq!(
        whip.delete(&resource, &req(None, None, "")).await.status,
        404
    );
    assert!(router.publisher_ids().is_empty());
    assert!(
        wait_until(Duration::from_secs(5), || subscriber.is_closed()).await,
        "the subscriber is told"
    );
    assert_eq!(whip.sessions(), 0);
    sub.transport.close().await;
    assert_eq!(sessions_after(&worker).await, 0, "no session left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_whip_requests_get_their_statuses() {
    let (_worker, router) = setup(1).await;
    let whip = Whip::new(WhipConfig {
        token: Some("s3cret".into()),
        max_sessions: 1,
        ..WhipConfig::default()
    });
    let peer = TestPeer::new(PeerConfig::default());
    let offer = peer.publish_offer(Some("bad-a"), Some("bad-v"));
    let authed = |content_type, if_match, body| Request {
        authorization: Some("Bearer s3cret"),
        ..req(content_type, if_match, body)
    };
    let status = |r: Result<rheomesh::whip::Published, Response>| match r {
        Ok(p) => p.response.status,
        Err(r) => r.status,
    };
    // No token, a wrong one: 401 with WWW-Authenticate.
    let r = whip
        .post(&router, "/w", &req(SDP, None, &offer))
        .await
        .unwrap_err();
    assert_eq!((r.status, r.get("www-authenticate")), (401, Some("Bearer")));
    let wrong = Request {
        authorization: Some("Bearer s3creT"),
        ..req(SDP, None, &offer)
    };
    assert_eq!(status(whip.post(&router, "/w", &wrong).await), 401);
    // Wrong type, not SDP, an SDP str0m refuses, too large.
    assert_eq!(
        status(
            whip.post(&router, "/w", &authed(Some("text/plain"), None, &offer))
                .await
        ),
        415
    );
    assert_eq!(
        status(whip.post(&router, "/w", &authed(SDP, None, "hello")).await),
        400
    );
    let broken = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
    let r = whip
        .post(&router, "/w", &authed(SDP, None, broken))
        .await
        .unwrap_err();
    assert_eq!(r.status, 400, "{}", r.body);
    let huge = format!("v=0\r\n{}", "a=x\r\n".repeat(20_000));
    assert_eq!(
        status(whip.post(&router, "/w", &authed(SDP, None, &huge)).await),
        413
    );
    assert!(router.publisher_ids().is_empty(), "nothing was published");

    // One session allowed: the next gets 503; the same track ids get 409 once there is room.
    let first = whip
        .post(&router, "/w", &authed(SDP, None, &offer))
        .await
        .expect("first session");
    let other = TestPeer::new(PeerConfig::default()).publish_offer(Some("x-a"), None);
    let r = whip
        .post(&router, "/w", &authed(SDP, None, &other))
        .await
        .unwrap_err();
    assert_eq!((r.status, r.get("retry-after")), (503, Some("5")));
    let roomy = Whip::new(WhipConfig::default());
    let again = TestPeer::new(PeerConfig::default()).publish_offer(Some("bad-a"), Some("bad-v"));
    assert_eq!(
        status(roomy.post(&router, "/w", &req(SDP, None, &again)).await),
        409
    );
    assert_eq!(roomy.sessions(), 0, "a refused POST leaves no session");

    // PATCH: unknown resource 404, wrong type 415, no If-Match 428, stale ETag 412, bad
    // fragment 400; If-Match * without new credentials 412.
    let res = &first.resource;
    let etag = first.response.get("etag").unwrap();
    let cand = format!("a={}\r\n", peer.local_candidate());
    assert_eq!(
        whip.patch("nope", &authed(FRAG, Some(etag), &cand))
            .await
            .status,
        404
    );
    assert_eq!(
        whip.patch(res, &req(FRAG, Some(etag), &cand)).await.status,
        401
    );
    assert_eq!(
        whip.patch(res, &authed(SDP, Some(etag), &cand))
            .await
            .status,
        415
    );
    assert_eq!(
        whip.patch(res, &authed(FRAG, None, &cand)).await.status,
        428
    );
    assert_eq!(
        whip.patch(res, &authed(FRAG, Some("\"old\""), &cand))
            .await
            .status,
        412
    );
    assert_eq!(
        whip.patch(res, &authed(FRAG, Some(etag), "garbage\r\n"))
            .await
            .status,
        400
    );
    assert_eq!(
        whip.patch(res, &authed(FRAG, Some("*"), &cand))
            .await
            .status,
        412
    );
    assert_eq!(
        whip.patch(res, &authed(FRAG, Some(etag), &cand))
            .await
            .status,
        204
    );
    // DELETE: token, unknown; OPTIONS says what is accepted.
    assert_eq!(whip.delete(res, &req(None, None, "")).await.status, 401);
    assert_eq!(
        whip.delete("nope", &authed(None, None, "")).await.status,
        404
    );
    let o = whip.options();
    assert_eq!(
        (o.status, o.get("accept-post")),
        (204, Some("application/sdp"))
    );
    assert_eq!(whip.delete(res, &authed(None, None, "")).await.status, 200);
    assert_eq!(whip.sessions(), 0);
    assert!(router.publisher_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_plays_a_whip_stream_restarts_ice_and_ends_with_it() {
    let (worker, router) = setup(2).await;
    let whip = Whip::new(WhipConfig::default());
    let (publisher, whip_resource, _) = whip_publish(&whip, &router, "whep-a", "whep-v").await;
    publisher.start_sending(100, 50, Duration::from_millis(500));

    // A str0m viewer offers to receive audio and video; the server binds the two tracks.
    let viewer = Arc::new(TestPeer::new(PeerConfig::default()));
    let offer = viewer.view_offer();
    let ids = vec!["whep-a".to_string(), "whep-v".to_string()];
    let viewing = whip
        .post_whep(&router, "/whep/room/cam", &ids, &req(SDP, None, &offer))
        .await
        .unwrap_or_else(|r| panic!("WHEP POST refused: {} {}", r.status, r.body));
    let r = &viewing.response;
    assert_eq!(r.status, 201);
    assert_eq!(viewing.subscribers.len(), 2);
    assert!(r.get("location").unwrap().starts_with("/whep/room/cam/"));
    let etag = r.get("etag").unwrap().to_string();
    viewer
        .accept_answer(&r.body)
        .expect("the viewer takes the answer");
    let patched = whip
        .patch(
            &viewing.resource,
            &req(FRAG, Some(&etag), &trickle(&viewer)),
        )
        .await;
    assert_eq!(patched.status, 204, "{}", patched.body);
    assert!(
        wait_connected(&viewer, Duration::from_secs(10)).await,
        "the viewer connects"
    );
    let received = |v: &TestPeer| {
        v.remote_track_ids()
            .iter()
            .map(|id| v.received(id).distinct_counters)
            .collect::<Vec<u64>>()
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            let r = received(&viewer);
            r.len() == 2 && r.iter().all(|n| *n >= 40)
        })
        .await,
        "the viewer receives audio and video: {:?}",
        received(&viewer)
    );

    // An ICE restart re-applies the viewer's offer; the session stays.
    let r = whip
        .patch(
            &viewing.resource,
            &req(
                FRAG,
                Some("*"),
                "a=ice-ufrag:wrst\r\na=ice-pwd:whepwhepwhepwhepwhep00\r\n",
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(sdpfrag::parse(&r.body).unwrap().ufrag.is_some());

    // Errors: nothing published under the name, an offer receiving nothing.
    let none = whip
        .post_whep(
            &router,
            "/whep",
            &["nobody".into()],
            &req(SDP, None, &offer),
        )
        .await
        .unwrap_err();
    assert_eq!(none.status, 404);
    let sender_only = TestPeer::new(PeerConfig::default()).publish_offer(Some("zz-a"), None);
    let r = whip
        .post_whep(&router, "/whep", &ids, &req(SDP, None, &sender_only))
        .await
        .unwrap_err();
    assert_eq!(r.status, 400, "{}", r.body);

    // The WHIP publisher leaves: the WHEP session ends by itself.
    assert_eq!(
        whip.delete(&whip_resource, &req(None, None, ""))
            .await
            .status,
        200
    );
    assert!(
        wait_until(Duration::from_secs(5), || whip.sessions() == 0).await,
        "the WHEP session ends with its stream: {} left",
        whip.sessions()
    );
    assert_eq!(sessions_after(&worker).await, 0, "no session left");
}
