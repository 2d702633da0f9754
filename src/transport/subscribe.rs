//! The subscribe transport: offers published tracks to a browser, one m-line per
//! subscriber, and renegotiates when subscriptions end.
//!
//! Negotiation is serialized: at most one offer is outstanding; the next change waits for
//! its answer (or for a timeout), and changes made meanwhile are folded into the next offer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::Core;
use crate::config::WebRTCTransportConfig;
use crate::engine::command::{Command, DownTrackSpec, Role};
use crate::engine::{next_id, DownTrackId};
use crate::error::{NegotiationError, SubscribeError};
use crate::publisher::MediaKind;
use crate::router::{RouterInner, Subscription};
use crate::signal::{SdpType, SessionDescription};
use crate::subscriber::{Subscriber, SubscriberInner};

/// Callback receiving offers for renegotiation.
pub type NegotiationCallback = Box<dyn Fn(SessionDescription) + Send + Sync + 'static>;

/// How long an offer may stay unanswered before the next negotiation goes ahead anyway.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

struct SubEntry {
    route: Subscription,
    handle: Arc<SubscriberInner>,
}

pub(crate) struct SubscribeInner {
    core: Core,
    router: Arc<RouterInner>,
    weak: Weak<SubscribeInner>,
    negotiation: Arc<Semaphore>,
    held: Mutex<Option<(u64, OwnedSemaphorePermit)>>,
    generation: AtomicU64,
    on_negotiation: Mutex<Option<Arc<NegotiationCallback>>>,
    subs: Mutex<HashMap<DownTrackId, SubEntry>>,
    /// Data channels: route and handle of each.
    data_subs: Mutex<HashMap<DownTrackId, (Subscription, Arc<crate::data::DataSubscriberInner>)>>,
    renegotiate_wanted: AtomicBool,
    /// The viewer makes the offers (WHEP, [`SubscribeTransport::answer_viewer_offer`]):
    /// this transport never offers.
    viewer_offers: AtomicBool,
    /// A relay to another worker ([`SubscribeTransport::create_relay`]): simulcast tracks
    /// are sent with every encoding.
    relay: bool,
}

impl SubscribeInner {
    fn subs(&self) -> std::sync::MutexGuard<'_, HashMap<DownTrackId, SubEntry>> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for the right to make an offer.
    async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(
            ANSWER_TIMEOUT + Duration::from_secs(1),
            self.negotiation.clone().acquire_owned(),
        )
        .await
        .ok()?
        .ok()
    }

    /// Keep the permit until the answer arrives (or the answer timeout passes).
    fn hold(&self, permit: OwnedSemaphorePermit) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, permit));
        let weak = self.weak.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ANSWER_TIMEOUT).await;
            if let Some(inner) = weak.upgrade() {
                let mut held = inner.held.lock().unwrap_or_else(|e| e.into_inner());
                if matches!(&*held, Some((g, _)) if *g == generation) {
                    tracing::warn!(parent: &inner.core.span, "offer not answered in time");
                    *held = None;
                }
            }
        });
    }

    fn release(&self) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn data_subs(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        HashMap<DownTrackId, (Subscription, Arc<crate::data::DataSubscriberInner>)>,
    > {
        self.data_subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// End one subscription: stop forwarding on every shard involved, tell the handle,
    /// and (if asked) renegotiate the m-line away. No-op if it already ended. A data
    /// subscription's channel is closed (no renegotiation: SCTP resets its stream).
    pub(crate) fn remove_subscription(&self, down: DownTrackId, renegotiate: bool) {
        let data = self.data_subs().remove(&down);
        if let Some((route, handle)) = data {
            self.core.send(Command::RemoveDataDown {
                id: self.core.id,
                down,
            });
            self.router.close_data_route(&route);
            handle.mark_closed();
            return;
        }
        let Some(entry) = self.subs().remove(&down) else {
            return;
        };
        self.core.send(Command::RemoveDownTrack {
            id: self.core.id,
            down,
        });
        self.router.close_route(&entry.route);
        entry.handle.mark_closed();
        if renegotiate && !self.core.is_closed() && !self.viewer_offers.load(Ordering::Acquire) {
            self.renegotiate_wanted.store(true, Ordering::Release);
            if let Some(me) = self.weak.upgrade() {
                tokio::spawn(self::renegotiate(me));
            }
        }
    }

    /// Enter subscription `down` of track `info` (publisher `publisher_id`): known here
    /// first, so a publisher leaving from now on finds it, then routed and registered with
    /// the publisher. Returns its handle, and false if the publisher left meanwhile (undo
    /// with `remove_subscription`).
    fn register(
        &self,
        down: DownTrackId,
        publisher_id: &str,
        info: &crate::engine::command::TrackInfo,
        publisher_shard: crate::engine::ShardId,
    ) -> (Arc<SubscriberInner>, bool) {
        let handle = Arc::new(SubscriberInner {
            id: down,
            publisher_id: publisher_id.to_string(),
            kind: MediaKind::from(info.kind),
            transport: self.weak.clone(),
            closed: watch::channel(false).0,
            layers: watch::channel(crate::subscriber::LayerState::default()).0,
        });
        let route = Subscription {
            publisher_id: publisher_id.to_string(),
            track: info.key,
            down,
            publisher_shard,
            subscriber_shard: self.core.shard,
        };
        self.subs().insert(
            down,
            SubEntry {
                route: route.clone(),
                handle: handle.clone(),
            },
        );
        let registered = self.router.open_route(&route, self.weak.clone());
        (handle, registered)
    }

    /// Send a down-track's layer ceiling to its shard; false if the session is gone.
    pub(crate) fn set_preferred_layer(
        &self,
        down: DownTrackId,
        layer: crate::forward::Layer,
    ) -> bool {
        self.core.send(Command::SetPreferredLayer {
            id: self.core.id,
            down,
            layer,
        })
    }

    fn on_session_closed(&self) {
        self.core.close_with(|| {
            let mut downs: Vec<DownTrackId> = self.subs().keys().copied().collect();
            downs.extend(self.data_subs().keys().copied());
            for d in downs {
                self.remove_subscription(d, false);
            }
            self.release();
        });
    }
}

impl crate::router::RouteOwner for SubscribeInner {
    // (Media and data subscriptions alike.)
    fn remove_subscription(&self, down: DownTrackId, renegotiate: bool) {
        SubscribeInner::remove_subscription(self, down, renegotiate);
    }
}

impl super::SessionHandler for SubscribeInner {
    fn core(&self) -> &Core {
        &self.core
    }
    fn data_closed(&self, down: DownTrackId) {
        self.remove_subscription(down, false);
    }
    fn down_track_rejected(&self, down: DownTrackId) {
        tracing::warn!(
            down = down.0,
            "subscriber refused every codec of the publisher"
        );
        self.remove_subscription(down, true);
    }
    fn layers_changed(
        &self,
        down: DownTrackId,
        current: Option<crate::forward::Layer>,
        active: u8,
    ) {
        let handle = self.subs().get(&down).map(|e| e.handle.clone());
        if let Some(h) = handle {
            h.layers.send_modify(|l| {
                l.current = current;
                l.available = active.count_ones() as u8;
            });
        }
    }
    fn session_closed(&self) {
        self.on_session_closed();
    }
}

impl Drop for SubscribeInner {
    fn drop(&mut self) {
        if !self.core.is_closed() {
            self.core.request_close();
        }
        let entries: Vec<SubEntry> = self.subs().drain().map(|(_, e)| e).collect();
        for e in entries {
            self.router.close_route(&e.route);
            e.handle.mark_closed();
        }
        let data: Vec<_> = self.data_subs().drain().map(|(_, e)| e).collect();
        for (route, handle) in data {
            self.router.close_data_route(&route);
            handle.mark_closed();
        }
    }
}

async fn renegotiate(inner: Arc<SubscribeInner>) {
    let cb = inner
        .on_negotiation
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(cb) = cb else {
        // Without a callback the change waits and is folded into the next offer.
        return;
    };
    let Some(permit) = inner.acquire().await else {
        return;
    };
    if !inner.renegotiate_wanted.swap(false, Ordering::AcqRel) || inner.core.is_closed() {
        return;
    }
    let (tx, rx) = oneshot::channel();
    if !inner.core.send(Command::CreateOffer {
        id: inner.core.id,
        ice_restart: false,
        reply: tx,
    }) {
        return;
    }
    if let Ok(Ok(Some(offer))) = rx.await {
        inner.hold(permit);
        cb(SessionDescription::offer(offer));
    }
}

/// A peer connection on which a browser receives media. Cheap to clone; the session
/// closes when [`close`](Self::close) is called, the peer leaves, or the last clone drops.
#[derive(Clone)]
#[must_use = "dropping the last handle of a transport closes it"]
pub struct SubscribeTransport {
    inner: Arc<SubscribeInner>,
}

impl std::fmt::Debug for SubscribeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscribeTransport")
            .field("id", &self.inner.core.id.0)
            .field("shard", &self.inner.core.shard)
            .finish()
    }
}

impl SubscribeTransport {
    pub(crate) async fn create(router: &Arc<RouterInner>, cfg: WebRTCTransportConfig) -> Self {
        Self::create_with(router, cfg, false).await
    }

    async fn create_with(
        router: &Arc<RouterInner>,
        cfg: WebRTCTransportConfig,
        full_ice: bool,
    ) -> Self {
        let (core, events) = router
            .create_session_with(Role::Subscribe, &cfg, full_ice)
            .await;
        let closed_at_birth = core.is_closed();
        let inner = Arc::new_cyclic(|weak| SubscribeInner {
            core,
            router: router.clone(),
            weak: weak.clone(),
            negotiation: Arc::new(Semaphore::new(1)),
            held: Mutex::new(None),
            generation: AtomicU64::new(0),
            on_negotiation: Mutex::new(None),
            subs: Mutex::new(HashMap::new()),
            data_subs: Mutex::new(HashMap::new()),
            renegotiate_wanted: AtomicBool::new(false),
            viewer_offers: AtomicBool::new(false),
            relay: full_ice,
        });
        if !closed_at_birth {
            super::spawn_event_loop(events, &inner);
            router.adopt(&inner);
        }
        SubscribeTransport { inner }
    }

    /// A relay transport: like a subscribe transport, but with a full ICE agent (the other
    /// end is another worker's ICE-lite publish transport).
    pub(crate) async fn create_relay(router: &Arc<RouterInner>) -> Self {
        Self::create_with(router, WebRTCTransportConfig::default(), true).await
    }

    /// Register the callback that receives new offers when the transport must renegotiate
    /// (a publisher left, a subscriber closed). Answer them with [`set_answer`](Self::set_answer).
    pub async fn on_negotiation_needed(&self, callback: NegotiationCallback) {
        *self
            .inner
            .on_negotiation
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(callback));
        if self.inner.renegotiate_wanted.load(Ordering::Acquire) {
            tokio::spawn(renegotiate(self.inner.clone()));
        }
    }

    /// Start forwarding the publisher `track_id` to this transport. Returns the subscriber
    /// and the offer to send to the browser (answer it with [`set_answer`](Self::set_answer)).
    /// If an earlier offer is still unanswered, waits for its answer first.
    pub async fn subscribe(
        &self,
        track_id: impl Into<String>,
    ) -> Result<(Subscriber, SessionDescription), SubscribeError> {
        let track_id = track_id.into();
        let inner = &self.inner;
        let core = &inner.core;
        if core.is_closed() {
            return Err(SubscribeError::Closed);
        }
        if inner.viewer_offers.load(Ordering::Acquire) {
            return Err(SubscribeError::BadOffer(
                "the viewer makes this transport's offers (answer_viewer_offer)".into(),
            ));
        }
        let lookup = |router: &RouterInner| {
            router
                .lock()
                .get(&track_id)
                .map(|p| (p.info.clone(), p.shard))
        };
        if lookup(&inner.router).is_none() {
            return Err(SubscribeError::UnknownPublisher(track_id));
        }
        if inner
            .subs()
            .values()
            .any(|e| e.route.publisher_id == track_id)
        {
            return Err(SubscribeError::AlreadySubscribed(track_id));
        }
        let permit = inner
            .acquire()
            .await
            .ok_or(SubscribeError::NegotiationTimeout)?;
        if core.is_closed() {
            return Err(SubscribeError::Closed);
        }
        let (info, publisher_shard) = lookup(&inner.router)
            .ok_or_else(|| SubscribeError::UnknownPublisher(track_id.clone()))?;
        let down = DownTrackId(next_id());
        let (tx, rx) = oneshot::channel();
        if !core.send(Command::AddDownTrack {
            id: core.id,
            spec: Box::new(DownTrackSpec {
                relay: inner.relay,
                ..DownTrackSpec::of(&info, down)
            }),
            reply: tx,
        }) {
            return Err(SubscribeError::Closed);
        }
        let offer = rx.await.unwrap_or(Err(SubscribeError::Closed))?;
        let (handle, registered) = inner.register(down, &track_id, &info, publisher_shard);
        inner.hold(permit);
        core.described();
        if !registered {
            inner.remove_subscription(down, true);
        }
        Ok((
            Subscriber { inner: handle },
            SessionDescription::offer(offer),
        ))
    }

    /// The viewer offers (WHEP): answer `offer`, a viewer's offer of receiving m-lines, with
    /// the tracks `publisher_ids` bound to them (each to the first free m-line of its kind,
    /// in the order given). Returns the answer and a subscriber per track bound; tracks no
    /// m-line takes are left out. Fails if no track is bound, the offer is not valid SDP,
    /// an id is unknown, or this transport already subscribes. Call again with a new offer
    /// of the same m-lines (an ICE restart): it is applied, nothing new is bound. The
    /// transport never offers by itself afterwards: when a publisher leaves, its subscriber
    /// closes and its m-line stays (the viewer's stream just ends).
    pub async fn answer_viewer_offer(
        &self,
        offer: SessionDescription,
        publisher_ids: &[String],
    ) -> Result<(SessionDescription, Vec<Subscriber>), SubscribeError> {
        let inner = &self.inner;
        let core = &inner.core;
        if offer.sdp_type != SdpType::Offer {
            return Err(SubscribeError::BadOffer("not an offer".into()));
        }
        if core.is_closed() {
            return Err(SubscribeError::Closed);
        }
        let restart = !inner.subs().is_empty();
        if restart && !inner.viewer_offers.load(Ordering::Acquire) {
            return Err(SubscribeError::BadOffer(
                "this transport's offers come from the server (subscribe)".into(),
            ));
        }
        inner.viewer_offers.store(true, Ordering::Release);
        let mut found = Vec::new();
        if !restart {
            let router = inner.router.lock();
            for id in publisher_ids {
                let p = router
                    .get(id)
                    .ok_or_else(|| SubscribeError::UnknownPublisher(id.clone()))?;
                found.push((id.clone(), p.info.clone(), p.shard));
            }
        }
        let (sdp, parsed) = crate::engine::sdp_parse::parse_offer(offer.sdp)
            .await
            .map_err(|e| SubscribeError::BadOffer(e.to_string()))?;
        let permit = inner
            .acquire()
            .await
            .ok_or(SubscribeError::NegotiationTimeout)?;
        let specs: Vec<DownTrackSpec> = found
            .iter()
            .map(|(_, info, _)| DownTrackSpec::of(info, DownTrackId(next_id())))
            .collect();
        let (tx, rx) = oneshot::channel();
        if !core.send(Command::AcceptViewerOffer {
            id: core.id,
            sdp,
            offer: Box::new(parsed),
            specs: specs.clone(),
            reply: tx,
        }) {
            return Err(SubscribeError::Closed);
        }
        let (answer, bound) = rx.await.unwrap_or(Err(SubscribeError::Closed))?;
        if !restart && bound.is_empty() {
            drop(permit);
            return Err(SubscribeError::BadOffer(
                "the offer receives none of the tracks (no receiving m-line of their kind, or no common codec)".into(),
            ));
        }
        let mut subscribers = Vec::with_capacity(bound.len());
        for ((id, info, publisher_shard), spec) in found.into_iter().zip(specs) {
            if !bound.contains(&spec.id) {
                continue;
            }
            let down = spec.id;
            let (handle, registered) = inner.register(down, &id, &info, publisher_shard);
            if !registered {
                inner.remove_subscription(down, false);
            }
            subscribers.push(Subscriber { inner: handle });
        }
        drop(permit);
        core.described();
        Ok((SessionDescription::answer(answer), subscribers))
    }

    /// Subscribe to data publisher `publisher_id`: the server opens a channel with its
    /// label, ordering and reliability on this connection. Returns the subscriber and, the
    /// first time (the connection gets its SCTP m-line), the offer to send to the browser
    /// (answer it with [`set_answer`](Self::set_answer)); later channels open in-band, with
    /// no renegotiation (`None`; the original Rheomesh returned an offer every time). The
    /// browser's `ondatachannel` then gets the channel (the client's `subscribeData`).
    pub async fn data_subscribe(
        &self,
        publisher_id: impl Into<String>,
    ) -> Result<(crate::data::DataSubscriber, Option<SessionDescription>), SubscribeError> {
        let publisher_id = publisher_id.into();
        let inner = &self.inner;
        let core = &inner.core;
        if core.is_closed() {
            return Err(SubscribeError::Closed);
        }
        if inner.viewer_offers.load(Ordering::Acquire) {
            return Err(SubscribeError::BadOffer(
                "the viewer makes this transport's offers (answer_viewer_offer)".into(),
            ));
        }
        let lookup = |router: &RouterInner| {
            router
                .data()
                .get(&publisher_id)
                .map(|p| (p.info.clone(), p.shard))
        };
        if lookup(&inner.router).is_none() {
            return Err(SubscribeError::UnknownPublisher(publisher_id));
        }
        if inner
            .data_subs()
            .values()
            .any(|(r, _)| r.publisher_id == publisher_id)
        {
            return Err(SubscribeError::AlreadySubscribed(publisher_id));
        }
        let permit = inner
            .acquire()
            .await
            .ok_or(SubscribeError::NegotiationTimeout)?;
        if core.is_closed() {
            return Err(SubscribeError::Closed);
        }
        // Again under the permit: a concurrent call for the same publisher may have won.
        if inner
            .data_subs()
            .values()
            .any(|(r, _)| r.publisher_id == publisher_id)
        {
            return Err(SubscribeError::AlreadySubscribed(publisher_id));
        }
        let (info, publisher_shard) = lookup(&inner.router)
            .ok_or_else(|| SubscribeError::UnknownPublisher(publisher_id.clone()))?;
        let down = DownTrackId(next_id());
        let (tx, rx) = oneshot::channel();
        if !core.send(Command::AddDataDown {
            id: core.id,
            down,
            info: Box::new(info.clone()),
            reply: tx,
        }) {
            return Err(SubscribeError::Closed);
        }
        let offer = rx.await.unwrap_or(Err(SubscribeError::Closed))?;
        let handle = Arc::new(crate::data::DataSubscriberInner {
            id: down,
            publisher_id: publisher_id.clone(),
            transport: inner.weak.clone(),
            closed: watch::channel(false).0,
        });
        let route = Subscription {
            publisher_id: publisher_id.clone(),
            track: info.key,
            down,
            publisher_shard,
            subscriber_shard: core.shard,
        };
        inner
            .data_subs()
            .insert(down, (route.clone(), handle.clone()));
        let owner: Weak<dyn crate::router::RouteOwner> = inner.weak.clone();
        let registered = inner.router.open_data_route(&route, owner);
        if offer.is_some() {
            // Until the answer comes.
            inner.hold(permit);
        }
        core.described();
        if !registered {
            inner.remove_subscription(down, false);
        }
        Ok((
            crate::data::DataSubscriber { inner: handle },
            offer.map(SessionDescription::offer),
        ))
    }

    /// The data subscribers of this transport that are still open.
    pub fn data_subscribers(&self) -> Vec<crate::data::DataSubscriber> {
        self.inner
            .data_subs()
            .values()
            .map(|(_, h)| crate::data::DataSubscriber { inner: h.clone() })
            .collect()
    }

    /// Apply the browser's answer to the outstanding offer.
    pub async fn set_answer(&self, answer: SessionDescription) -> Result<(), NegotiationError> {
        if answer.sdp_type != SdpType::Answer {
            return Err(NegotiationError::WrongType { expected: "answer" });
        }
        let core = &self.inner.core;
        if core.is_closed() {
            return Err(NegotiationError::Closed);
        }
        let (sdp, parsed) = crate::engine::sdp_parse::parse_answer(answer.sdp).await?;
        let (tx, rx) = oneshot::channel();
        if !core.send(Command::AcceptAnswer {
            id: core.id,
            sdp,
            answer: Box::new(parsed),
            reply: tx,
        }) {
            return Err(NegotiationError::Closed);
        }
        let r = rx.await.unwrap_or(Err(NegotiationError::Closed));
        // An answer that did not parse leaves the offer outstanding (a good answer may
        // follow); anything else ends this round, so the next negotiation may go ahead.
        let offer_still_outstanding = matches!(
            r,
            Err(NegotiationError::InvalidSdp(_))
                | Err(NegotiationError::TooLarge(_))
                | Err(NegotiationError::TooManyMedia(_))
        );
        if !offer_still_outstanding {
            self.inner.release();
        }
        if self.inner.renegotiate_wanted.load(Ordering::Acquire) {
            tokio::spawn(renegotiate(self.inner.clone()));
        }
        r
    }

    /// Restart ICE: returns an offer with fresh ICE credentials. While an earlier offer
    /// still waits for its answer, refuses at once with
    /// [`NegotiationError::OfferOutstanding`] (a client repeating restarts would otherwise
    /// queue a wait per request).
    pub async fn restart_ice(&self) -> Result<SessionDescription, NegotiationError> {
        let inner = &self.inner;
        let permit = inner
            .negotiation
            .clone()
            .try_acquire_owned()
            .map_err(|_| NegotiationError::OfferOutstanding)?;
        let (tx, rx) = oneshot::channel();
        if !inner.core.send(Command::CreateOffer {
            id: inner.core.id,
            ice_restart: true,
            reply: tx,
        }) {
            return Err(NegotiationError::Closed);
        }
        match rx.await.unwrap_or(Err(NegotiationError::Closed))? {
            Some(offer) => {
                inner.hold(permit);
                Ok(SessionDescription::offer(offer))
            }
            None => Err(NegotiationError::SessionFailed("no offer produced".into())),
        }
    }

    /// The subscribers currently on this transport.
    pub fn subscribers(&self) -> Vec<Subscriber> {
        self.inner
            .subs()
            .values()
            .map(|e| Subscriber {
                inner: e.handle.clone(),
            })
            .collect()
    }

    super::common_transport_api!("the first offer has been produced");

    /// Close the transport and all its subscribers.
    pub async fn close(&self) {
        self.inner.core.close_and_wait().await;
        self.inner.on_session_closed();
    }
}
