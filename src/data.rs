//! Data channels: [`DataPublisher`] (a browser's channel, published on its publish
//! transport by label) and [`DataSubscriber`] (a channel the server opened on a subscribe
//! transport, carrying one data publisher's messages), as the original Rheomesh has them.
//!
//! The publisher's messages go to every subscriber in order, as the publisher's channel
//! has them (its ordering and reliability are the subscribers' channels' too). A subscriber
//! more than its SCTP buffer and 1 MiB behind loses messages on an unreliable channel, and
//! has a reliable one closed: it never slows the publisher or the others
//! (`ShardStats::data_dropped`, `data_channels_closed_slow`). Messages up to 64 KiB are forwarded; larger ones are
//! dropped and counted (the publisher's channel stays open).

use std::sync::{Arc, Weak};

use tokio::sync::watch;

use crate::engine::data::DataInfo;
use crate::engine::DownTrackId;
use crate::router::RouterInner;
use crate::transport::SubscribeInner;

pub(crate) struct DataPublisherInner {
    pub(crate) info: DataInfo,
    pub(crate) router: Weak<RouterInner>,
    pub(crate) closed: watch::Sender<bool>,
}

impl DataPublisherInner {
    pub(crate) fn mark_closed(&self) {
        self.closed.send_replace(true);
    }
}

/// A published data channel. Cheap to clone.
#[derive(Clone)]
pub struct DataPublisher {
    pub(crate) inner: Arc<DataPublisherInner>,
}

impl std::fmt::Debug for DataPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPublisher")
            .field("id", &self.inner.info.label)
            .finish()
    }
}

impl DataPublisher {
    /// The data publisher id: the channel's label.
    pub fn id(&self) -> String {
        self.inner.info.label.clone()
    }

    /// Whether its messages keep their order.
    pub fn ordered(&self) -> bool {
        self.inner.info.ordered
    }

    /// Whether every message is delivered (no retransmission limit).
    pub fn reliable(&self) -> bool {
        self.inner.info.reliable()
    }

    /// Whether it is no longer published.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Wait until it is no longer published (closed, its channel or transport closed).
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Relay this data channel to router `router_id` of the worker whose relay port is
    /// `addr`, as [`Publisher::relay_to`](crate::publisher::Publisher::relay_to) does for
    /// media: published there under the same id, with the same ordering and reliability.
    pub async fn relay_to(
        &self,
        addr: std::net::SocketAddr,
        router_id: &str,
    ) -> Result<(), crate::error::RelayError> {
        let id = self.id();
        crate::relay::relay_from(
            &self.inner.router,
            self.is_closed(),
            crate::relay::Relayed::Data(&id),
            addr,
            router_id,
        )
        .await
    }

    /// Stop relaying this channel to router `router_id` of the worker at `addr`, as
    /// [`Publisher::stop_relay`](crate::publisher::Publisher::stop_relay) does for media.
    pub async fn stop_relay(&self, addr: std::net::SocketAddr, router_id: &str) -> bool {
        let id = self.id();
        crate::relay::unrelay_from(
            &self.inner.router,
            crate::relay::Relayed::Data(&id),
            addr,
            router_id,
        )
        .await
    }

    /// Stop publishing it: its subscribers' channels close.
    pub fn close(&self) {
        if let Some(r) = self.inner.router.upgrade() {
            r.unpublish_data(&self.inner.info.label);
        }
        self.inner.mark_closed();
    }
}

pub(crate) struct DataSubscriberInner {
    pub(crate) id: DownTrackId,
    pub(crate) publisher_id: String,
    pub(crate) transport: Weak<SubscribeInner>,
    pub(crate) closed: watch::Sender<bool>,
}

impl DataSubscriberInner {
    pub(crate) fn mark_closed(&self) {
        self.closed.send_replace(true);
    }
}

/// A subscriber's data channel of one data publisher. Cheap to clone.
#[derive(Clone)]
pub struct DataSubscriber {
    pub(crate) inner: Arc<DataSubscriberInner>,
}

impl std::fmt::Debug for DataSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataSubscriber")
            .field("id", &self.inner.id.0)
            .field("publisher_id", &self.inner.publisher_id)
            .finish()
    }
}

impl DataSubscriber {
    /// The data subscriber id, unique in the process.
    pub fn id(&self) -> String {
        self.inner.id.0.to_string()
    }

    /// The data publisher it receives (also its channel's label).
    pub fn publisher_id(&self) -> &str {
        &self.inner.publisher_id
    }

    /// Whether its channel is closed (by [`close`](Self::close), the publisher leaving,
    /// the subscriber closing it, or not keeping up with a reliable channel).
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Wait until its channel is closed.
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Close its channel.
    pub fn close(&self) {
        if let Some(t) = self.inner.transport.upgrade() {
            crate::router::RouteOwner::remove_subscription(&*t, self.inner.id, false);
        }
        self.inner.mark_closed();
    }
}
