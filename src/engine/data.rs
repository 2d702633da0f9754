//! Data channels on the shards: what a published channel is, what a subscriber's copy of it
//! is, and where a message goes.
//!
//! A publisher's channel (opened by its browser, announced by DCEP) becomes a data track
//! once the API publishes it by label: its messages are taken from the publish session as
//! they arrive (one shared buffer per message, never copied again), pushed once into the ring of
//! each other shard with subscribers and written into each local subscriber's channel, a
//! channel the server opened on the subscriber's connection with the publisher's label,
//! ordering and reliability. A message that does not fit in the subscriber's SCTP send
//! buffer (128 KiB per connection) waits in a queue of its channel, bounded at
//! [`MAX_QUEUED_BYTES`], and goes on when SCTP reports room ([`BUFFERED_LOW`]); one that
//! does not fit there either is dropped on an unreliable channel and closes a reliable one
//! (counted both), so a subscriber that stops reading never slows the publisher or the
//! others and never holds more than that buffer and queue.

use std::sync::Arc;

use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use tokio::sync::oneshot;

use super::{DownTrackId, ShardId, TrackKey};
use crate::error::PublishError;

/// The largest message forwarded (what every WebRTC peer accepts without negotiation).
pub(crate) const MAX_DATA_MESSAGE: usize = 64 * 1024;

/// Bytes a subscriber's channel may have waiting beyond its SCTP send buffer (str0m's
/// 128 KiB per connection): a burst the subscriber's link drains a moment later. A
/// subscriber further behind than that does not keep up.
pub(crate) const MAX_QUEUED_BYTES: usize = 1024 * 1024;

/// Data channels a publish session keeps track of (open ones and labels waiting to open):
/// a peer opening more has them closed, a publish request beyond it is refused.
pub(crate) const MAX_PUBLISHER_CHANNELS: usize = 64;

/// When the SCTP send buffer has drained to this, waiting messages go on.
pub(crate) const BUFFERED_LOW: usize = 32 * 1024;

/// What happened to a data channel of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelChange {
    Open,
    Closed,
    /// Its SCTP send buffer drained below [`BUFFERED_LOW`].
    Low,
    /// A publisher opened it beyond [`MAX_PUBLISHER_CHANNELS`]: it was closed at once.
    Refused,
}

/// One data-channel message on its way to subscribers.
#[derive(Clone)]
pub(crate) struct DataPacket {
    pub(crate) key: TrackKey,
    pub(crate) binary: bool,
    /// Shared by every subscriber and ring entry (copied once, from str0m's message).
    pub(crate) payload: Arc<[u8]>,
}

/// What subscribers need to know of a published channel.
#[derive(Debug, Clone)]
pub(crate) struct DataInfo {
    pub(crate) key: TrackKey,
    pub(crate) label: String,
    pub(crate) ordered: bool,
    pub(crate) reliability: Reliability,
}

impl DataInfo {
    /// A subscriber's channel of this publisher's: same label, ordering and reliability.
    pub(crate) fn channel_config(&self) -> ChannelConfig {
        ChannelConfig {
            label: self.label.clone(),
            ordered: self.ordered,
            reliability: self.reliability,
            negotiated: None,
            protocol: String::new(),
        }
    }

    /// Whether a message may be lost (partial reliability).
    pub(crate) fn reliable(&self) -> bool {
        self.reliability == Reliability::Reliable
    }
}

/// A channel of a publish session, published or not.
pub(crate) struct DataUp {
    pub(crate) label: String,
    /// Set once published.
    pub(crate) key: Option<TrackKey>,
    /// Set once the channel is open.
    pub(crate) channel: Option<(ChannelId, ChannelConfig)>,
    /// A publish request waiting for the channel to open.
    pub(crate) waiting: Option<oneshot::Sender<Result<DataInfo, PublishError>>>,
}

impl DataUp {
    /// The published track's description, once it is both published and open.
    pub(crate) fn info(&self) -> Option<DataInfo> {
        let key = self.key?;
        let (_, cfg) = self.channel.as_ref()?;
        Some(DataInfo {
            key,
            label: self.label.clone(),
            ordered: cfg.ordered,
            reliability: cfg.reliability,
        })
    }
}

/// A subscriber's copy of a published channel.
pub(crate) struct DataDown {
    pub(crate) id: DownTrackId,
    /// Slot of the subscribe session.
    pub(crate) session: usize,
    pub(crate) info: DataInfo,
    pub(crate) channel: ChannelId,
    /// Open (the subscriber's DCEP ack came), closed for good.
    pub(crate) open: bool,
    pub(crate) closed: bool,
    /// Messages waiting for room in the SCTP send buffer (at most [`MAX_QUEUED_BYTES`]).
    pub(crate) queue: std::collections::VecDeque<(bool, Arc<[u8]>)>,
    pub(crate) queued_bytes: usize,
}

/// Where each data track's messages go on this shard.
#[derive(Default)]
pub(crate) struct DataRoutes {
    pub(crate) map: std::collections::HashMap<TrackKey, DataRoute>,
}

#[derive(Default)]
pub(crate) struct DataRoute {
    /// Data-down slots on this shard.
    pub(crate) local: Vec<usize>,
    /// Other shards with subscribers, with their counts (publisher's shard only).
    pub(crate) remote: Vec<(ShardId, u32)>,
}

impl DataRoutes {
    pub(crate) fn add_local(&mut self, key: TrackKey, slot: usize) {
        let r = self.map.entry(key).or_default();
        if !r.local.contains(&slot) {
            r.local.push(slot);
        }
    }

    pub(crate) fn remove_local(&mut self, key: TrackKey, slot: usize) {
        if let Some(r) = self.map.get_mut(&key) {
            r.local.retain(|s| *s != slot);
            if r.local.is_empty() && r.remote.is_empty() {
                self.map.remove(&key);
            }
        }
    }

    pub(crate) fn add_remote(&mut self, key: TrackKey, dest: ShardId) {
        let r = self.map.entry(key).or_default();
        match r.remote.iter_mut().find(|(s, _)| *s == dest) {
            Some((_, n)) => *n += 1,
            None => r.remote.push((dest, 1)),
        }
    }

    pub(crate) fn remove_remote(&mut self, key: TrackKey, dest: ShardId) {
        if let Some(r) = self.map.get_mut(&key) {
            if let Some(pos) = r.remote.iter().position(|(s, _)| *s == dest) {
                r.remote[pos].1 -= 1;
                if r.remote[pos].1 == 0 {
                    r.remote.swap_remove(pos);
                }
            }
            if r.local.is_empty() && r.remote.is_empty() {
                self.map.remove(&key);
            }
        }
    }
}
