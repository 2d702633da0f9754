//! Pure forwarding helpers used by the packet path: per-subscriber rewriting of RTP
//! sequence numbers and timestamps so that each down-track is one continuous stream
//! ([`rewrite`]), the throttling of keyframe requests ([`keyframe`]), the store of a
//! published stream's recent packets that answers its subscribers' NACKs ([`rtx_store`]),
//! and what a shard that has fallen behind stops forwarding ([`overload`]).
//!
//! Everything here is std-only, allocation-free and panic-free, so it can run on the
//! shard's hot path and be tested in isolation.

pub mod keyframe;
pub mod overload;
pub mod rewrite;
pub mod rtx_store;

pub use keyframe::*;
pub use overload::*;
pub use rewrite::*;
pub use rtx_store::*;
