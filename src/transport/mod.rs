//! Transports: one browser peer connection each, backed by one str0m session on a shard,
//! and the recording transport, which sends plain RTP to a receiver of the user's choosing.
//!
//! [`PublishTransport`] receives media and creates [`Publisher`](crate::publisher::Publisher)s;
//! [`SubscribeTransport`] sends media and creates [`Subscriber`](crate::subscriber::Subscriber)s;
//! [`RecordingTransport`] sends published tracks to ffmpeg or GStreamer.
//! Both are cheap handles (clone freely); the session closes when [`close`](PublishTransport::close)
//! is called, when the peer goes away, or when the last handle is dropped.
//! This module owns what both share: the session's shard address, ICE candidate callbacks,
//! close notification.

mod publish;
mod record;
mod subscribe;

pub use publish::PublishTransport;
pub use record::{RecordingTrack, RecordingTransport};
pub(crate) use subscribe::SubscribeInner;
pub use subscribe::{NegotiationCallback, SubscribeTransport};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};

use crate::engine::command::{Command, SessionCreated};
use crate::engine::{Engine, SessionId, ShardId};
use crate::error::TransportError;
use crate::signal::{IceCandidate, IceCandidateInit};
use crate::stats::TransportStats;

/// Callback receiving the transport's local ICE candidates.
pub type IceCandidateCallback = Box<dyn Fn(IceCandidate) + Send + Sync + 'static>;
/// Callback run once when the transport closes.
pub type ClosedCallback = Box<dyn Fn() + Send + Sync + 'static>;

/// Connection state of a transport, as seen by the server. Serializes as `"new"`,
/// `"connected"` or `"closed"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TransportState {
    /// Created; ICE and DTLS not yet established.
    #[default]
    New,
    /// ICE and DTLS established; media can flow.
    Connected,
    /// Closed for good.
    Closed,
}

/// State shared by both transport kinds.
pub(crate) struct Core {
    pub(crate) id: SessionId,
    pub(crate) shard: ShardId,
    pub(crate) engine: Arc<Engine>,
    created: SessionCreated,
    /// Candidates learned after creation (server-reflexive).
    late: Mutex<Vec<String>>,
    on_ice: Mutex<Option<Arc<IceCandidateCallback>>>,
    on_closed: Mutex<Vec<ClosedCallback>>,
    /// Candidates are handed out once a local description exists (like a browser does).
    described: AtomicBool,
    /// Closing began ([`Core::close_with`]): operations are refused from here on.
    closing: AtomicBool,
    pub(crate) state: watch::Sender<TransportState>,
    /// The API side's tracing span of this transport (`transport`, `router`, `role`): its
    /// event task runs in it. The shard has its own `session` span with the same fields.
    pub(crate) span: tracing::Span,
}

impl Core {
    pub(crate) fn new(
        id: SessionId,
        shard: ShardId,
        engine: Arc<Engine>,
        created: SessionCreated,
        span: tracing::Span,
    ) -> Core {
        Core {
            id,
            shard,
            engine,
            created,
            late: Mutex::new(Vec::new()),
            on_ice: Mutex::new(None),
            on_closed: Mutex::new(Vec::new()),
            described: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            state: watch::channel(TransportState::New).0,
            span,
        }
    }

    /// A statistics snapshot, taken by the session's shard.
    pub(crate) async fn stats(&self) -> Result<TransportStats, TransportError> {
        if self.is_closed() {
            return Err(TransportError::Closed);
        }
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::TransportStats {
            id: self.id,
            reply: tx,
        }) {
            return Err(TransportError::Closed);
        }
        let mut stats = rx.await.unwrap_or(Err(TransportError::Closed))?;
        if self.is_closed() {
            stats.state = TransportState::Closed;
        }
        Ok(stats)
    }

    pub(crate) fn send(&self, cmd: Command) -> bool {
        match self.engine.shard(self.shard) {
            Some(s) => s.send(cmd),
            None => false,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closing.load(Ordering::Acquire) || *self.state.borrow() == TransportState::Closed
    }

    pub(crate) async fn set_on_ice_candidate(&self, cb: IceCandidateCallback) {
        let cb = Arc::new(cb);
        *self.on_ice.lock().unwrap_or_else(|e| e.into_inner()) = Some(cb.clone());
        if self.described.load(Ordering::Acquire) {
            self.spawn_candidates(cb);
        }
    }

    /// A local description (answer or offer) was produced: trickle candidates once.
    pub(crate) fn described(&self) {
        if self.described.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(cb) = self.ice_callback() {
            self.spawn_candidates(cb);
        }
    }

    fn ice_callback(&self) -> Option<Arc<IceCandidateCallback>> {
        self.on_ice
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A candidate learned later: hand it out now if candidates are already flowing.
    pub(crate) fn add_local_candidate(&self, candidate: String) {
        self.late
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(candidate.clone());
        if self.described.load(Ordering::Acquire) {
            if let Some(cb) = self.ice_callback() {
                self.spawn_list(cb, vec![candidate]);
            }
        }
    }

    fn spawn_candidates(&self, cb: Arc<IceCandidateCallback>) {
        let mut all = self.created.candidates.clone();
        all.extend(
            self.late
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        self.spawn_list(cb, all);
    }

    fn spawn_list(&self, cb: Arc<IceCandidateCallback>, list: Vec<String>) {
        let cands: Vec<IceCandidate> = list
            .iter()
            .map(|c| IceCandidate {
                candidate: c.clone(),
                sdp_mid: None,
                ufrag: Some(self.created.ufrag.clone()),
            })
            .collect();
        // On a task, after the caller had a chance to send the description first.
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            for c in cands {
                cb(c);
            }
        });
    }

    pub(crate) async fn add_ice_candidate(
        &self,
        init: IceCandidateInit,
    ) -> Result<(), TransportError> {
        if self.is_closed() {
            return Err(TransportError::Closed);
        }
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::AddRemoteCandidate {
            id: self.id,
            candidate: init.candidate,
            reply: tx,
        }) {
            return Err(TransportError::Closed);
        }
        rx.await.unwrap_or(Err(TransportError::Closed))
    }

    pub(crate) fn on_closed(&self, cb: ClosedCallback) {
        if self.is_closed() {
            cb();
            return;
        }
        self.on_closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cb);
    }

    /// Mark closed and run close callbacks once. Returns false if it was already closed.
    pub(crate) fn mark_closed(&self) -> bool {
        self.close_with(|| {})
    }

    /// Close once: the first caller runs `cleanup` (unpublish, end subscriptions), then the
    /// state turns `Closed` and the close callbacks run, so that whoever waits for `Closed`
    /// ([`close_and_wait`](Self::close_and_wait)) finds the cleanup done. Operations are
    /// refused from the start of the cleanup. Returns false if closing had begun already.
    pub(crate) fn close_with(&self, cleanup: impl FnOnce()) -> bool {
        if self.closing.swap(true, Ordering::AcqRel) {
            return false;
        }
        cleanup();
        self.state.send_replace(TransportState::Closed);
        let cbs = std::mem::take(&mut *self.on_closed.lock().unwrap_or_else(|e| e.into_inner()));
        for cb in cbs {
            cb();
        }
        true
    }

    pub(crate) fn request_close(&self) {
        self.send(Command::CloseSession { id: self.id });
    }

    /// Ask the shard to close the session and wait (up to 5 s) until it says it did.
    pub(crate) async fn close_and_wait(&self) {
        self.request_close();
        self.wait_closed().await;
    }

    /// Wait (up to 5 s) until the session is closed.
    pub(crate) async fn wait_closed(&self) {
        let mut rx = self.state.subscribe();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            rx.wait_for(|s| *s == TransportState::Closed),
        )
        .await;
    }

    pub(crate) fn release_load(&self) {
        if let Some(s) = self.engine.shard(self.shard) {
            s.load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The methods both transport kinds have, written once: `$candidates_when` completes the
/// sentence "They are delivered (on a tokio task) once …" of `on_ice_candidate`.
macro_rules! common_transport_api {
    ($candidates_when:literal) => {
        /// The id of the router this transport belongs to.
        pub fn router_id(&self) -> &str {
            &self.inner.router.id
        }

        #[doc = concat!(
            "Register the callback that receives this transport's local ICE candidates. ",
            "They are delivered (on a tokio task) once ", $candidates_when, ", or at once if it has."
        )]
        pub async fn on_ice_candidate(&self, callback: super::IceCandidateCallback) {
            self.inner.core.set_on_ice_candidate(callback).await;
        }

        /// Register a callback run once when the transport closes (for any reason).
        pub async fn on_closed(&self, callback: super::ClosedCallback) {
            self.inner.core.on_closed(callback);
        }

        /// Add a remote ICE candidate from the browser. An empty candidate (end of
        /// candidates) is accepted and ignored.
        pub async fn add_ice_candidate(
            &self,
            candidate: crate::signal::IceCandidateInit,
        ) -> Result<(), crate::error::TransportError> {
            self.inner.core.add_ice_candidate(candidate).await
        }

        /// Connection state.
        pub fn state(&self) -> super::TransportState {
            *self.inner.core.state.borrow()
        }

        /// The transport's id, unique in the process: the `transport` field of its tracing
        /// spans and [`TransportStats::transport_id`](crate::stats::TransportStats::transport_id).
        pub fn id(&self) -> u64 {
            self.inner.core.id.0
        }

        /// A snapshot of the transport's statistics (selected candidate pair, RTT, traffic,
        /// loss, NACK/PLI/FIR counts, bitrates), taken on its shard when asked: the
        /// forwarding path only bumps counters. Fails only if the transport is closed.
        pub async fn stats(
            &self,
        ) -> Result<crate::stats::TransportStats, crate::error::TransportError> {
            self.inner.core.stats().await
        }
    };
}
pub(crate) use common_transport_api;

/// What a transport kind does with its session's events.
pub(crate) trait SessionHandler: Send + Sync + 'static {
    fn core(&self) -> &Core;
    /// A down-track was refused by the peer (subscribe transports only).
    fn down_track_rejected(&self, _down: crate::engine::DownTrackId) {}
    /// A down-track's layer or its track's flowing encodings changed (subscribe only).
    fn layers_changed(
        &self,
        _down: crate::engine::DownTrackId,
        _current: Option<crate::forward::Layer>,
        _active: u8,
    ) {
    }
    /// A data channel of this (subscribe) session closed.
    fn data_closed(&self, _down: crate::engine::DownTrackId) {}
    /// The peer closed its published data channel `label` (publish only).
    fn data_channel_closed(&self, _label: String) {}
    /// The session is gone: release everything.
    fn session_closed(&self);
}

/// Drive a transport from its session's events until the session closes. Holds only a weak
/// reference, so dropping the last handle still closes the transport.
/// Run [`event_loop`] for a new transport on a tokio task, in the session's span.
pub(crate) fn spawn_event_loop<T: SessionHandler>(
    events: tokio::sync::mpsc::UnboundedReceiver<crate::engine::command::SessionEvent>,
    inner: &Arc<T>,
) {
    let core = inner.core();
    let task = event_loop(
        events,
        Arc::downgrade(inner),
        core.engine.clone(),
        core.shard,
    );
    tokio::spawn(tracing::Instrument::instrument(task, core.span.clone()));
}

async fn event_loop<T: SessionHandler>(
    mut events: tokio::sync::mpsc::UnboundedReceiver<crate::engine::command::SessionEvent>,
    inner: std::sync::Weak<T>,
    engine: Arc<Engine>,
    shard: ShardId,
) {
    use crate::engine::command::SessionEvent;
    while let Some(ev) = events.recv().await {
        if let SessionEvent::Closed(reason) = &ev {
            tracing::debug!(?reason, "transport closed");
            break;
        }
        let Some(i) = inner.upgrade() else {
            continue;
        };
        match ev {
            SessionEvent::Connected => {
                i.core().state.send_if_modified(|s| {
                    let changed = *s == TransportState::New;
                    if changed {
                        *s = TransportState::Connected;
                    }
                    changed
                });
            }
            SessionEvent::LocalCandidate(c) => i.core().add_local_candidate(c),
            SessionEvent::DownTrackRejected(down) => i.down_track_rejected(down),
            SessionEvent::Layers {
                down,
                current,
                active,
            } => i.layers_changed(down, current, active),
            SessionEvent::DataClosed(down) => i.data_closed(down),
            SessionEvent::DataChannelClosed(label) => i.data_channel_closed(label),
            SessionEvent::Closed(_) => {}
        }
    }
    if let Some(s) = engine.shard(shard) {
        s.load.fetch_sub(1, Ordering::Relaxed);
    }
    if let Some(i) = inner.upgrade() {
        i.session_closed();
    }
}
