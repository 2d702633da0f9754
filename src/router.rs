//! Routers: meeting rooms. A router knows its published tracks and who subscribes to them,
//! creates transports on the least-loaded shard, and owns the routes between shards: each
//! change (publish, subscribe, leave) becomes commands to the shards involved
//! (`RouterInner::open_route`, `RouterInner::close_route`). Control plane only: the router
//! never touches media.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{mpsc, oneshot};

use crate::config::{MediaConfig, WebRTCTransportConfig};
use crate::engine::command::{Command, Role, SessionCreated, SessionEvent, SessionSpec, TrackInfo};
use crate::engine::{next_id, DownTrackId, Engine, SessionId, ShardId, TrackKey};
use crate::error::RecordingError;
use crate::publisher::PublisherInner;
use crate::transport::{
    Core, PublishTransport, RecordingTransport, SessionHandler, SubscribeTransport,
};

/// A meeting room: transports created here can exchange media. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    pub(crate) inner: Arc<RouterInner>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("id", &self.inner.id)
            .finish()
    }
}

pub(crate) struct PublishedTrack {
    pub(crate) info: TrackInfo,
    pub(crate) shard: ShardId,
    pub(crate) handle: Arc<PublisherInner>,
    pub(crate) subscribers: Vec<(DownTrackId, Weak<dyn RouteOwner>)>,
}

/// One subscription as the router routes it: which published track goes to which
/// down-track, from which shard to which.
#[derive(Clone)]
pub(crate) struct Subscription {
    pub(crate) publisher_id: String,
    pub(crate) track: TrackKey,
    pub(crate) down: DownTrackId,
    pub(crate) publisher_shard: ShardId,
    pub(crate) subscriber_shard: ShardId,
}

/// A transport that forwards published tracks (subscribe or recording): told when a
/// publisher it forwards leaves.
pub(crate) trait RouteOwner: Send + Sync {
    /// End the subscription `down` (its publisher left); `renegotiate`: the peer should be
    /// offered the change.
    fn remove_subscription(&self, down: DownTrackId, renegotiate: bool);
}

/// A published data channel.
pub(crate) struct PublishedData {
    pub(crate) info: crate::engine::data::DataInfo,
    pub(crate) shard: ShardId,
    /// The publish session, told when it is unpublished.
    pub(crate) session: SessionId,
    pub(crate) handle: Arc<crate::data::DataPublisherInner>,
    pub(crate) subscribers: Vec<(DownTrackId, Weak<dyn RouteOwner>)>,
}

pub(crate) struct RouterInner {
    pub(crate) id: String,
    pub(crate) engine: Arc<Engine>,
    pub(crate) media: MediaConfig,
    pub(crate) publishers: Mutex<HashMap<String, PublishedTrack>>,
    pub(crate) data_publishers: Mutex<HashMap<String, PublishedData>>,
    /// The worker's relay side (relays to and from other workers); weak: the worker owns
    /// it (relay sessions hold routers).
    pub(crate) hub: Weak<crate::relay::Hub>,
    /// The transports created here, for [`Router::close`].
    members: Mutex<Members>,
}

/// The transports of a router (weak: a dropped transport is pruned), and whether the
/// router is closed.
#[derive(Default)]
struct Members {
    closed: bool,
    list: Vec<Weak<dyn SessionHandler>>,
    /// Dead entries are pruned when the list reaches this length.
    prune_at: usize,
}

impl RouterInner {
    fn members(&self) -> std::sync::MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.members().closed
    }

    /// Remember a new transport so that [`Router::close`] closes it; if the router was
    /// closed meanwhile, close it now.
    pub(crate) fn adopt<T: SessionHandler>(&self, inner: &Arc<T>) {
        let weak: Weak<dyn SessionHandler> = Arc::downgrade(inner) as Weak<dyn SessionHandler>;
        let mut m = self.members();
        if m.closed {
            drop(m);
            inner.core().request_close();
            return;
        }
        if m.list.len() >= m.prune_at {
            m.list.retain(|w| w.strong_count() > 0);
            m.prune_at = (m.list.len() * 2).max(64);
        }
        m.list.push(weak);
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PublishedTrack>> {
        self.publishers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remove a published track and tell its subscribers. No-op for unknown ids.
    pub(crate) fn data(&self) -> std::sync::MutexGuard<'_, HashMap<String, PublishedData>> {
        self.data_publishers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Take data publisher `id` out of the router: its publish session stops forwarding
    /// it, its subscribers' channels close.
    pub(crate) fn unpublish_data(&self, id: &str) {
        let Some(entry) = self.data().remove(id) else {
            return;
        };
        entry.handle.mark_closed();
        if let Some(s) = self.engine.shard(entry.shard) {
            s.send(Command::UnpublishData {
                id: entry.session,
                key: entry.info.key,
            });
        }
        for (down, sub) in entry.subscribers {
            if let Some(sub) = sub.upgrade() {
                sub.remove_subscription(down, false);
            }
        }
    }

    /// Route data track `sub.track` to the subscriber's shard and register the subscriber
    /// with the data publisher; false if it left meanwhile.
    pub(crate) fn open_data_route(&self, sub: &Subscription, owner: Weak<dyn RouteOwner>) -> bool {
        if sub.publisher_shard != sub.subscriber_shard {
            if let Some(s) = self.engine.shard(sub.publisher_shard) {
                s.send(Command::AddRemoteDataRoute {
                    key: sub.track,
                    dest: sub.subscriber_shard,
                });
            }
        }
        match self.data().get_mut(&sub.publisher_id) {
            Some(p) if p.info.key == sub.track => {
                p.subscribers.push((sub.down, owner));
                true
            }
            _ => false,
        }
    }

    pub(crate) fn close_data_route(&self, sub: &Subscription) {
        if sub.publisher_shard != sub.subscriber_shard {
            if let Some(s) = self.engine.shard(sub.publisher_shard) {
                s.send(Command::RemoveRemoteDataRoute {
                    key: sub.track,
                    dest: sub.subscriber_shard,
                });
            }
        }
        if let Some(e) = self.data().get_mut(&sub.publisher_id) {
            e.subscribers.retain(|(d, _)| *d != sub.down);
        }
    }

    pub(crate) fn unpublish(&self, id: &str) {
        let Some(entry) = self.lock().remove(id) else {
            return;
        };
        entry.handle.mark_closed();
        for (down, sub) in entry.subscribers {
            if let Some(sub) = sub.upgrade() {
                sub.remove_subscription(down, true);
            }
        }
    }

    /// Start a subscription's route: the publisher's shard forwards its track to the
    /// subscriber's shard (when they differ), and the publisher learns of the subscriber so
    /// it can end the subscription when it leaves. False if the publisher left (or was
    /// replaced) meanwhile: the caller then ends the subscription, which undoes the route.
    pub(crate) fn open_route(&self, sub: &Subscription, transport: Weak<dyn RouteOwner>) -> bool {
        if sub.publisher_shard != sub.subscriber_shard {
            if let Some(s) = self.engine.shard(sub.publisher_shard) {
                s.send(Command::AddRemoteRoute {
                    track: sub.track,
                    dest: sub.subscriber_shard,
                });
            }
        }
        match self.lock().get_mut(&sub.publisher_id) {
            Some(p) if p.info.key == sub.track => {
                p.subscribers.push((sub.down, transport));
                true
            }
            _ => false,
        }
    }

    /// End a subscription's route: the publisher's shard stops forwarding to the
    /// subscriber's shard and the publisher forgets the subscriber. The subscriber's own
    /// down-track is the subscribe transport's business.
    pub(crate) fn close_route(&self, sub: &Subscription) {
        if sub.publisher_shard != sub.subscriber_shard {
            if let Some(s) = self.engine.shard(sub.publisher_shard) {
                s.send(Command::RemoveRemoteRoute {
                    track: sub.track,
                    dest: sub.subscriber_shard,
                });
            }
        }
        if let Some(e) = self.lock().get_mut(&sub.publisher_id) {
            e.subscribers.retain(|(d, _)| *d != sub.down);
        }
    }

    /// Create a session on the least-loaded shard.
    pub(crate) async fn create_session(
        self: &Arc<Self>,
        role: Role,
        cfg: &WebRTCTransportConfig,
    ) -> (Core, mpsc::UnboundedReceiver<SessionEvent>) {
        self.create_session_with(role, cfg, false).await
    }

    /// Like `create_session`; `full_ice`: a full (controlling) ICE agent instead of
    /// ICE-lite, for a session whose other end is another worker (ICE-lite too).
    pub(crate) async fn create_session_with(
        self: &Arc<Self>,
        role: Role,
        cfg: &WebRTCTransportConfig,
        full_ice: bool,
    ) -> (Core, mpsc::UnboundedReceiver<SessionEvent>) {
        let stun_servers = resolve_stun_servers(&cfg.configuration.ice_servers).await;
        let shard = self.engine.pick_shard();
        shard
            .load
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = SessionId(next_id());
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (tx, rx) = oneshot::channel();
        let spec = SessionSpec {
            id,
            role,
            router: self.id.clone(),
            media: self.media.clone(),
            announced_ips: cfg.announced_ips.clone(),
            stun_servers,
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.ice_disconnected_timeout,
            full_ice,
            events: events_tx,
        };
        let created = if self.is_closed() {
            None
        } else if shard.send(Command::CreateSession {
            spec: Box::new(spec),
            reply: tx,
        }) {
            rx.await.ok()
        } else {
            None
        };
        let shard_id = shard.id;
        let span = tracing::info_span!(
            "transport",
            transport = id.0,
            router = %self.id,
            role = role.as_str(),
        );
        let core = Core::new(
            id,
            shard_id,
            self.engine.clone(),
            created.clone().unwrap_or(SessionCreated {
                candidates: Vec::new(),
                ufrag: String::new(),
            }),
            span,
        );
        if created.is_none() {
            core.mark_closed();
            core.release_load();
        }
        (core, events_rx)
    }
}

/// Resolve the `stun:` URLs of the ICE servers (`stun:host[:port]`, default port 3478).
/// Resolution is bounded to 2 s per URL; failures are logged and skipped.
async fn resolve_stun_servers(
    servers: &[crate::config::RTCIceServer],
) -> Vec<std::net::SocketAddr> {
    let mut out = Vec::new();
    for url in servers.iter().flat_map(|s| s.urls.iter()) {
        let Some(rest) = url.strip_prefix("stun:") else {
            continue;
        };
        let rest = rest.split('?').next().unwrap_or(rest);
        let host_port = if rest
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !rest.ends_with(']')
        {
            rest.to_string()
        } else {
            format!("{rest}:3478")
        };
        match tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::lookup_host(host_port.clone()),
        )
        .await
        {
            Ok(Ok(addrs)) => out.extend(addrs),
            Ok(Err(e)) => tracing::warn!(%url, "cannot resolve STUN server: {e}"),
            Err(_) => tracing::warn!(%url, "resolving STUN server timed out"),
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Router {
    pub(crate) fn new(
        engine: Arc<Engine>,
        hub: Arc<crate::relay::Hub>,
        media: MediaConfig,
    ) -> Router {
        let router = Router {
            inner: Arc::new(RouterInner {
                hub: Arc::downgrade(&hub),
                id: format!("router-{}", next_id()),
                engine,
                media,
                publishers: Mutex::new(HashMap::new()),
                data_publishers: Mutex::new(HashMap::new()),
                members: Mutex::new(Members::default()),
            }),
        };
        hub.register(&router.inner);
        router
    }

    /// The router id, unique in the process.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The media this router negotiates.
    pub fn media_config(&self) -> &MediaConfig {
        &self.inner.media
    }

    /// Create a transport for a browser that publishes media.
    pub async fn create_publish_transport(
        &self,
        config: WebRTCTransportConfig,
    ) -> PublishTransport {
        PublishTransport::create(&self.inner, config).await
    }

    /// A recording transport sending plain RTP to `ip` from `port` on (each recorded
    /// publisher takes a port pair: RTP, then RTCP): see [`RecordingTransport`]. Fails if
    /// `ip` is not an IP address or the address cannot be sent to.
    pub async fn create_recording_transport(
        &self,
        ip: String,
        port: u16,
    ) -> Result<RecordingTransport, RecordingError> {
        RecordingTransport::create(&self.inner, &ip, port).await
    }

    /// Create a transport for a browser that receives media.
    pub async fn create_subscribe_transport(
        &self,
        config: WebRTCTransportConfig,
    ) -> SubscribeTransport {
        SubscribeTransport::create(&self.inner, config).await
    }

    /// Ids of the tracks currently published in this router.
    pub fn publisher_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.inner.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Close the room: every transport created from this router closes (its publishers
    /// are unpublished, its subscriptions and recordings end), as if each had been closed
    /// by hand. Returns once their shards have closed the sessions (waiting at most 5 s).
    /// Transports created afterwards are closed from the start (a recording transport
    /// fails with [`RecordingError::Closed`]). Idempotent.
    pub async fn close(&self) {
        let members = {
            let mut m = self.inner.members();
            m.closed = true;
            std::mem::take(&mut m.list)
        };
        let live: Vec<Arc<dyn SessionHandler>> = members.iter().filter_map(Weak::upgrade).collect();
        for t in &live {
            t.core().request_close();
        }
        for t in &live {
            t.core().wait_closed().await;
            t.session_closed();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The ids of the data channels published in this router (sorted).
    pub fn data_publisher_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.inner.data().keys().cloned().collect();
        ids.sort();
        ids
    }
}
