//! Relay between workers: a publisher of one worker published in a router of another
//! ([`Publisher::relay_to`](crate::publisher::Publisher::relay_to),
//! [`DataPublisher::relay_to`](crate::data::DataPublisher::relay_to)), where it is
//! subscribed like a local one.
//!
//! Two planes, as between a browser and a worker:
//! - **Control**: one TCP connection per pair of workers (`link.rs`), from the source worker
//!   to the other's relay port ([`crate::config::RelayConfig`]). Both ends prove
//!   they know the shared secret before anything else, and every frame is authenticated
//!   (HMAC-SHA256 with a per-connection key, numbered: [`wire`]). It carries offers and
//!   answers, publish requests and a heartbeat.
//! - **Media and data**: an ordinary WebRTC session pair per (source router, destination
//!   router): on the source worker a subscribe transport whose ICE agent is a full one
//!   (the only difference from a browser's subscribe transport: two ICE-lite ends cannot
//!   connect), on the destination worker a publish transport, as for a browser. So relayed
//!   media is DTLS-SRTP encrypted, its DTLS fingerprints come over the authenticated
//!   control link, and NACK/RTX and keyframe requests cross it like any other hop.
//!
//! When the link dies (TCP closes, a frame fails authentication, or the heartbeat goes
//! unanswered for 3 s), both ends close its sessions: the destination's relayed publishers
//! are unpublished (their subscribers told), the source's relay subscriptions end. A later
//! `relay_to` connects again.

pub mod wire;

mod link;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use self::link::Link;
use self::wire::Msg;
use crate::config::{RelayConfig, WebRTCTransportConfig};
use crate::error::RelayError;
use crate::router::RouterInner;
use crate::signal::SessionDescription;
use crate::transport::{PublishTransport, SubscribeTransport};

/// Connections in their handshake at once (unauthenticated: each costs a task and a
/// buffer for 5 s at most); further ones are closed at once and counted as refused.
const MAX_HANDSHAKES: usize = 32;

/// Relay sessions one control link may open on a worker.
const MAX_SESSIONS_PER_LINK: usize = 1024;

/// Event counters of a worker's relay.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) auth_failures: AtomicU64,
    pub(crate) bad_frames: AtomicU64,
    pub(crate) unknown_router: AtomicU64,
    pub(crate) refused: AtomicU64,
}

/// A worker's relay state, from [`Worker::relay_stats`](crate::worker::Worker::relay_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Control links this worker opened (it relays to those workers).
    pub links_out: usize,
    /// Control links other workers opened to this one.
    pub links_in: usize,
    /// Relay sessions (router pairs) this worker sends on.
    pub sessions_out: usize,
    /// Relay sessions other workers send to this one on.
    pub sessions_in: usize,
    /// Connections refused because the other end did not prove the shared secret, or a
    /// handshake that failed authentication here.
    pub auth_failures: u64,
    /// Connections closed for a malformed frame: garbage, a bad length, a frame after the
    /// handshake that failed authentication (altered or replayed), a timed-out handshake.
    pub bad_frames: u64,
    /// Relay requests naming a router this worker does not have.
    pub unknown_router: u64,
    /// Other relay requests refused (bad offer, unknown track, too many sessions), and
    /// connections closed at once because 32 others were already in their handshake.
    pub refused: u64,
}

/// The relay side of a worker: its listener, its links, the routers others may relay to.
pub(crate) struct Hub {
    secret: Option<Vec<u8>>,
    local: Option<SocketAddr>,
    routers: Mutex<HashMap<String, Weak<RouterInner>>>,
    out: tokio::sync::Mutex<HashMap<SocketAddr, Arc<OutLink>>>,
    links_in: AtomicUsize,
    sessions_in: AtomicUsize,
    counters: Arc<Counters>,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Links other workers opened, closed with the hub.
    inbound: Mutex<Vec<Weak<Link>>>,
    /// Accepted connections still in their handshake.
    handshakes: Arc<AtomicUsize>,
}

impl Drop for Hub {
    /// The worker is gone: its relay links close (the other ends end their sessions).
    fn drop(&mut self) {
        if let Some(l) = self.listener.get_mut().ok().and_then(Option::take) {
            l.abort();
        }
        for l in self.out.get_mut().values() {
            l.link.close();
        }
        let inbound = std::mem::take(self.inbound.get_mut().unwrap_or_else(|e| e.into_inner()));
        for l in inbound.iter().filter_map(Weak::upgrade) {
            l.close();
        }
    }
}

impl Hub {
    /// The hub of a worker; with `config`, listening for relays (must run inside a tokio
    /// runtime).
    pub(crate) fn start(config: Option<&RelayConfig>) -> std::io::Result<Arc<Hub>> {
        let mut hub = Hub {
            secret: config.map(|c| c.secret.as_bytes().to_vec()),
            local: None,
            routers: Mutex::new(HashMap::new()),
            out: tokio::sync::Mutex::new(HashMap::new()),
            links_in: AtomicUsize::new(0),
            sessions_in: AtomicUsize::new(0),
            counters: Arc::default(),
            listener: Mutex::new(None),
            inbound: Mutex::new(Vec::new()),
            handshakes: Arc::default(),
        };
        let Some(config) = config else {
            return Ok(Arc::new(hub));
        };
        if config.secret.len() < 16 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the relay secret must be at least 16 bytes",
            ));
        }
        let std_listener = std::net::TcpListener::bind(config.bind)?;
        std_listener.set_nonblocking(true)?;
        hub.local = Some(std_listener.local_addr()?);
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let hub = Arc::new(hub);
        let weak = Arc::downgrade(&hub);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let Some(hub) = weak.upgrade() else { break };
                let (secret, counters) = (hub.secret.clone(), hub.counters.clone());
                let handshakes = hub.handshakes.clone();
                drop(hub);
                if handshakes.fetch_add(1, Ordering::AcqRel) >= MAX_HANDSHAKES {
                    handshakes.fetch_sub(1, Ordering::AcqRel);
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                }
                if let Some(secret) = secret {
                    tokio::spawn(serve(
                        weak.clone(),
                        secret,
                        counters,
                        handshakes,
                        stream,
                        peer,
                    ));
                } else {
                    handshakes.fetch_sub(1, Ordering::AcqRel);
                }
            }
        });
        *hub.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(hub)
    }

    /// The address relays are accepted on, if listening.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Make router `inner` reachable by relays under its id.
    pub(crate) fn register(&self, inner: &Arc<RouterInner>) {
        let mut routers = self.routers.lock().unwrap_or_else(|e| e.into_inner());
        routers.retain(|_, w| w.strong_count() > 0);
        routers.insert(inner.id.clone(), Arc::downgrade(inner));
    }

    fn router(&self, id: &str) -> Option<Arc<RouterInner>> {
        self.routers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .and_then(Weak::upgrade)
    }

    pub(crate) async fn stats(&self) -> RelayStats {
        let out = self.out.lock().await;
        let mut sessions_out = 0;
        for l in out.values() {
            sessions_out += l.sessions.lock().await.len();
        }
        let c = &self.counters;
        RelayStats {
            links_out: out.values().filter(|l| !l.link.is_closed()).count(),
            links_in: self.links_in.load(Ordering::Relaxed),
            sessions_out,
            sessions_in: self.sessions_in.load(Ordering::Relaxed),
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
            bad_frames: c.bad_frames.load(Ordering::Relaxed),
            unknown_router: c.unknown_router.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }

    /// The control link to `peer`, connecting (and authenticating) if there is none.
    async fn out_link(self: &Arc<Self>, peer: SocketAddr) -> Result<Arc<OutLink>, RelayError> {
        let secret = self.secret.as_ref().ok_or(RelayError::NotConfigured)?;
        let mut out = self.out.lock().await;
        if let Some(l) = out.get(&peer) {
            if !l.link.is_closed() {
                return Ok(l.clone());
            }
        }
        let (link, mut inbox) = Link::connect(peer, secret, self.counters.clone()).await?;
        let ol = Arc::new(OutLink {
            link: link.clone(),
            sessions: tokio::sync::Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        });
        out.insert(peer, ol.clone());
        drop(out);
        // The listener sends no requests; drain whatever comes until the link ends, then
        // end its sessions and forget it.
        let hub = Arc::downgrade(self);
        let watched = ol.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = inbox.recv() => if m.is_none() { break },
                    _ = watched.link.closed() => break,
                }
            }
            watched.link.close();
            let sessions: Vec<Arc<OutSession>> = watched
                .sessions
                .lock()
                .await
                .drain()
                .map(|(_, s)| s)
                .collect();
            for s in sessions {
                s.transport.close().await;
            }
            if let Some(hub) = hub.upgrade() {
                let mut out = hub.out.lock().await;
                if out.get(&peer).is_some_and(|l| Arc::ptr_eq(l, &watched)) {
                    out.remove(&peer);
                }
            }
            tracing::info!(peer = %peer, "relay link closed");
        });
        tracing::info!(peer = %peer, "relay link up");
        Ok(ol)
    }

    /// End the relay of `what` of `router` to `remote_router` at `peer`, if there is one:
    /// its relay subscription closes, the other worker unpublishes it (its subscribers are
    /// told), and the session pair closes if it relays nothing else.
    async fn unrelay(
        &self,
        router: &Arc<RouterInner>,
        what: Relayed<'_>,
        peer: SocketAddr,
        remote_router: &str,
    ) -> bool {
        let ol = match self.out.lock().await.get(&peer) {
            Some(l) => l.clone(),
            None => return false,
        };
        let key = (router.id.clone(), remote_router.to_string());
        let Some(sess) = ol.sessions.lock().await.get(&key).cloned() else {
            return false;
        };
        match what {
            Relayed::Media(id) => {
                let sub = sess
                    .transport
                    .subscribers()
                    .into_iter()
                    .find(|s| s.publisher_id() == id && !s.is_closed());
                match sub {
                    Some(s) => {
                        s.close().await;
                        true
                    }
                    None => false,
                }
            }
            Relayed::Data(id) => {
                let sub = sess
                    .transport
                    .data_subscribers()
                    .into_iter()
                    .find(|s| s.publisher_id() == id && !s.is_closed());
                match sub {
                    Some(s) => {
                        s.close();
                        true
                    }
                    None => false,
                }
            }
        }
    }

    /// Relay `what` of `router` to router `remote_router` of the worker at `peer`.
    pub(crate) async fn relay(
        self: &Arc<Self>,
        router: &Arc<RouterInner>,
        what: Relayed<'_>,
        peer: SocketAddr,
        remote_router: &str,
    ) -> Result<(), RelayError> {
        let ol = self.out_link(peer).await?;
        let mut sess = ol.session(router, remote_router).await?;
        let mut _turn = sess.turn.lock().await;
        if sess.transport.state() == crate::transport::TransportState::Closed {
            // Closed as idle meanwhile: a fresh one.
            drop(_turn);
            sess = ol.session(router, remote_router).await?;
            _turn = sess.turn.lock().await;
        }
        let (offer, undo): (Option<String>, Undo) = match what {
            Relayed::Media(id) => {
                let (sub, offer) = sess
                    .transport
                    .subscribe(id)
                    .await
                    .map_err(RelayError::Subscribe)?;
                (Some(offer.sdp), Undo::Media(sub))
            }
            Relayed::Data(id) => {
                let (sub, offer) = sess
                    .transport
                    .data_subscribe(id)
                    .await
                    .map_err(RelayError::Subscribe)?;
                (offer.map(|o| o.sdp), Undo::Data(sub))
            }
        };
        let result = async {
            if let Some(offer) = offer {
                let session = sess.id;
                let answer = if sess.opened.load(Ordering::Acquire) {
                    ol.link
                        .request(|req| Msg::Offer {
                            req,
                            session,
                            offer,
                        })
                        .await?
                } else {
                    let router = remote_router.to_string();
                    let a = ol
                        .link
                        .request(|req| Msg::Open {
                            req,
                            session,
                            router,
                            offer,
                        })
                        .await?;
                    sess.opened.store(true, Ordering::Release);
                    a
                };
                let answer = answer.ok_or(RelayError::Refused("no answer".into()))?;
                sess.transport
                    .set_answer(SessionDescription::answer(answer))
                    .await
                    .map_err(|e| RelayError::Refused(format!("answer refused: {e}")))?;
            }
            let (publisher_id, data) = match what {
                Relayed::Media(id) => (id.to_string(), false),
                Relayed::Data(id) => (id.to_string(), true),
            };
            let session = sess.id;
            ol.link
                .request(|req| Msg::Publish {
                    req,
                    session,
                    publisher_id,
                    data,
                })
                .await?;
            Ok(())
        }
        .await;
        drop(_turn);
        if result.is_err() {
            match undo {
                Undo::Media(s) => s.close().await,
                Undo::Data(s) => s.close(),
            }
            return result;
        }
        // When the relayed track ends and nothing else uses the session, the session pair
        // closes (on both workers).
        let (weak_link, weak_sess) = (Arc::downgrade(&ol), Arc::downgrade(&sess));
        tokio::spawn(async move {
            match undo {
                Undo::Media(s) => s.closed().await,
                Undo::Data(s) => s.closed().await,
            }
            if let (Some(ol), Some(sess)) = (weak_link.upgrade(), weak_sess.upgrade()) {
                ol.close_if_idle(&sess).await;
            }
        });
        result
    }
}

/// Stop relaying `what` of the router behind `router` to router `remote_router` of the
/// worker at `peer`: `stop_relay` of publishers and data publishers. True if it was relayed.
pub(crate) async fn unrelay_from(
    router: &Weak<RouterInner>,
    what: Relayed<'_>,
    peer: SocketAddr,
    remote_router: &str,
) -> bool {
    let Some(router) = router.upgrade() else {
        return false;
    };
    let Some(hub) = router.hub.upgrade() else {
        return false;
    };
    hub.unrelay(&router, what, peer, remote_router).await
}

/// Relay `what` of the router behind `router` (unless `closed`): `relay_to` of
/// publishers and data publishers.
pub(crate) async fn relay_from(
    router: &Weak<RouterInner>,
    closed: bool,
    what: Relayed<'_>,
    peer: SocketAddr,
    remote_router: &str,
) -> Result<(), RelayError> {
    let router = router.upgrade().ok_or(RelayError::Closed)?;
    let hub = router.hub.upgrade().ok_or(RelayError::Closed)?;
    if closed {
        return Err(RelayError::Closed);
    }
    hub.relay(&router, what, peer, remote_router).await
}

/// What to relay.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Relayed<'a> {
    /// A media track, by publisher id.
    Media(&'a str),
    /// A data channel, by data publisher id.
    Data(&'a str),
}

enum Undo {
    Media(crate::subscriber::Subscriber),
    Data(crate::data::DataSubscriber),
}

/// A control link this worker opened, and its sessions.
struct OutLink {
    link: Arc<Link>,
    sessions: tokio::sync::Mutex<HashMap<(String, String), Arc<OutSession>>>,
    next: AtomicU64,
}

/// One relay session: the source router's relay transport to one remote router.
struct OutSession {
    id: u64,
    transport: SubscribeTransport,
    /// `Open` was answered: later offers go as `Offer`.
    opened: AtomicBool,
    /// One negotiation at a time.
    turn: tokio::sync::Mutex<()>,
}

impl OutLink {
    /// Close session `sess` on both workers if it relays nothing any more.
    async fn close_if_idle(&self, sess: &Arc<OutSession>) {
        let _turn = sess.turn.lock().await;
        if !sess.transport.subscribers().is_empty() || !sess.transport.data_subscribers().is_empty()
        {
            return;
        }
        self.sessions
            .lock()
            .await
            .retain(|_, s| !Arc::ptr_eq(s, sess));
        self.link.send(Msg::Close { session: sess.id });
        sess.transport.close().await;
    }

    /// The session from `router` to `remote_router`, created on first use.
    async fn session(
        self: &Arc<Self>,
        router: &Arc<RouterInner>,
        remote_router: &str,
    ) -> Result<Arc<OutSession>, RelayError> {
        let mut sessions = self.sessions.lock().await;
        let key = (router.id.clone(), remote_router.to_string());
        if let Some(s) = sessions.get(&key) {
            if s.transport.state() != crate::transport::TransportState::Closed {
                return Ok(s.clone());
            }
        }
        let transport = SubscribeTransport::create_relay(router).await;
        if transport.state() == crate::transport::TransportState::Closed {
            return Err(RelayError::LinkClosed);
        }
        let sess = Arc::new(OutSession {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            transport,
            opened: AtomicBool::new(false),
            turn: tokio::sync::Mutex::new(()),
        });
        // Renegotiations (a relayed publisher left) go to the other worker as `Offer`.
        let weak_sess = Arc::downgrade(&sess);
        let weak_link = Arc::downgrade(self);
        sess.transport
            .on_negotiation_needed(Box::new(move |offer| {
                let (Some(sess), Some(ol)) = (weak_sess.upgrade(), weak_link.upgrade()) else {
                    return;
                };
                tokio::spawn(async move {
                    let _turn = sess.turn.lock().await;
                    let session = sess.id;
                    let sdp = offer.sdp;
                    match ol
                        .link
                        .request(|req| Msg::Offer {
                            req,
                            session,
                            offer: sdp,
                        })
                        .await
                    {
                        Ok(Some(answer)) => {
                            let _ = sess
                                .transport
                                .set_answer(SessionDescription::answer(answer))
                                .await;
                        }
                        _ => sess.transport.close().await,
                    }
                });
            }))
            .await;
        sessions.insert(key, sess.clone());
        Ok(sess)
    }
}

/// A relayed session on the receiving worker.
struct InSession {
    transport: PublishTransport,
    publishers: Vec<crate::publisher::Publisher>,
    data: Vec<crate::data::DataPublisher>,
}

/// Serve a connection accepted on the relay port until it ends.
async fn serve(
    hub: Weak<Hub>,
    secret: Vec<u8>,
    counters: Arc<Counters>,
    handshakes: Arc<AtomicUsize>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let accepted = Link::accept(stream, peer, &secret, counters).await;
    handshakes.fetch_sub(1, Ordering::AcqRel);
    let (link, mut inbox) = match accepted {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(peer = %peer, "relay connection refused: {e}");
            return;
        }
    };
    {
        let Some(h) = hub.upgrade() else { return };
        let mut inbound = h.inbound.lock().unwrap_or_else(|e| e.into_inner());
        inbound.retain(|l| l.strong_count() > 0);
        inbound.push(Arc::downgrade(&link));
        h.links_in.fetch_add(1, Ordering::Relaxed);
    }
    tracing::info!(peer = %peer, "relay link accepted");
    let mut sessions: HashMap<u64, InSession> = HashMap::new();
    loop {
        let msg = tokio::select! {
            m = inbox.recv() => m,
            _ = link.closed() => None,
        };
        let Some(msg) = msg else { break };
        let Some(h) = hub.upgrade() else { break };
        handle(&h, &link, &mut sessions, msg).await;
    }
    link.close();
    let h = hub.upgrade();
    for (_, s) in sessions.drain() {
        if let Some(h) = &h {
            h.sessions_in.fetch_sub(1, Ordering::Relaxed);
        }
        s.transport.close().await;
        drop((s.publishers, s.data));
    }
    if let Some(h) = &h {
        h.links_in.fetch_sub(1, Ordering::Relaxed);
    }
    tracing::info!(peer = %peer, "relay link ended");
}

async fn handle(hub: &Hub, link: &Arc<Link>, sessions: &mut HashMap<u64, InSession>, msg: Msg) {
    let refuse = |e: String| {
        hub.counters.refused.fetch_add(1, Ordering::Relaxed);
        Err(e)
    };
    match msg {
        Msg::Open {
            req,
            session,
            router,
            offer,
        } => {
            let result = if sessions.contains_key(&session) {
                refuse(format!("session {session} is open already"))
            } else if sessions.len() >= MAX_SESSIONS_PER_LINK {
                refuse("too many relay sessions".into())
            } else if let Some(router) = hub.router(&router) {
                let t = PublishTransport::create(&router, WebRTCTransportConfig::default()).await;
                match t.get_answer(SessionDescription::offer(offer)).await {
                    Ok(a) => {
                        sessions.insert(
                            session,
                            InSession {
                                transport: t,
                                publishers: Vec::new(),
                                data: Vec::new(),
                            },
                        );
                        hub.sessions_in.fetch_add(1, Ordering::Relaxed);
                        Ok(Some(a.sdp))
                    }
                    Err(e) => {
                        t.close().await;
                        refuse(format!("offer refused: {e}"))
                    }
                }
            } else {
                hub.counters.unknown_router.fetch_add(1, Ordering::Relaxed);
                Err(format!("unknown router {router:?}"))
            };
            link.reply(req, result).await;
        }
        Msg::Offer {
            req,
            session,
            offer,
        } => {
            let result = match sessions.get(&session) {
                Some(s) => match s
                    .transport
                    .get_answer(SessionDescription::offer(offer))
                    .await
                {
                    Ok(a) => Ok(Some(a.sdp)),
                    Err(e) => refuse(format!("offer refused: {e}")),
                },
                None => refuse(format!("no session {session}")),
            };
            link.reply(req, result).await;
        }
        Msg::Publish {
            req,
            session,
            publisher_id,
            data,
        } => {
            let result = match sessions.get_mut(&session) {
                Some(s) if data => match s.transport.data_publish(publisher_id).await {
                    Ok(p) => {
                        s.data.push(p);
                        Ok(None)
                    }
                    Err(e) => refuse(e.to_string()),
                },
                Some(s) => match s.transport.try_publish(publisher_id).await {
                    Ok(p) => {
                        s.publishers.retain(|p| !p.is_closed());
                        s.publishers.push(p);
                        Ok(None)
                    }
                    Err(e) => refuse(e.to_string()),
                },
                None => refuse(format!("no session {session}")),
            };
            link.reply(req, result).await;
        }
        Msg::Close { session } => {
            if let Some(s) = sessions.remove(&session) {
                hub.sessions_in.fetch_sub(1, Ordering::Relaxed);
                s.transport.close().await;
            }
        }
        Msg::Ping { .. } | Msg::Reply { .. } | Msg::Hello { .. } => {}
    }
}
