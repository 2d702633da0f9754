//! WHIP ingest (RFC 9725) and WHEP playback over a [`Router`], independent of any HTTP
//! framework: an adapter turns its HTTP request into a [`Request`] and the returned
//! [`Response`] back (the `axum` feature has one: [`axum`](mod@self::axum)).
//!
//! A WHIP client `POST`s an SDP offer; [`Whip::post`] creates a
//! [`PublishTransport`] for it, answers, publishes every track the offer sends in the
//! router (the `a=msid` track ids are the publisher ids, as for the WebSocket protocol)
//! and returns `201 Created` with the answer, the resource's `Location` and an `ETag`.
//! [`Whip::patch`] takes `application/trickle-ice-sdpfrag` bodies on the resource: trickled
//! candidates (`204`), or new ICE credentials, which restart ICE (`200` with the server's
//! new credentials and candidates, and a new `ETag`). [`Whip::delete`] ends the session
//! (its tracks are unpublished, their subscribers told). Errors are the statuses of the
//! RFC: `400` bad SDP or fragment, `401` missing or wrong bearer token, `404` unknown
//! resource, `409` a track id already published, `412` an `If-Match` that is not the
//! resource's `ETag`, `413` body too large, `415` wrong content type, `428` a `PATCH`
//! without `If-Match`, `503` too many sessions.
//!
//! WHEP is the same resource protocol the other way: [`Whip::post_whep`] answers a viewer's
//! offer (receiving m-lines) with published tracks bound to them, through a
//! [`SubscribeTransport`] whose offers come from the viewer
//! ([`SubscribeTransport::answer_viewer_offer`]); `PATCH` and `DELETE` are shared. A WHEP
//! session ends by itself when every track it plays is unpublished.
//!
//! Every response carries the CORS headers a browser client needs.

pub mod sdpfrag;

#[cfg(feature = "axum")]
pub mod axum;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::config::WebRTCTransportConfig;
use crate::publisher::Publisher;
use crate::router::Router;
use crate::signal::{IceCandidateInit, SessionDescription};
use crate::subscriber::Subscriber;
use crate::transport::{PublishTransport, SubscribeTransport};

/// Largest offer accepted (browsers' offers are a few KiB; simulcast with many codecs
/// stays under 16 KiB).
pub const MAX_OFFER: usize = 64 * 1024;

/// What a [`Whip`] endpoint accepts.
#[derive(Debug, Clone)]
pub struct WhipConfig {
    /// `Some`: requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Sessions at once (further `POST`s get `503`).
    pub max_sessions: usize,
    /// `Access-Control-Allow-Origin` of every response.
    pub allow_origin: String,
    /// The configuration of the publish transports.
    pub transport: WebRTCTransportConfig,
}

impl Default for WhipConfig {
    fn default() -> Self {
        WhipConfig {
            token: None,
            max_sessions: 1024,
            allow_origin: "*".into(),
            transport: WebRTCTransportConfig::default(),
        }
    }
}

/// The parts of an HTTP request WHIP reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// `Content-Type`.
    pub content_type: Option<&'a str>,
    /// `Authorization`.
    pub authorization: Option<&'a str>,
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// The body (an adapter refuses bodies that are not UTF-8 with `400`).
    pub body: &'a str,
}

/// An HTTP response to send as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers, CORS included.
    pub headers: Vec<(&'static str, String)>,
    /// The body (an SDP, a fragment, or an error text).
    pub body: String,
}

impl Response {
    fn new(status: u16, body: impl Into<String>) -> Response {
        let body = body.into();
        let mut headers = Vec::new();
        if !body.is_empty() {
            headers.push(("Content-Type", "text/plain; charset=utf-8".to_string()));
        }
        Response {
            status,
            headers,
            body,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }

    /// The value of header `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A `POST` that created a session.
#[derive(Debug)]
pub struct Published {
    /// `201 Created` with the answer.
    pub response: Response,
    /// The resource id (the last segment of `Location`).
    pub resource: String,
    /// The published tracks (the caller may tell its participants about them).
    pub publishers: Vec<Publisher>,
}

/// A WHEP `POST` that created a session.
#[derive(Debug)]
pub struct Viewing {
    /// `201 Created` with the answer.
    pub response: Response,
    /// The resource id (the last segment of `Location`).
    pub resource: String,
    /// A subscriber per track bound to the viewer's m-lines.
    pub subscribers: Vec<Subscriber>,
}

/// The transport behind a resource.
#[derive(Clone)]
enum Transport {
    /// WHIP: the client publishes.
    Publish(PublishTransport),
    /// WHEP: the client views.
    View(SubscribeTransport),
}

impl Transport {
    async fn close(&self) {
        match self {
            Transport::Publish(t) => t.close().await,
            Transport::View(t) => t.close().await,
        }
    }

    async fn add_ice_candidate(&self, c: IceCandidateInit) -> Result<(), String> {
        let r = match self {
            Transport::Publish(t) => t.add_ice_candidate(c).await,
            Transport::View(t) => t.add_ice_candidate(c).await,
        };
        r.map_err(|e| e.to_string())
    }

    /// Apply the client's offer again (an ICE restart): the answer.
    async fn reoffer(&self, offer: String) -> Result<String, String> {
        match self {
            Transport::Publish(t) => t
                .get_answer(SessionDescription::offer(offer))
                .await
                .map(|a| a.sdp)
                .map_err(|e| e.to_string()),
            Transport::View(t) => t
                .answer_viewer_offer(SessionDescription::offer(offer), &[])
                .await
                .map(|(a, _)| a.sdp)
                .map_err(|e| e.to_string()),
        }
    }
}

struct Session {
    transport: Transport,
    /// The offer as last applied (an ICE restart re-applies it with new credentials).
    offer: String,
    etag: String,
    /// Serializes `PATCH`es of one session.
    patching: Arc<tokio::sync::Mutex<()>>,
}

/// A WHIP endpoint: its sessions (the resources `POST` created) and its configuration.
/// Cheap to clone.
#[derive(Clone)]
pub struct Whip {
    inner: Arc<WhipInner>,
}

struct WhipInner {
    config: WhipConfig,
    sessions: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Whip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whip")
            .field("sessions", &self.sessions())
            .finish()
    }
}

impl Whip {
    /// An endpoint with no session.
    pub fn new(config: WhipConfig) -> Whip {
        Whip {
            inner: Arc::new(WhipInner {
                config,
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// `OPTIONS` (a CORS preflight, or a client asking what the endpoint takes).
    pub fn options(&self) -> Response {
        self.cors(Response::new(204, ""))
            .header("Accept-Post", "application/sdp")
            .header("Accept-Patch", "application/trickle-ice-sdpfrag")
    }

    /// A response for a method the endpoint does not serve.
    pub fn method_not_allowed(&self, allow: &'static str) -> Response {
        self.cors(Response::new(405, "method not allowed"))
            .header("Allow", allow)
    }

    /// `POST` of an offer (WHIP): publish its tracks in `router`. `location_prefix` is the
    /// path the resource goes under (`Location` is `{location_prefix}/{resource}`).
    pub async fn post(
        &self,
        router: &Router,
        location_prefix: &str,
        req: &Request<'_>,
    ) -> Result<Published, Response> {
        self.check_offer(req)?;
        let transport = router
            .create_publish_transport(self.inner.config.transport.clone())
            .await;
        let answer = match transport
            .get_answer(SessionDescription::offer(req.body))
            .await
        {
            Ok(a) => a,
            Err(e) => {
                transport.close().await;
                return Err(self.error(400, format!("offer refused: {e}")));
            }
        };
        let ids = transport.track_ids();
        if ids.is_empty() {
            transport.close().await;
            return Err(self.error(400, "the offer sends no media this server can receive"));
        }
        let mut publishers = Vec::with_capacity(ids.len());
        for id in ids {
            match transport.try_publish(id.clone()).await {
                Ok(p) => publishers.push(p),
                Err(e) => {
                    transport.close().await;
                    let status = match e {
                        crate::error::PublishError::AlreadyPublished(_) => 409,
                        _ => 400,
                    };
                    return Err(self.error(status, format!("track {id:?}: {e}")));
                }
            }
        }
        let (response, resource) = self
            .register(
                Transport::Publish(transport),
                req.body,
                answer.sdp,
                location_prefix,
            )
            .await?;
        Ok(Published {
            response,
            resource,
            publishers,
        })
    }

    /// `POST` of a viewer's offer (WHEP): answer it with the tracks `publisher_ids` of
    /// `router` bound to its receiving m-lines (`404` when none of them is published).
    /// The session ends by itself once every track it plays is unpublished.
    pub async fn post_whep(
        &self,
        router: &Router,
        location_prefix: &str,
        publisher_ids: &[String],
        req: &Request<'_>,
    ) -> Result<Viewing, Response> {
        self.check_offer(req)?;
        let published = router.publisher_ids();
        let ids: Vec<String> = publisher_ids
            .iter()
            .filter(|id| published.contains(id))
            .cloned()
            .collect();
        if ids.is_empty() {
            return Err(self.error(404, "nothing is published under that name"));
        }
        let transport = router
            .create_subscribe_transport(self.inner.config.transport.clone())
            .await;
        let (answer, subscribers) = match transport
            .answer_viewer_offer(SessionDescription::offer(req.body), &ids)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                transport.close().await;
                return Err(self.error(400, e.to_string()));
            }
        };
        let (response, resource) = self
            .register(
                Transport::View(transport.clone()),
                req.body,
                answer.sdp,
                location_prefix,
            )
            .await?;
        // Nothing left to play: the session ends (the viewer sees its connection close).
        let subs = subscribers.clone();
        tokio::spawn(async move {
            for s in &subs {
                s.closed().await;
            }
            transport.close().await;
        });
        Ok(Viewing {
            response,
            resource,
            subscribers,
        })
    }

    /// The checks every `POST` passes first.
    fn check_offer(&self, req: &Request<'_>) -> Result<(), Response> {
        self.authorize(req)?;
        if !is_type(req.content_type, "application/sdp") {
            return Err(self.error(415, "the offer must be application/sdp"));
        }
        if req.body.len() > MAX_OFFER {
            return Err(self.error(413, format!("offers are at most {MAX_OFFER} bytes")));
        }
        if !req.body.trim_start().starts_with("v=0") {
            return Err(self.error(400, "the body is not an SDP offer (no v=0)"));
        }
        if self.sessions() >= self.inner.config.max_sessions {
            return Err(self
                .error(503, "too many sessions")
                .header("Retry-After", "5"));
        }
        Ok(())
    }

    /// Enter a new session in the table (it leaves when its transport closes) and make
    /// its `201`: the answer, `Location`, `ETag`.
    async fn register(
        &self,
        transport: Transport,
        offer: &str,
        answer: String,
        location_prefix: &str,
    ) -> Result<(Response, String), Response> {
        let resource = random_token();
        let etag = etag_of(&answer);
        let full = {
            let mut sessions = self.lock();
            let full = sessions.len() >= self.inner.config.max_sessions;
            if !full {
                sessions.insert(
                    resource.clone(),
                    Session {
                        transport: transport.clone(),
                        offer: offer.to_string(),
                        etag: etag.clone(),
                        patching: Arc::default(),
                    },
                );
            }
            full
        };
        if full {
            transport.close().await;
            return Err(self
                .error(503, "too many sessions")
                .header("Retry-After", "5"));
        }
        let weak: Weak<WhipInner> = Arc::downgrade(&self.inner);
        let key = resource.clone();
        let forget: crate::transport::ClosedCallback = Box::new(move || {
            if let Some(inner) = weak.upgrade() {
                inner
                    .sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
            }
        });
        match &transport {
            Transport::Publish(t) => t.on_closed(forget).await,
            Transport::View(t) => t.on_closed(forget).await,
        }
        let location = format!("{}/{resource}", location_prefix.trim_end_matches('/'));
        let response = self
            .cors(Response::new(201, ""))
            .header("Content-Type", "application/sdp")
            .header("Location", location)
            .header("ETag", etag)
            .header("Accept-Patch", "application/trickle-ice-sdpfrag");
        Ok((
            Response {
                body: answer,
                ..response
            },
            resource,
        ))
    }

    /// `PATCH` on `resource`: trickled candidates, or an ICE restart.
    pub async fn patch(&self, resource: &str, req: &Request<'_>) -> Response {
        if let Err(r) = self.authorize(req) {
            return r;
        }
        let Some((transport, patching)) = self
            .lock()
            .get(resource)
            .map(|s| (s.transport.clone(), s.patching.clone()))
        else {
            return self.error(404, "no such session");
        };
        if !is_type(req.content_type, "application/trickle-ice-sdpfrag") {
            return self.error(415, "PATCH takes application/trickle-ice-sdpfrag");
        }
        let frag = match sdpfrag::parse(req.body) {
            Ok(f) => f,
            Err(e) => return self.error(400, format!("bad fragment: {e}")),
        };
        let _one_at_a_time = patching.lock().await;
        let Some((offer, etag)) = self
            .lock()
            .get(resource)
            .map(|s| (s.offer.clone(), s.etag.clone()))
        else {
            return self.error(404, "no such session");
        };
        let if_match = match req.if_match.map(str::trim) {
            None => return self.error(428, "PATCH needs If-Match"),
            Some(v) => v,
        };
        let current = sdpfrag::credentials(&offer).map(|(u, _)| u.to_string());
        let restart = frag.ufrag.is_some() && frag.ufrag != current;
        if if_match != "*" && if_match != etag {
            return self.error(412, "If-Match is not the session's ETag");
        }
        if if_match == "*" && !restart {
            return self.error(412, "If-Match: * is for ICE restarts (new credentials)");
        }
        let mut response = self.cors(Response::new(204, ""));
        if restart {
            let (Some(ufrag), Some(pwd)) = (&frag.ufrag, &frag.pwd) else {
                return self.error(400, "an ICE restart needs a=ice-ufrag and a=ice-pwd");
            };
            let new_offer = sdpfrag::with_credentials(&offer, ufrag, pwd);
            let answer = match transport.reoffer(new_offer.clone()).await {
                Ok(a) => a,
                Err(e) => return self.error(400, format!("ICE restart refused: {e}")),
            };
            let etag = etag_of(&answer);
            if let Some(s) = self.lock().get_mut(resource) {
                s.offer = new_offer;
                s.etag = etag.clone();
            }
            response = self
                .cors(Response::new(200, ""))
                .header("Content-Type", "application/trickle-ice-sdpfrag")
                .header("ETag", etag);
            response.body = sdpfrag::from_answer(&answer);
        }
        for (mid, candidate) in frag.candidates {
            let init = IceCandidateInit {
                candidate,
                sdp_mid: mid,
                sdp_mline_index: None,
                username_fragment: frag.ufrag.clone(),
            };
            if let Err(e) = transport.add_ice_candidate(init).await {
                return self.error(400, format!("candidate refused: {e}"));
            }
        }
        response
    }

    /// `DELETE` of `resource`: the session ends, its tracks are unpublished.
    pub async fn delete(&self, resource: &str, req: &Request<'_>) -> Response {
        if let Err(r) = self.authorize(req) {
            return r;
        }
        let Some(session) = self.lock().remove(resource) else {
            return self.error(404, "no such session");
        };
        session.transport.close().await;
        self.cors(Response::new(200, ""))
    }

    /// End every session (e.g. at shutdown); returns once their transports are closed.
    pub async fn close_all(&self) {
        let sessions: Vec<Session> = self.lock().drain().map(|(_, s)| s).collect();
        for s in sessions {
            s.transport.close().await;
        }
    }

    /// The publish transport of `resource`, if it is a WHIP session of this endpoint.
    pub fn transport(&self, resource: &str) -> Option<PublishTransport> {
        match self.lock().get(resource).map(|s| s.transport.clone()) {
            Some(Transport::Publish(t)) => Some(t),
            _ => None,
        }
    }

    fn authorize(&self, req: &Request<'_>) -> Result<(), Response> {
        if self.is_authorized(req.authorization) {
            return Ok(());
        }
        Err(self
            .error(401, "a valid bearer token is required")
            .header("WWW-Authenticate", "Bearer"))
    }

    /// Whether an `Authorization` header value carries the configured bearer token
    /// (compared in constant time); true when no token is configured. For a host that
    /// must check a request before handing it over (the requests themselves check it).
    pub fn is_authorized(&self, authorization: Option<&str>) -> bool {
        let Some(token) = &self.inner.config.token else {
            return true;
        };
        let given = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
    }

    fn error(&self, status: u16, message: impl Into<String>) -> Response {
        self.cors(Response::new(status, message))
    }

    fn cors(&self, r: Response) -> Response {
        r.header(
            "Access-Control-Allow-Origin",
            self.inner.config.allow_origin.clone(),
        )
        .header(
            "Access-Control-Allow-Methods",
            "POST, PATCH, DELETE, OPTIONS",
        )
        .header(
            "Access-Control-Allow-Headers",
            "Authorization, Content-Type, If-Match",
        )
        .header(
            "Access-Control-Expose-Headers",
            "Location, ETag, Accept-Patch, Accept-Post",
        )
    }
}

/// Whether `content_type` is `expected` (parameters and case ignored).
fn is_type(content_type: Option<&str>, expected: &str) -> bool {
    content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case(expected))
}

/// 128 random bits, hex: resource ids are capabilities, not counters.
fn random_token() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// An ETag naming the ICE session of `answer` (its credentials).
fn etag_of(answer: &str) -> String {
    let (ufrag, _) = sdpfrag::credentials(answer).unwrap_or(("", ""));
    format!("\"{ufrag}-{}\"", &random_token()[..8])
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
