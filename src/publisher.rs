//! Publishers: tracks a browser publishes through a [`PublishTransport`](crate::transport::PublishTransport).
//!
//! A [`Publisher`] is a handle; the router keeps the published track until the publisher
//! is closed, its m-line goes inactive, or its transport closes. Closing tells every
//! subscriber (their transports renegotiate the m-line away).

use std::sync::{Arc, Weak};

use tokio::sync::watch;

use crate::error::PublishError;
use crate::router::RouterInner;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An audio track.
    Audio,
    /// A video track.
    Video,
}

impl From<str0m::media::MediaKind> for MediaKind {
    fn from(k: str0m::media::MediaKind) -> Self {
        match k {
            str0m::media::MediaKind::Audio => MediaKind::Audio,
            _ => MediaKind::Video,
        }
    }
}

/// A published media track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub(crate) id: String,
    pub(crate) stream_id: String,
    pub(crate) kind: MediaKind,
    pub(crate) codec: String,
}

impl Track {
    /// The track id: the `a=msid` track id the browser gave it. Subscribe with this id.
    pub fn id(&self) -> String {
        self.id.clone()
    }
    /// The media stream id (`a=msid` stream id).
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }
    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.kind
    }
    /// The preferred negotiated codec, e.g. `"VP8"` or `"opus"`.
    pub fn codec(&self) -> &str {
        &self.codec
    }
}

pub(crate) struct PublisherInner {
    pub(crate) track: Track,
    pub(crate) router: Weak<RouterInner>,
    pub(crate) error: Option<PublishError>,
    pub(crate) closed: watch::Sender<bool>,
}

impl PublisherInner {
    pub(crate) fn mark_closed(&self) {
        self.closed.send_replace(true);
    }
}

/// A track published in a router. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    pub(crate) inner: Arc<PublisherInner>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("track", &self.inner.track)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Publisher {
    pub(crate) fn failed(id: String, error: PublishError) -> Publisher {
        Publisher {
            inner: Arc::new(PublisherInner {
                track: Track {
                    id,
                    stream_id: String::new(),
                    kind: MediaKind::Video,
                    codec: String::new(),
                },
                router: Weak::new(),
                error: Some(error),
                closed: watch::channel(true).0,
            }),
        }
    }

    /// The publisher id (same as `track().id()`).
    pub fn id(&self) -> String {
        self.inner.track.id.clone()
    }

    /// The published track.
    pub fn track(&self) -> &Track {
        &self.inner.track
    }

    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.inner.track.kind
    }

    /// If publishing failed (see [`PublishTransport::publish`](crate::transport::PublishTransport::publish)),
    /// why. `None` for a publisher that was published.
    pub fn error(&self) -> Option<&PublishError> {
        self.inner.error.as_ref()
    }

    /// True once the publisher is closed (or never got published).
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Wait until the publisher is closed.
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Relay this track to router `router_id` of the worker whose relay port is `addr`
    /// (its [`Worker::relay_addr`](crate::worker::Worker::relay_addr)): it is published
    /// there under the same id, and subscribed like a local track. Returns once it is
    /// published on the other worker. The relay ends when this publisher closes (the other
    /// worker unpublishes it) or the link between the workers dies. Both workers need a
    /// [`RelayConfig`](crate::config::RelayConfig) with the same secret.
    pub async fn relay_to(
        &self,
        addr: std::net::SocketAddr,
        router_id: &str,
    ) -> Result<(), crate::error::RelayError> {
        let id = self.id();
        crate::relay::relay_from(
            &self.inner.router,
            self.is_closed(),
            crate::relay::Relayed::Media(&id),
            addr,
            router_id,
        )
        .await
    }

    /// Stop relaying this track to router `router_id` of the worker at `addr` (started
    /// by [`relay_to`](Self::relay_to)): the other worker unpublishes it, its subscribers
    /// there are told, and the relay session between the routers closes if it carries
    /// nothing else. Returns whether such a relay was running.
    pub async fn stop_relay(&self, addr: std::net::SocketAddr, router_id: &str) -> bool {
        let id = self.id();
        crate::relay::unrelay_from(
            &self.inner.router,
            crate::relay::Relayed::Media(&id),
            addr,
            router_id,
        )
        .await
    }

    /// Unpublish: every subscriber is told and its transport renegotiates.
    pub async fn close(&self) {
        if let Some(r) = self.inner.router.upgrade() {
            r.unpublish(&self.inner.track.id);
        }
        self.inner.mark_closed();
    }
}
