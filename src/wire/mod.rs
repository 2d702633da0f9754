//! Wire helpers: parsers for untrusted input on the packet path. Codec payload inspection
//! (keyframes, layers) and datagram demultiplexing (RFC 7983 classification, STUN ufrag
//! extraction, STUN binding for server-reflexive discovery). Every parser returns an error
//! on bad input and never panics; each has unit tests over every truncation.

pub mod codec;
pub mod demux;
