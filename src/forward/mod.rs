//! Pure forwarding helpers used by the packet path: per-subscriber rewriting of RTP
//! sequence numbers and timestamps so that each down-track is one continuous stream
//! ([`rewrite`]), the throttling of keyframe requests ([`keyframe`]), the store of a
//! published stream's recent packets that answers its subscribers' NACKs ([`rtx_store`]),
//! what a shard that has fallen behind stops forwarding ([`overload`]), how a simulcast
//! track's encodings rank and which of them flow ([`ranking`]), and which layer of a
//! simulcast or SVC track a subscriber gets ([`layer`]), and how a subscribe transport's
//! bandwidth estimate is shared among its tracks ([`allocator`]) and capped by the loss its
//! feedback reports ([`loss_cap`]).
//!
//! Everything here is std-only, allocation-free and panic-free, so it can run on the
//! shard's hot path and be tested in isolation.

pub mod allocator;
pub mod keyframe;
pub mod layer;
pub mod loss_cap;
pub mod overload;
pub mod ranking;
pub mod rewrite;
pub mod rtx_store;

pub use allocator::*;
pub use keyframe::*;
pub use layer::*;
pub use loss_cap::*;
pub use overload::*;
pub use ranking::*;
pub use rewrite::*;
pub use rtx_store::*;
