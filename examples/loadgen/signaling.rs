//! One WebSocket per loadgen participant, speaking `docs/PROTOCOL.md` the way the browser
//! client does:
//!
//! * publisher: `PublisherInit`, `Offer` (one sendonly VP8 m-line), trickle our host
//!   candidate (`PublisherIce`); on `Answer` apply it and send `Publish{publisherId}`.
//! * subscriber: `SubscriberInit`; when `Published` lists our publisher's track send
//!   `Subscribe`; answer every server `Offer` (first one and renegotiations), trickle our
//!   candidate (`SubscriberIce`) after the first answer; wait for `Subscribed`.
//!
//! Server candidates that arrive before the remote description are queued, as a browser
//! does. A participant is ready once str0m reports ICE+DTLS connected and the steps above
//! are done; it then keeps serving its WebSocket (renegotiation, candidates) until
//! shutdown.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::media::{self, Engine, PeerEvent, PeerRef};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type ReadySlot = (
    oneshot::Sender<Result<Ready, Failure>>,
    Option<OwnedSemaphorePermit>,
);

/// Open a WebSocket (`ws://`, or `wss://` through `tls`: `None` verifies the server with
/// the web PKI roots), with errors that say what went wrong.
pub async fn connect(url: &str, tls: Option<&Connector>, deadline: Instant) -> Result<Ws, String> {
    let attempt = tokio_tungstenite::connect_async_tls_with_config(url, None, true, tls.cloned());
    match tokio::time::timeout_at(deadline, attempt).await {
        Err(_) => Err(format!("no WebSocket connection to {url} in time")),
        Ok(Err(e)) => Err(describe(url, e)),
        Ok(Ok((ws, _))) => Ok(ws),
    }
}

fn describe(url: &str, e: tungstenite::Error) -> String {
    match e {
        // rustls reports a rejected certificate as an I/O error of the handshake.
        tungstenite::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => format!(
            "TLS handshake with {url} failed: {io} (a self-signed certificate? use --insecure)"
        ),
        tungstenite::Error::Io(io) => format!("cannot connect to {url}: {io}"),
        tungstenite::Error::Tls(e) => format!("TLS with {url} failed: {e}"),
        tungstenite::Error::Url(u) => format!("bad URL {url}: {u}"),
        tungstenite::Error::Http(resp) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default();
            format!(
                "the server refused the WebSocket at {url}: HTTP {} {body}",
                resp.status()
            )
        }
        other => format!("WebSocket handshake with {url} failed: {other}"),
    }
}

/// Shared by all participants.
pub struct Ctx {
    /// One URL per room (`--rooms`); publisher `i` uses `urls[i % len]`, its subscribers
    /// `subscribe_urls[i % len]` (the same, unless `--subscribe-url`).
    pub urls: Vec<String>,
    pub subscribe_urls: Vec<String>,
    /// TLS for `wss://` (`None`: verify with the web PKI roots).
    pub tls: Option<Connector>,
    /// Address of the peers' UDP sockets (their host candidates).
    pub bind: Ipv4Addr,
    /// Publishers send three simulcast encodings; subscriber `i` prefers layer `i % 3`.
    pub simulcast: bool,
    pub engine: Arc<Engine>,
    pub timeout: Duration,
    pub shutdown: watch::Receiver<bool>,
    /// Problems after setup (closed WebSockets, Error frames, ICE disconnects).
    pub incidents: AtomicU64,
    pub incident_samples: Mutex<Vec<String>>,
}

impl Ctx {
    /// The signaling URL (and so the room) of `spec`: its publisher's room.
    fn url_for(&self, spec: &Spec) -> &str {
        match spec {
            Spec::Publisher { index, .. } => &self.urls[*index as usize % self.urls.len()],
            Spec::Subscriber { publisher, .. } => {
                &self.subscribe_urls[*publisher as usize % self.subscribe_urls.len()]
            }
        }
    }

    fn incident(&self, what: String) {
        self.incidents.fetch_add(1, Relaxed);
        let mut s = self
            .incident_samples
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if s.len() < 5 {
            s.push(what);
        }
    }
}

/// Who a participant is.
#[derive(Debug, Clone)]
pub enum Spec {
    Publisher {
        index: u32,
        track_id: String,
    },
    Subscriber {
        index: u32,
        publisher: u32,
        track_id: String,
    },
}

impl Spec {
    fn name(&self) -> String {
        match self {
            Spec::Publisher { index, .. } => format!("publisher {index}"),
            Spec::Subscriber {
                index, publisher, ..
            } => format!("subscriber {index} (of publisher {publisher})"),
        }
    }

    fn track_id(&self) -> &str {
        match self {
            Spec::Publisher { track_id, .. } | Spec::Subscriber { track_id, .. } => track_id,
        }
    }

    fn is_publisher(&self) -> bool {
        matches!(self, Spec::Publisher { .. })
    }
}

/// A participant that finished its setup.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub setup: Duration,
}

/// Why a participant failed to set up: the reason without the participant's name, so
/// failures can be grouped.
#[derive(Debug, Clone)]
pub struct Failure {
    pub who: String,
    pub reason: String,
}

#[derive(Default)]
struct State {
    /// Publisher: answer applied. Subscriber: at least one offer answered.
    negotiated: bool,
    subscribe_sent: bool,
    subscriber_id: Option<String>,
    candidate_sent: bool,
    connected: bool,
    queued: Vec<String>,
    remote_candidates: usize,
    offers: usize,
}

impl State {
    fn ready(&self, spec: &Spec) -> bool {
        self.negotiated && self.connected && (spec.is_publisher() || self.subscriber_id.is_some())
    }

    fn waiting_for(&self, spec: &Spec) -> String {
        let ice = format!(
            "ICE/DTLS not connected (negotiation done, {} server candidate(s) received)",
            self.remote_candidates
        );
        match spec {
            Spec::Publisher { .. } if !self.negotiated => {
                "no Answer to our Offer from the server".into()
            }
            Spec::Publisher { .. } => ice,
            Spec::Subscriber { track_id, .. } if !self.subscribe_sent => {
                format!("the server never announced track {track_id:?} in Published")
            }
            Spec::Subscriber { .. } if !self.negotiated => {
                "no Offer from the server after Subscribe".into()
            }
            Spec::Subscriber { .. } if !self.connected => ice,
            Spec::Subscriber { .. } => "no Subscribed reply".into(),
        }
    }
}

/// `LOADGEN_DEBUG=1`: log signaling steps with [`crate::stats::now_us`] times on stderr (and,
/// from the media threads, publishers' keyframes and the keyframe requests they receive).
pub(crate) fn debug() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("LOADGEN_DEBUG").is_some())
}

async fn send(ws: &mut Ws, v: Value) -> Result<(), String> {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .map_err(|e| format!("WebSocket send failed: {e}"))
}

fn candidate_json(line: &str) -> Value {
    json!({"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": null})
}

/// The SDP text of an `Offer`/`Answer` message: `{"type","sdp"}` or bare text.
fn sdp_of(v: &Value) -> Option<String> {
    match v.get("sdp")? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("sdp")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Run one participant until shutdown. `ready` gets the setup result exactly once;
/// `permit` (the setup concurrency limit) is released once the setup is over.
pub async fn run(
    ctx: Arc<Ctx>,
    spec: Spec,
    ready: oneshot::Sender<Result<Ready, Failure>>,
    permit: Option<OwnedSemaphorePermit>,
) {
    let started = Instant::now();
    let deadline = started + ctx.timeout;
    let mut ready = Some((ready, permit));
    let fail = |ready: &mut Option<ReadySlot>, reason: String| {
        if let Some((tx, _permit)) = ready.take() {
            let _ = tx.send(Err(Failure {
                who: spec.name(),
                reason,
            }));
        }
    };

    let mut ws = match connect(ctx.url_for(&spec), ctx.tls.as_ref(), deadline).await {
        Ok(ws) => ws,
        Err(e) => return fail(&mut ready, e),
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let setup = match &spec {
        Spec::Publisher { index, track_id } => {
            media::new_publisher(ctx.bind, *index, track_id, ctx.simulcast, events_tx)
        }
        Spec::Subscriber { publisher, .. } => {
            media::new_subscriber(ctx.bind, *publisher, events_tx)
        }
    };
    let setup = match setup {
        Ok(s) => s,
        Err(e) => return fail(&mut ready, e),
    };
    let candidate = setup.candidate;
    let offer = setup.offer;
    let peer = match ctx.engine.add(setup.peer) {
        Ok(p) => p,
        Err(e) => return fail(&mut ready, e),
    };

    let mut st = State::default();
    let first = match (&spec, offer) {
        (Spec::Publisher { .. }, Some(offer)) => {
            let r = async {
                send(&mut ws, json!({"action": "PublisherInit"})).await?;
                send(
                    &mut ws,
                    json!({"action": "Offer", "sdp": {"type": "offer", "sdp": offer}}),
                )
                .await?;
                send(
                    &mut ws,
                    json!({"action": "PublisherIce", "candidate": candidate_json(&candidate)}),
                )
                .await
            }
            .await;
            st.candidate_sent = true;
            r
        }
        _ => send(&mut ws, json!({"action": "SubscriberInit"})).await,
    };
    if let Err(e) = first {
        return fail(&mut ready, e);
    }

    let mut shutdown = ctx.shutdown.clone();
    loop {
        if ready.is_some() && st.ready(&spec) {
            if let Some((tx, _permit)) = ready.take() {
                let _ = tx.send(Ok(Ready {
                    setup: started.elapsed(),
                }));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline), if ready.is_some() => {
                let why = st.waiting_for(&spec);
                fail(&mut ready, format!("not ready after {:.1} s: {why}", ctx.timeout.as_secs_f64()));
                break;
            }
            _ = shutdown.changed() => break,
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => {
                        let msg = "the server closed the WebSocket".to_string();
                        if ready.is_some() {
                            fail(&mut ready, msg);
                        } else {
                            ctx.incident(format!("{}: {msg}", spec.name()));
                        }
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        let msg = format!("WebSocket error: {e}");
                        if ready.is_some() {
                            fail(&mut ready, msg);
                        } else {
                            ctx.incident(format!("{}: {msg}", spec.name()));
                        }
                        return;
                    }
                };
                if let Err(e) = handle(&mut ws, &spec, &peer, &mut st, &candidate, text.as_str(), ctx.simulcast).await {
                    if ready.is_some() {
                        fail(&mut ready, e);
                        break;
                    }
                    ctx.incident(format!("{}: {e}", spec.name()));
                }
            }
            ev = events.recv() => match ev {
                Some(PeerEvent::Connected) => {
                    if debug() {
                        eprintln!("{} {} connected", crate::stats::now_us(), spec.name());
                    }
                    st.connected = true
                }
                Some(PeerEvent::Disconnected) if ready.is_none() => {
                    ctx.incident(format!("{}: ICE disconnected", spec.name()));
                }
                Some(PeerEvent::Disconnected) => {}
                Some(PeerEvent::FirstMedia(j)) if debug() => {
                    let us = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
                    eprintln!(
                        "{} {} first media: answer sent {}, connected {}, packet sent {}, \
                         arrived {}",
                        crate::stats::now_us(),
                        spec.name(),
                        us(j.answer_sent_us),
                        us(j.connected_us),
                        us(j.first_media_sent_us),
                        us(j.first_media_us)
                    );
                }
                Some(PeerEvent::FirstMedia(_)) => {}
                Some(PeerEvent::Error(e)) => {
                    if ready.is_some() {
                        fail(&mut ready, e);
                        break;
                    }
                    ctx.incident(format!("{}: {e}", spec.name()));
                }
                None => {}
            },
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}

/// Handle one server message.
async fn handle(
    ws: &mut Ws,
    spec: &Spec,
    peer: &PeerRef,
    st: &mut State,
    candidate: &str,
    text: &str,
    simulcast: bool,
) -> Result<(), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("bad JSON from server: {e}"))?;
    let action = v.get("action").and_then(Value::as_str).unwrap_or("");
    if debug() {
        eprintln!("{} {} <- {action}", crate::stats::now_us(), spec.name());
    }
    match action {
        "Answer" if spec.is_publisher() => {
            let sdp = sdp_of(&v).ok_or("Answer without sdp")?;
            peer.accept_answer(sdp).await?;
            let first = !st.negotiated;
            st.negotiated = true;
            for c in st.queued.drain(..) {
                peer.add_candidate(c);
            }
            if first {
                send(
                    ws,
                    json!({"action": "Publish", "publisherId": spec.track_id()}),
                )
                .await?;
            }
        }
        "Offer" if !spec.is_publisher() => {
            let sdp = sdp_of(&v).ok_or("Offer without sdp")?;
            let answer = peer.accept_offer(sdp).await?;
            send(
                ws,
                json!({"action": "Answer", "sdp": {"type": "answer", "sdp": answer}}),
            )
            .await?;
            if st.offers == 0 {
                // The start of the first-media measurement: the answer is on its way.
                let sent_us = crate::stats::now_us();
                peer.answer_sent(sent_us);
                if debug() {
                    eprintln!("{sent_us} {} -> first Answer", spec.name());
                }
            }
            st.negotiated = true;
            st.offers += 1;
            for c in st.queued.drain(..) {
                peer.add_candidate(c);
            }
            if !st.candidate_sent {
                st.candidate_sent = true;
                send(
                    ws,
                    json!({"action": "SubscriberIce", "candidate": candidate_json(candidate)}),
                )
                .await?;
            }
        }
        "PublisherIce" | "SubscriberIce" => {
            let c = match v.get("candidate") {
                Some(Value::Object(o)) => o.get("candidate").and_then(Value::as_str),
                Some(Value::String(s)) => Some(s.as_str()),
                _ => None,
            }
            .unwrap_or("");
            if c.is_empty() {
                return Ok(()); // end of candidates
            }
            st.remote_candidates += 1;
            if st.negotiated {
                peer.add_candidate(c.to_string());
            } else {
                st.queued.push(c.to_string());
            }
        }
        "Published" if !spec.is_publisher() => {
            let ids = v.get("publisherIds").and_then(Value::as_array);
            let ours =
                ids.is_some_and(|ids| ids.iter().any(|i| i.as_str() == Some(spec.track_id())));
            if ours && !st.subscribe_sent {
                st.subscribe_sent = true;
                send(
                    ws,
                    json!({"action": "Subscribe", "publisherId": spec.track_id()}),
                )
                .await?;
            }
        }
        "Subscribed" => {
            st.subscriber_id = v
                .get("subscriberId")
                .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_string));
            if let (true, Spec::Subscriber { index, .. }, Some(id)) =
                (simulcast, spec, st.subscriber_id.as_ref())
            {
                let msg = json!({
                    "action": "SetPreferredLayer",
                    "subscriberId": id,
                    "sid": index % 3,
                    "tid": null,
                });
                send(ws, msg).await?;
            }
        }
        "Unpublished"
            if !spec.is_publisher()
                && v.get("publisherId").and_then(Value::as_str) == Some(spec.track_id()) =>
        {
            return Err(format!("track {:?} was unpublished", spec.track_id()));
        }
        "Error" => {
            let m = v
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            return Err(format!("server Error: {m}"));
        }
        _ => {} // Pong, Published for publishers, other participants' news
    }
    Ok(())
}
