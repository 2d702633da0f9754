//! Subscribers: published tracks forwarded to a browser through a
//! [`SubscribeTransport`](crate::transport::SubscribeTransport).
//!
//! A [`Subscriber`] is a handle to one down-track. It reports closed when its publisher
//! leaves, when it is closed, or when its transport closes.

use std::sync::{Arc, Weak};

use tokio::sync::watch;

use crate::engine::DownTrackId;
use crate::publisher::MediaKind;
use crate::transport::SubscribeInner;

pub(crate) struct SubscriberInner {
    pub(crate) id: DownTrackId,
    pub(crate) publisher_id: String,
    pub(crate) kind: MediaKind,
    pub(crate) transport: Weak<SubscribeInner>,
    pub(crate) closed: watch::Sender<bool>,
}

impl SubscriberInner {
    pub(crate) fn mark_closed(&self) {
        self.closed.send_replace(true);
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

    /// Stop forwarding; the transport renegotiates the m-line away
    /// (`on_negotiation_needed` fires with the new offer).
    pub async fn close(&self) {
        if let Some(t) = self.inner.transport.upgrade() {
            t.remove_subscription(self.inner.id, true);
        }
        self.inner.mark_closed();
    }
}
