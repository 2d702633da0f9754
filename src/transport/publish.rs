//! The publish transport: accepts the browser's offers, and turns negotiated receiving
//! m-lines into publishers of its router.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};

use super::Core;
use crate::config::WebRTCTransportConfig;
use crate::engine::command::{Command, Role, TrackInfo};
use crate::error::{NegotiationError, PublishError};
use crate::publisher::{MediaKind, Publisher, PublisherInner, Track};
use crate::router::{PublishedTrack, RouterInner};
use crate::signal::{SdpType, SessionDescription};

/// How long `publish` waits for the offer carrying the track to be applied.
const PUBLISH_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct PublishInner {
    core: Core,
    router: Arc<RouterInner>,
    tracks: Mutex<Vec<TrackInfo>>,
    tracks_changed: Notify,
    /// Offers being applied right now, and whether one was ever applied: `publish` waits
    /// for a missing track only while it may still arrive.
    negotiating: AtomicUsize,
    negotiated: AtomicBool,
    published: Mutex<Vec<String>>,
    /// Data channels this transport published and that are still published.
    data_published: Mutex<Vec<String>>,
    /// One offer of this transport is parsed and applied at a time: a client sending
    /// offers faster than they are answered waits its turn, and costs the shard no more.
    one_offer_at_a_time: tokio::sync::Mutex<()>,
}

impl PublishInner {
    fn on_session_closed(&self) {
        self.core.close_with(|| {
            self.tracks_changed.notify_waiters();
            self.unpublish_all();
        });
    }

    /// Take every track this transport published out of the router (its subscribers are
    /// told). Idempotent.
    fn unpublish_all(&self) {
        let ids = std::mem::take(&mut *self.published.lock().unwrap_or_else(|e| e.into_inner()));
        for id in ids {
            self.router.unpublish(&id);
        }
        let ids = std::mem::take(
            &mut *self
                .data_published
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for id in ids {
            self.router.unpublish_data(&id);
        }
    }
}

impl super::SessionHandler for PublishInner {
    fn core(&self) -> &Core {
        &self.core
    }
    fn session_closed(&self) {
        self.on_session_closed();
    }
    fn data_channel_closed(&self, label: String) {
        let mine = {
            let mut d = self
                .data_published
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let before = d.len();
            d.retain(|l| *l != label);
            d.len() != before
        };
        if mine {
            self.router.unpublish_data(&label);
        }
    }
}

impl Drop for PublishInner {
    fn drop(&mut self) {
        // Last handle gone: close the session; the event task releases the rest.
        if !self.core.is_closed() {
            self.core.request_close();
        }
        self.unpublish_all();
    }
}

/// A peer connection on which a browser publishes media. Cheap to clone; the session
/// closes when [`close`](Self::close) is called, the peer leaves, or the last clone drops.
#[derive(Clone)]
#[must_use = "dropping the last handle of a transport closes it"]
pub struct PublishTransport {
    inner: Arc<PublishInner>,
}

impl std::fmt::Debug for PublishTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishTransport")
            .field("id", &self.inner.core.id.0)
            .field("shard", &self.inner.core.shard)
            .finish()
    }
}

impl PublishTransport {
    pub(crate) async fn create(router: &Arc<RouterInner>, cfg: WebRTCTransportConfig) -> Self {
        let (core, events) = router.create_session(Role::Publish, &cfg).await;
        let closed_at_birth = core.is_closed();
        let inner = Arc::new(PublishInner {
            core,
            router: router.clone(),
            tracks: Mutex::new(Vec::new()),
            tracks_changed: Notify::new(),
            negotiating: AtomicUsize::new(0),
            negotiated: AtomicBool::new(false),
            published: Mutex::new(Vec::new()),
            data_published: Mutex::new(Vec::new()),
            one_offer_at_a_time: tokio::sync::Mutex::new(()),
        });
        if !closed_at_birth {
            super::spawn_event_loop(events, &inner);
            router.adopt(&inner);
        }
        PublishTransport { inner }
    }

    /// Publish the browser's data channel `label` (the client's `publishData()` opened it
    /// with a fresh id as label, and sent the offer that carries it): its messages go to
    /// every [`SubscribeTransport::data_subscribe`](super::SubscribeTransport::data_subscribe)r
    /// of that id. Waits (up to 10 s) for the channel to open; fails if it does not, or if
    /// the id is already published in the router.
    pub async fn data_publish(
        &self,
        label: impl Into<String>,
    ) -> Result<crate::data::DataPublisher, PublishError> {
        let label = label.into();
        let inner = &self.inner;
        let core = &inner.core;
        if core.is_closed() {
            return Err(PublishError::Closed);
        }
        if inner.router.data().contains_key(&label) {
            return Err(PublishError::AlreadyPublished(label));
        }
        let key = crate::engine::TrackKey::new(core.shard, crate::engine::next_id());
        let (tx, rx) = oneshot::channel();
        if !core.send(Command::PublishData {
            id: core.id,
            label: label.clone(),
            key,
            reply: tx,
        }) {
            return Err(PublishError::Closed);
        }
        let info = match tokio::time::timeout(PUBLISH_WAIT, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(PublishError::Closed),
            Err(_) => {
                core.send(Command::UnpublishData { id: core.id, key });
                return Err(PublishError::UnknownTrack(label));
            }
        };
        let handle = Arc::new(crate::data::DataPublisherInner {
            info: info.clone(),
            router: Arc::downgrade(&inner.router),
            closed: watch::channel(false).0,
        });
        {
            let mut data = inner.router.data();
            if data.contains_key(&label) {
                drop(data);
                core.send(Command::UnpublishData { id: core.id, key });
                return Err(PublishError::AlreadyPublished(label));
            }
            data.insert(
                label.clone(),
                crate::router::PublishedData {
                    info,
                    shard: core.shard,
                    session: core.id,
                    handle: handle.clone(),
                    subscribers: Vec::new(),
                },
            );
        }
        inner
            .data_published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(label);
        Ok(crate::data::DataPublisher { inner: handle })
    }

    /// Parse `sdp` off the shard and have the shard apply it, one offer of this transport
    /// at a time.
    async fn apply_offer(&self, sdp: String) -> Result<(String, Vec<TrackInfo>), NegotiationError> {
        let _turn = self.inner.one_offer_at_a_time.lock().await;
        let (sdp, parsed) = crate::engine::sdp_parse::parse_offer(sdp).await?;
        let core = &self.inner.core;
        let (tx, rx) = oneshot::channel();
        if !core.send(Command::AcceptOffer {
            id: core.id,
            sdp,
            offer: Box::new(parsed),
            reply: tx,
        }) {
            return Err(NegotiationError::Closed);
        }
        rx.await.unwrap_or(Err(NegotiationError::Closed))
    }

    /// Apply the browser's offer and return the answer. Call again with each new offer
    /// (new tracks, ICE restart); m-lines that stop sending unpublish their tracks.
    pub async fn get_answer(
        &self,
        offer: SessionDescription,
    ) -> Result<SessionDescription, NegotiationError> {
        if offer.sdp_type != SdpType::Offer {
            return Err(NegotiationError::WrongType { expected: "offer" });
        }
        let core = &self.inner.core;
        if core.is_closed() {
            return Err(NegotiationError::Closed);
        }
        // Counted from here (waiting for its turn and parsing included): `publish` waits
        // for a track while an offer that may carry it is on its way.
        self.inner.negotiating.fetch_add(1, Ordering::AcqRel);
        let result = self.apply_offer(offer.sdp).await;
        self.inner.negotiating.fetch_sub(1, Ordering::AcqRel);
        let (answer, tracks) = match result {
            Ok(r) => r,
            Err(e) => {
                self.inner.tracks_changed.notify_waiters();
                return Err(e);
            }
        };
        self.inner.negotiated.store(true, Ordering::Release);
        // Tracks that stopped: unpublish them.
        let gone: Vec<String> = {
            let published = self
                .inner
                .published
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            published
                .iter()
                .filter(|id| !tracks.iter().any(|t| t.active && &t.track_id == *id))
                .cloned()
                .collect()
        };
        for id in &gone {
            self.inner.router.unpublish(id);
        }
        self.inner
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id| !gone.contains(id));
        *self.inner.tracks.lock().unwrap_or_else(|e| e.into_inner()) = tracks;
        self.inner.tracks_changed.notify_waiters();
        core.described();
        Ok(SessionDescription::answer(answer))
    }

    /// The ids [`publish`](Self::publish) accepts now: the `a=msid` track ids of the
    /// receiving m-lines the offers so far negotiated with a codec the router carries (an
    /// m-line without `a=msid` gets an id of str0m's making), in m-line order. Used by
    /// clients that publish everything they send, such as WHIP's.
    pub fn track_ids(&self) -> Vec<String> {
        self.inner
            .tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|t| t.active)
            .map(|t| t.track_id.clone())
            .collect()
    }

    /// Publish the track whose `a=msid` track id is `publisher_id`.
    ///
    /// Infallible to keep the original API: on failure the returned [`Publisher`] is
    /// already closed and [`Publisher::error`] says why. Use [`try_publish`](Self::try_publish)
    /// to get the error directly. If the offer with this track is still being applied,
    /// this waits for it (up to 10 s; also when no offer was applied yet).
    pub async fn publish(&self, publisher_id: impl Into<String>) -> Publisher {
        let id = publisher_id.into();
        match self.try_publish(id.clone()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(parent: &self.inner.core.span, publisher = %id, "publish failed: {e}");
                Publisher::failed(id, e)
            }
        }
    }

    /// Publish the track whose `a=msid` track id is `publisher_id`, or say why not.
    pub async fn try_publish(
        &self,
        publisher_id: impl Into<String>,
    ) -> Result<Publisher, PublishError> {
        let id = publisher_id.into();
        let deadline = tokio::time::Instant::now() + PUBLISH_WAIT;
        loop {
            let changed = self.inner.tracks_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.inner.core.is_closed() {
                return Err(PublishError::Closed);
            }
            let found = self
                .inner
                .tracks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|t| t.active && t.track_id == id)
                .cloned();
            if let Some(info) = found {
                return self.register(info);
            }
            // Not there, and no offer in flight that could bring it: fail now.
            if self.inner.negotiated.load(Ordering::Acquire)
                && self.inner.negotiating.load(Ordering::Acquire) == 0
            {
                return Err(PublishError::UnknownTrack(id));
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(PublishError::UnknownTrack(id));
            }
        }
    }

    fn register(&self, info: TrackInfo) -> Result<Publisher, PublishError> {
        let router = &self.inner.router;
        let mut map = router.lock();
        if let Some(existing) = map.get(&info.track_id) {
            if existing.info.key == info.key {
                return Ok(Publisher {
                    inner: existing.handle.clone(),
                });
            }
            return Err(PublishError::AlreadyPublished(info.track_id));
        }
        let codec = info
            .params
            .first()
            .map(|p| p.spec().codec.to_string())
            .unwrap_or_default();
        let handle = Arc::new(PublisherInner {
            track: Track {
                id: info.track_id.clone(),
                stream_id: info.stream_id.clone(),
                kind: MediaKind::from(info.kind),
                codec,
            },
            router: Arc::downgrade(router),
            error: None,
            closed: watch::channel(false).0,
        });
        map.insert(
            info.track_id.clone(),
            PublishedTrack {
                info: info.clone(),
                shard: self.inner.core.shard,
                handle: handle.clone(),
                subscribers: Vec::new(),
            },
        );
        drop(map);
        self.inner
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(info.track_id);
        Ok(Publisher { inner: handle })
    }

    /// Test hook: make this transport's session panic inside its shard, as a bug in the
    /// WebRTC stack would. The session (only it) is closed. Only with the `testing` feature;
    /// not for production use.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub async fn inject_panic_for_tests(&self) {
        self.inner.core.send(Command::InjectPanic {
            id: self.inner.core.id,
        });
    }

    super::common_transport_api!("an answer has been produced");

    /// Close the transport: its publishers are unpublished and their subscribers told.
    pub async fn close(&self) {
        self.inner.core.close_and_wait().await;
        self.inner.on_session_closed();
    }
}
