//! RTP-level helpers: codec-specific payload inspection and related parsing.

pub mod codec;
