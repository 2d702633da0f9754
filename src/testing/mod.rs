//! In-memory shards and peers, for benchmarks and allocation tests. Not a stable API.
//!
//! [`MemoryShards`] runs the same shard cores as a [`Worker`](crate::worker::Worker) — real
//! str0m sessions, real DTLS and SRTP, the same rings between shards — but on the calling
//! thread and without sockets: datagrams are handed in and taken out as byte buffers.
//! [`ClientPeer`] is a str0m client (full ICE, RTP mode) that talks to it, and [`Fanout`]
//! wires one publisher to N subscribers across the shards. `benches/forwarding.rs` and
//! `tests/alloc.rs` are built on these.

mod fanout;
mod peer;
mod pieces;
mod shards;

pub use fanout::Fanout;
pub use peer::{vp8_payload, ClientPeer};
pub use pieces::{DemuxBench, RingPair};
pub use shards::{MemoryShards, SessionRef, TrackRef};
