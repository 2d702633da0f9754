//! Shard-to-shard messaging: one bounded single-producer single-consumer ring (`rtrb`) per
//! ordered pair of shards. Media packets go from the publisher's shard to each shard that
//! has subscribers of the track (one entry per destination shard, never per subscriber);
//! keyframe requests go the other way. A full ring drops the message and the sender
//! counts it: a slow shard must never stall a fast one (NACK/RTX repairs media loss).

use std::sync::Arc;
use std::time::Instant;

use str0m::rtp::ExtensionValues;

use super::{ShardId, TrackKey};

/// One RTP packet of a published track, as it crosses shards. Cloning it only bumps the
/// payload's reference count: no allocation.
#[derive(Clone)]
pub(crate) struct MediaPacket {
    pub(crate) track: TrackKey,
    /// Identifies the publisher's RTP stream (its SSRC); a change means a new source.
    pub(crate) source: u64,
    /// Extended (rollover-free) sequence number from the publisher.
    pub(crate) seq: u64,
    pub(crate) ts: u32,
    /// The publisher's payload type.
    pub(crate) pt: u8,
    pub(crate) marker: bool,
    /// First packet of a keyframe, per payload inspection at ingress.
    pub(crate) keyframe: bool,
    /// Its layer, for down-tracks that choose one.
    pub(crate) layer: PacketLayer,
    pub(crate) arrival: Instant,
    /// Header extension values worth forwarding (ids are the subscriber session's own).
    pub(crate) ext: ExtensionValues,
    pub(crate) payload: Arc<[u8]>,
}

/// Where a packet sits among its track's layers, as ingress saw it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PacketLayer {
    /// Rank of its simulcast encoding (0 = lowest), or its SVC spatial layer id; 0
    /// otherwise.
    pub(crate) spatial: u8,
    /// Its temporal layer id (0 when the codec says none).
    pub(crate) temporal: u8,
    /// Bit per layer: the track's simulcast encodings (by rank) or SVC spatial layers
    /// flowing when it arrived; 0 for a track without either (no layer choice).
    pub(crate) active: u8,
    /// SVC: `spatial` is the packet's spatial layer id in the one stream.
    pub(crate) svc: bool,
    /// First packet of a frame.
    pub(crate) frame_start: bool,
    /// Last packet of its (layer) frame (SVC: VP9 `E`; otherwise the marker bit).
    pub(crate) frame_end: bool,
    /// A temporal switching point.
    pub(crate) switch_point: bool,
    /// Dependency descriptor: bit per temporal layer this frame is a switching point for
    /// (0: `switch_point` says it).
    pub(crate) switch_to: u8,
    /// What to add to `ts` to put it on the clock all the track's encodings share (from
    /// their sender reports), once known; `ts` stays the encoding's own.
    pub(crate) clock_offset: Option<u32>,
}

/// A message on a shard-to-shard ring. Media travels by value in the ring slot on
/// purpose: boxing it would cost an allocation per packet per destination shard.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ShardMsg {
    Media(MediaPacket),
    /// A keyframe of the track's encoding of this rank.
    KeyframeRequest(TrackKey, u8),
    /// A data-channel message for this shard's subscribers of its data track.
    Data(super::data::DataPacket),
}

/// Producers indexed by destination shard (`None` at our own index).
pub(crate) type Producers = Vec<Option<rtrb::Producer<ShardMsg>>>;
/// Consumers indexed by source shard (`None` at our own index).
pub(crate) type Consumers = Vec<Option<rtrb::Consumer<ShardMsg>>>;

/// All rings of a worker before they are handed to their shards.
pub(crate) struct Mesh {
    /// `producers[from][to]`
    producers: Vec<Producers>,
    /// `consumers[to][from]`
    consumers: Vec<Consumers>,
}

impl Mesh {
    pub(crate) fn new(n: usize, capacity: usize) -> Mesh {
        let mut producers: Vec<Producers> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut consumers: Vec<Consumers> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for from in 0..n {
            for to in 0..n {
                if from != to {
                    let (p, c) = rtrb::RingBuffer::new(capacity);
                    producers[from][to] = Some(p);
                    consumers[to][from] = Some(c);
                }
            }
        }
        Mesh {
            producers,
            consumers,
        }
    }

    /// The rings shard `id` writes to and reads from.
    pub(crate) fn take(&mut self, id: ShardId) -> (Producers, Consumers) {
        (
            std::mem::take(&mut self.producers[id]),
            std::mem::take(&mut self.consumers[id]),
        )
    }
}
