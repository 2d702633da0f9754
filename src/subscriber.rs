//! Subscribers: published tracks forwarded to a browser through a
//! [`SubscribeTransport`](crate::transport::SubscribeTransport).
//!
//! A [`Subscriber`] is a handle to one down-track. It reports closed when its publisher
//! leaves, when it is closed, or when its transport closes.

use std::sync::{Arc, Weak};

use tokio::sync::watch;

use crate::engine::DownTrackId;
use crate::error::SubscribeError;
pub use crate::forward::Layer;
use crate::publisher::MediaKind;
use crate::transport::SubscribeInner;

pub(crate) struct SubscriberInner {
    pub(crate) id: DownTrackId,
    pub(crate) publisher_id: String,
    pub(crate) kind: MediaKind,
    pub(crate) transport: Weak<SubscribeInner>,
    pub(crate) closed: watch::Sender<bool>,
    pub(crate) layers: watch::Sender<LayerState>,
}

/// The layers of a simulcast track as one subscriber sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerState {
    /// The layer being forwarded: `spatial` is the encoding's rank (0 = lowest
    /// resolution, whatever its rid), `temporal` the highest temporal layer forwarded
    /// (`u8::MAX`: all of them). `None` before the first keyframe, for a track without
    /// simulcast, and while video is paused.
    pub current: Option<Layer>,
    /// How many encodings the publisher sends now (0 for a track without simulcast).
    pub available: u8,
    /// The ceiling set by [`Subscriber::set_preferred_layer`] (`u8::MAX`: none).
    pub preferred: Layer,
}

impl Default for LayerState {
    fn default() -> Self {
        LayerState {
            current: None,
            available: 0,
            preferred: Layer::new(u8::MAX, u8::MAX),
        }
    }
}

impl SubscriberInner {
    pub(crate) fn mark_closed(&self) {
        self.closed.send_replace(true);
        // Wake `layer_changed` waiters: they return `None` once closed.
        self.layers.send_modify(|_| {});
    }
}

/// One published track forwarded on a subscribe transport. Cheap to clone.
#[derive(Clone)]
pub struct Subscriber {
    pub(crate) inner: Arc<SubscriberInner>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("id", &self.id())
            .field("publisher_id", &self.inner.publisher_id)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Subscriber {
    /// The subscriber id, unique in the process.
    pub fn id(&self) -> String {
        self.inner.id.0.to_string()
    }

    /// The id of the publisher this subscriber receives.
    pub fn publisher_id(&self) -> &str {
        &self.inner.publisher_id
    }

    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.inner.kind
    }

    /// True once closed: by [`close`](Self::close), because the publisher left, or
    /// because the transport closed.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Wait until the subscriber is closed.
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Receive at most spatial layer `spatial` and temporal layer `temporal` (`None`: all)
    /// of a simulcast track. A ceiling: the best layer at or below it that the publisher
    /// sends is forwarded (the lowest one if none is at or below), and it follows the
    /// publisher's encodings as they start and stop. Spatial switches wait for a keyframe
    /// of the new layer, which is requested at once; the subscriber's stream stays one
    /// continuous RTP stream across them. Has no effect on a track without simulcast.
    pub async fn set_preferred_layer(
        &self,
        spatial: u8,
        temporal: Option<u8>,
    ) -> Result<(), SubscribeError> {
        let t = self
            .inner
            .transport
            .upgrade()
            .ok_or(SubscribeError::Closed)?;
        if self.is_closed() {
            return Err(SubscribeError::Closed);
        }
        let layer = Layer::new(spatial, temporal.unwrap_or(u8::MAX));
        if !t.set_preferred_layer(self.inner.id, layer) {
            return Err(SubscribeError::Closed);
        }
        self.inner.layers.send_modify(|l| l.preferred = layer);
        Ok(())
    }

    /// The layers as last reported by the forwarding shard.
    pub fn layers(&self) -> LayerState {
        *self.inner.layers.borrow()
    }

    /// Wait until the forwarded layer, the number of encodings or the preference changes;
    /// returns the new state (`None` once the subscriber is closed). To follow every change
    /// without missing one between two calls, keep a [`LayerWatch`] ([`Self::layer_watch`]).
    pub async fn layer_changed(&self) -> Option<LayerState> {
        self.layer_watch().changed().await
    }

    /// A watch on this subscriber's [`LayerState`]: each [`LayerWatch::changed`] returns
    /// the state after the changes since the previous one.
    pub fn layer_watch(&self) -> LayerWatch {
        LayerWatch {
            rx: self.inner.layers.subscribe(),
            closed: self.inner.closed.subscribe(),
        }
    }

    /// Stop forwarding; the transport renegotiates the m-line away
    /// (`on_negotiation_needed` fires with the new offer).
    pub async fn close(&self) {
        if let Some(t) = self.inner.transport.upgrade() {
            t.remove_subscription(self.inner.id, true);
        }
        self.inner.mark_closed();
    }
}

/// Follows one subscriber's [`LayerState`] ([`Subscriber::layer_watch`]).
#[derive(Debug)]
pub struct LayerWatch {
    rx: watch::Receiver<LayerState>,
    closed: watch::Receiver<bool>,
}

impl LayerWatch {
    /// Wait for a change not seen yet by this watch and return the state after it (`None`
    /// once the subscriber is closed; closing wakes the wait).
    pub async fn changed(&mut self) -> Option<LayerState> {
        if *self.closed.borrow() {
            return None;
        }
        self.rx.changed().await.ok()?;
        if *self.closed.borrow() {
            return None;
        }
        let state = *self.rx.borrow_and_update();
        Some(state)
    }
}
