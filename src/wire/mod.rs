//! Wire formats: parsers for untrusted bytes on the packet path.
//!
//! This layer owns the first look at everything that arrives from the network, before str0m
//! or the forwarding logic sees it, and the few bytes the shards send on their own:
//!
//! - datagram classification (RFC 7983 first-byte demultiplexing): [`classify`],
//!   [`DatagramKind`];
//! - STUN parsing for the shard's O(1) demux: the server-side ICE ufrag of a Binding
//!   Request, [`stun_local_ufrag`], [`StunError`];
//! - a minimal STUN client for server-reflexive discovery: [`stun_binding_request`],
//!   [`stun_binding_response`], [`BindingError`];
//! - RTP payload descriptor inspection per codec (keyframes, frame starts, layer ids):
//!   [`codec`] (VP8, VP9, H.264, AV1);
//! - the dependency descriptor header extension (AV1 SVC, and libwebrtc's other codecs):
//!   frame, layer ids and decode targets against the track's template structure,
//!   [`dependency_descriptor`]. The one parser here with state, which the caller keeps;
//! - one header extension element of an RTP packet as it arrived (the header is in the
//!   clear under SRTP): [`find_extension`], [`RtpExtension`], [`RtpExtError`].
//!
//! Everything here is pure and allocation-free: no I/O, no state, no `unsafe`. Every parser
//! returns an error on bad input and never panics; each has unit tests over every truncation
//! and random bytes, and a fuzz target (`fuzz/`).

mod classify;
pub mod codec;
pub mod dependency_descriptor;
mod rtp_ext;
mod stun;
mod stun_client;

pub use classify::{classify, DatagramKind};
pub use rtp_ext::{find_extension, RtpExtError, RtpExtension};
pub use stun::{stun_local_ufrag, StunError};
pub use stun_client::{stun_binding_request, stun_binding_response, BindingError};
