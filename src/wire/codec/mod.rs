//! RTP payload inspection per codec: the dispatch and what the codecs share.
//!
//! This module owns the pure, allocation-free parsing of codec-specific RTP
//! payload headers (VP8, VP9, H.264, AV1) that the SFU needs for forwarding
//! decisions: keyframe detection, frame boundaries, and temporal/spatial
//! layer identifiers. It never panics: every read is bounds-checked and bad
//! input is reported as an [`InspectError`].
//!
//! [`inspect`] dispatches on [`CodecKind`] to one file per payload format:
//! - `vp8.rs`: RFC 7741 §4.2 (payload descriptor) and §4.3 (payload header).
//! - `vp9.rs`: RFC 9628 §4.2 (payload descriptor) and §4.2.1 (scalability structure).
//! - `h264.rs`: RFC 6184 §5.6 (single NAL unit), §5.7.1 (STAP-A), §5.8 (FU-A).
//! - `av1.rs`: "RTP Payload Format For AV1" (AOMedia), §4.4 (aggregation header).
//!
//! Opus and other codecs are opaque: nothing is parsed.

mod av1;
mod h264;
mod vp8;
mod vp9;

/// Video/audio codec family of a payload, as far as inspection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// Opus audio (RFC 7587); payloads are opaque to inspection.
    Opus,
    /// VP8 video (RFC 7741).
    Vp8,
    /// VP9 video (RFC 9628).
    Vp9,
    /// H.264 video (RFC 6184), packetization-mode 0 or 1.
    H264,
    /// AV1 video (AOMedia RTP payload format).
    Av1,
    /// Any other codec; payloads are opaque to inspection.
    Other,
}

impl CodecKind {
    /// Maps a codec name to a [`CodecKind`], case-insensitively.
    ///
    /// Accepts bare names (`"opus"`, `"VP8"`, `"vp9"`, `"H264"`, `"AV1"`) as
    /// well as MIME forms (`"video/VP8"`, `"audio/opus"`); anything else maps
    /// to [`CodecKind::Other`].
    #[must_use]
    pub fn from_mime(name: &str) -> CodecKind {
        let name = name.trim();
        // Strip an optional "type/" prefix; `rsplit` always yields at least one item.
        let subtype = name.rsplit('/').next().unwrap_or(name);
        if subtype.eq_ignore_ascii_case("opus") {
            CodecKind::Opus
        } else if subtype.eq_ignore_ascii_case("vp8") {
            CodecKind::Vp8
        } else if subtype.eq_ignore_ascii_case("vp9") {
            CodecKind::Vp9
        } else if subtype.eq_ignore_ascii_case("h264") {
            CodecKind::H264
        } else if subtype.eq_ignore_ascii_case("av1") {
            CodecKind::Av1
        } else {
            CodecKind::Other
        }
    }

    /// Whether this is an audio codec (keyframes never apply).
    fn is_audio(self) -> bool {
        matches!(self, CodecKind::Opus)
    }
}

/// What inspection learned about one RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PayloadInfo {
    /// This packet starts (or is part of the first packet of) a keyframe / IDR.
    pub keyframe: bool,
    /// This packet is the first packet of a frame.
    pub start_of_frame: bool,
    /// Temporal layer id (VP8 TID when the T bit is set, VP9 TID when the L bit is set).
    pub temporal_id: Option<u8>,
    /// Spatial layer id (VP9 SID when the L bit is set).
    pub spatial_id: Option<u8>,
    /// VP8/VP9 picture id (7- or 15-bit) when present.
    pub picture_id: Option<u16>,
    /// A temporal switching point: a receiver may start decoding this packet's temporal
    /// layer from this frame on (VP8 `Y`, VP9 `U`).
    pub switch_point: bool,
    /// Picture width and height a keyframe announces (VP8 keyframes), when present.
    pub size: Option<(u16, u16)>,
    /// This packet ends its (layer) frame (VP9 `E`); `false` where the descriptor cannot
    /// say (the RTP marker bit tells the end of a picture).
    pub end_of_frame: bool,
}

/// Errors from payload inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectError {
    /// The payload has no bytes at all.
    Empty,
    /// The payload ends before a header it announces.
    Truncated,
    /// The payload violates its payload format specification.
    Malformed,
}

/// Inspects one RTP payload of the given codec.
///
/// Returns `Err(InspectError::Empty)` for an empty payload of any codec.
/// Opus and [`CodecKind::Other`] payloads are opaque and yield
/// `PayloadInfo::default()`.
///
/// # Errors
///
/// [`InspectError::Empty`] for an empty payload, [`InspectError::Truncated`]
/// when a header announced by the payload runs past its end, and
/// [`InspectError::Malformed`] when the payload violates its RFC.
pub fn inspect(kind: CodecKind, payload: &[u8]) -> Result<PayloadInfo, InspectError> {
    if payload.is_empty() {
        return Err(InspectError::Empty);
    }
    match kind {
        CodecKind::Vp8 => vp8::inspect_vp8(payload),
        CodecKind::Vp9 => vp9::inspect_vp9(payload),
        CodecKind::H264 => h264::inspect_h264(payload),
        CodecKind::Av1 => av1::inspect_av1(payload),
        CodecKind::Opus | CodecKind::Other => Ok(PayloadInfo::default()),
    }
}

/// Convenience: whether the payload starts (or belongs to the first packet
/// of) a keyframe. Any inspection error yields `false`; audio is always `false`.
#[must_use]
pub fn is_keyframe(kind: CodecKind, payload: &[u8]) -> bool {
    if kind.is_audio() {
        return false;
    }
    inspect(kind, payload).is_ok_and(|i| i.keyframe)
}

/// Bounds-checked forward reader over a byte slice, shared by the per-codec parsers.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn u8(&mut self) -> Result<u8, InspectError> {
        let (&b, rest) = self.buf.split_first().ok_or(InspectError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, InspectError> {
        let hi = self.u8()?;
        let lo = self.u8()?;
        Ok(u16::from_be_bytes([hi, lo]))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], InspectError> {
        let (head, rest) = self
            .buf
            .split_at_checked(n)
            .ok_or(InspectError::Truncated)?;
        self.buf = rest;
        Ok(head)
    }

    fn skip(&mut self, n: usize) -> Result<(), InspectError> {
        self.take(n).map(|_| ())
    }

    fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Reads a VP8/VP9 picture id: M bit set means 15 bits, else 7 bits
    /// (RFC 7741 §4.2, RFC 9628 §4.2).
    fn picture_id(&mut self) -> Result<u16, InspectError> {
        let b = self.u8()?;
        if b & 0x80 != 0 {
            let lo = self.u8()?;
            Ok(u16::from_be_bytes([b & 0x7f, lo]))
        } else {
            Ok(u16::from(b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [CodecKind; 6] = [
        CodecKind::Opus,
        CodecKind::Vp8,
        CodecKind::Vp9,
        CodecKind::H264,
        CodecKind::Av1,
        CodecKind::Other,
    ];

    /// Every prefix of a sample must inspect without panicking, and the
    /// empty prefix must be `Empty`.
    pub(super) fn all_prefixes(kind: CodecKind, sample: &[u8]) {
        for n in 0..=sample.len() {
            let res = inspect(kind, &sample[..n]);
            if n == 0 {
                assert_eq!(res, Err(InspectError::Empty));
            }
            let _ = is_keyframe(kind, &sample[..n]);
        }
    }

    // ---- opaque codecs, helpers ----

    /// An H.264 IDR slice (the same bytes as `H264_IDR` in `h264.rs`).
    const H264_IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff];

    #[test]
    fn opaque_codecs() {
        for kind in [CodecKind::Opus, CodecKind::Other] {
            assert_eq!(inspect(kind, &[0xfc, 0xff]), Ok(PayloadInfo::default()));
            assert_eq!(inspect(kind, &[]), Err(InspectError::Empty));
            assert!(!is_keyframe(kind, &[0x00]));
        }
        // Audio never reports a keyframe, whatever the bytes.
        assert!(!is_keyframe(CodecKind::Opus, H264_IDR));
        for kind in ALL {
            assert_eq!(inspect(kind, &[]), Err(InspectError::Empty));
            assert!(!is_keyframe(kind, &[]));
        }
    }

    #[test]
    fn from_mime() {
        assert_eq!(CodecKind::from_mime("opus"), CodecKind::Opus);
        assert_eq!(CodecKind::from_mime("audio/OPUS"), CodecKind::Opus);
        assert_eq!(CodecKind::from_mime("vp8"), CodecKind::Vp8);
        assert_eq!(CodecKind::from_mime("video/VP8"), CodecKind::Vp8);
        assert_eq!(CodecKind::from_mime("VP9"), CodecKind::Vp9);
        assert_eq!(CodecKind::from_mime("video/vp9"), CodecKind::Vp9);
        assert_eq!(CodecKind::from_mime("H264"), CodecKind::H264);
        assert_eq!(CodecKind::from_mime("video/h264"), CodecKind::H264);
        assert_eq!(CodecKind::from_mime("AV1"), CodecKind::Av1);
        assert_eq!(CodecKind::from_mime("video/av1"), CodecKind::Av1);
        assert_eq!(CodecKind::from_mime("video/H265"), CodecKind::Other);
        assert_eq!(CodecKind::from_mime("PCMU"), CodecKind::Other);
        assert_eq!(CodecKind::from_mime(""), CodecKind::Other);
        assert_eq!(CodecKind::from_mime("/"), CodecKind::Other);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = [0u8; 64];
        for _ in 0..100_000 {
            let len = (next() % 65) as usize;
            for chunk in buf.chunks_mut(8) {
                let v = next().to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
            let data = &buf[..len];
            for kind in ALL {
                let key = inspect(kind, data).map(|i| i.keyframe).unwrap_or(false);
                if kind.is_audio() {
                    assert!(!is_keyframe(kind, data));
                } else {
                    assert_eq!(key, is_keyframe(kind, data));
                }
            }
        }
    }
}
