//! In-memory shards, client peers and synthetic media for tests, benchmarks and examples.
//! Not a stable API.
//!
//! [`MemoryShards`] runs the same shard cores as a [`Worker`](crate::worker::Worker) — real
//! str0m sessions, real DTLS and SRTP, the same rings between shards — but on the calling
//! thread and without sockets: datagrams are handed in and taken out as byte buffers.
//! [`ClientPeer`] is the sans-IO str0m client (full ICE, RTP mode) that talks to it — and,
//! through sockets, to a real [`Worker`](crate::worker::Worker) in the integration tests and
//! `examples/loadgen` — sending and checking the synthetic media of [`payload`]. [`Fanout`]
//! wires one publisher to N subscribers across the shards. `benches/forwarding.rs` and
//! `tests/alloc.rs` are built on these.

mod client;
mod fanout;
pub mod payload;
mod pieces;
mod shards;

pub use client::{
    Arrival, Channels, ClientConfig, ClientPeer, DataChannelState, ReceivedTrack, SendStats,
    DEFAULT_AUDIO_LEN, DEFAULT_VIDEO_LEN, LATENCY_BUCKETS, LAYER_COUNTER_SPAN, MAX_COUNTER,
};
pub use fanout::{Fanout, DATA_LABEL};
pub use pieces::{DemuxBench, RingPair};
pub use shards::{DataPublishing, DataTrackRef, MemoryShards, SessionRef, TrackRef};
/// The media kinds of [`ClientPeer::publish_offer`], re-exported for crates without str0m.
pub use str0m::media::MediaKind;
