//! RTP payload inspection per codec.
//!
//! This module owns the pure, allocation-free parsing of codec-specific RTP
//! payload headers (VP8, VP9, H.264, AV1) that the SFU needs for forwarding
//! decisions: keyframe detection, frame boundaries, and temporal/spatial
//! layer identifiers. It never panics: every read is bounds-checked and bad
//! input is reported as an [`InspectError`].
//!
//! References:
//! - VP8: RFC 7741 §4.2 (payload descriptor) and §4.3 (payload header).
//! - VP9: RFC 9628 §4.2 (payload descriptor) and §4.2.1 (scalability structure).
//! - H.264: RFC 6184 §5.6 (single NAL unit), §5.7.1 (STAP-A), §5.8 (FU-A).
//! - AV1: "RTP Payload Format For AV1" (AOMedia), §4.4 (aggregation header).

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
        CodecKind::Vp8 => inspect_vp8(payload),
        CodecKind::Vp9 => inspect_vp9(payload),
        CodecKind::H264 => inspect_h264(payload),
        CodecKind::Av1 => inspect_av1(payload),
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

/// Bounds-checked forward reader over a byte slice.
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

/// VP8, RFC 7741 §4.2:
///
/// ```text
///       0 1 2 3 4 5 6 7
///      +-+-+-+-+-+-+-+-+
///      |X|R|N|S|R| PID | (REQUIRED)
///      +-+-+-+-+-+-+-+-+
/// X:   |I|L|T|K| RSV   | (OPTIONAL)
///      +-+-+-+-+-+-+-+-+
/// I:   |M| PictureID   | (OPTIONAL, 2nd byte if M)
///      +-+-+-+-+-+-+-+-+
/// L:   |   TL0PICIDX   | (OPTIONAL)
///      +-+-+-+-+-+-+-+-+
/// T/K: |TID|Y| KEYIDX  | (OPTIONAL)
///      +-+-+-+-+-+-+-+-+
/// ```
///
/// Keyframe detection per §4.3: the VP8 payload header is only present when
/// S=1 and PID=0; its P bit (LSB of the first byte) is 0 for key frames.
fn inspect_vp8(payload: &[u8]) -> Result<PayloadInfo, InspectError> {
    let mut r = Reader::new(payload);
    let mut info = PayloadInfo::default();

    let b0 = r.u8()?;
    let x = b0 & 0x80 != 0;
    let s = b0 & 0x10 != 0;
    let pid = b0 & 0x07;

    if x {
        let ext = r.u8()?;
        let i = ext & 0x80 != 0;
        let l = ext & 0x40 != 0;
        let t = ext & 0x20 != 0;
        let k = ext & 0x10 != 0;
        if i {
            info.picture_id = Some(r.picture_id()?);
        }
        if l {
            // TL0PICIDX
            r.skip(1)?;
        }
        if t || k {
            let tk = r.u8()?;
            if t {
                info.temporal_id = Some(tk >> 6);
            }
        }
    }

    let start = s && pid == 0;
    info.start_of_frame = start;
    if start {
        // §4.3: |Size0|H| VER |P| — P is inverse key frame flag.
        let hdr = r.u8()?;
        info.keyframe = hdr & 0x01 == 0;
    } else if r.rest().is_empty() {
        // §4.2: the descriptor is followed by at least one octet of VP8 data.
        return Err(InspectError::Truncated);
    }
    Ok(info)
}

/// VP9, RFC 9628 §4.2:
///
/// ```text
///       0 1 2 3 4 5 6 7
///      +-+-+-+-+-+-+-+-+
///      |I|P|L|F|B|E|V|Z| (REQUIRED)
///      +-+-+-+-+-+-+-+-+
/// I:   |M| PICTURE ID  | (2nd byte if M)
///      +-+-+-+-+-+-+-+-+
/// L:   | TID |U| SID |D|
///      +-+-+-+-+-+-+-+-+
///      |   TL0PICIDX   | (only if L and not F)
///      +-+-+-+-+-+-+-+-+
/// F,P: | P_DIFF      |N| (up to 3 times)
///      +-+-+-+-+-+-+-+-+
/// V:   | SS            | (§4.2.1)
///      +-+-+-+-+-+-+-+-+
/// ```
///
/// Keyframe: B=1 (start of a layer frame), P=0 (not inter-picture
/// predicted) and either no layer indices or SID=0.
fn inspect_vp9(payload: &[u8]) -> Result<PayloadInfo, InspectError> {
    let mut r = Reader::new(payload);
    let mut info = PayloadInfo::default();

    let b0 = r.u8()?;
    let i = b0 & 0x80 != 0;
    let p = b0 & 0x40 != 0;
    let l = b0 & 0x20 != 0;
    let f = b0 & 0x10 != 0;
    let b = b0 & 0x08 != 0;
    let v = b0 & 0x02 != 0;

    if i {
        info.picture_id = Some(r.picture_id()?);
    }
    if l {
        let layer = r.u8()?;
        info.temporal_id = Some(layer >> 5);
        info.spatial_id = Some((layer >> 1) & 0x07);
        if !f {
            // TL0PICIDX, non-flexible mode only.
            r.skip(1)?;
        }
    }
    if f && p {
        // Up to 3 reference indices; N bit (LSB) says another follows.
        let mut count = 0u8;
        loop {
            let pdiff = r.u8()?;
            count += 1;
            if pdiff & 0x01 == 0 {
                break;
            }
            if count >= 3 {
                return Err(InspectError::Malformed);
            }
        }
    }
    if v {
        skip_vp9_ss(&mut r)?;
    }

    info.start_of_frame = b;
    info.keyframe = b && !p && info.spatial_id.is_none_or(|sid| sid == 0);
    Ok(info)
}

/// Skips a VP9 scalability structure, RFC 9628 §4.2.1:
///
/// ```text
/// V:   | N_S |Y|G|-|-|-|
/// Y:   | WIDTH (16) | HEIGHT (16) |   N_S + 1 times
/// G:   |      N_G      |
/// N_G: | TID |U| R |-|-|  then R x P_DIFF (8)   N_G times
/// ```
fn skip_vp9_ss(r: &mut Reader<'_>) -> Result<(), InspectError> {
    let hdr = r.u8()?;
    let n_s = usize::from(hdr >> 5) + 1;
    let y = hdr & 0x10 != 0;
    let g = hdr & 0x08 != 0;
    if y {
        // WIDTH and HEIGHT, 2 octets each, per spatial layer.
        r.skip(n_s * 4)?;
    }
    if g {
        let n_g = r.u8()?;
        for _ in 0..n_g {
            let pic = r.u8()?;
            let refs = usize::from((pic >> 2) & 0x03);
            r.skip(refs)?;
        }
    }
    Ok(())
}

/// H.264 NAL unit type of an IDR slice (ITU-T H.264 Table 7-1).
const NAL_IDR: u8 = 5;
/// H.264 NAL unit type of a sequence parameter set.
const NAL_SPS: u8 = 7;
/// RFC 6184 §5.7.1 single-time aggregation packet.
const NAL_STAP_A: u8 = 24;
/// RFC 6184 §5.8 fragmentation unit without DON.
const NAL_FU_A: u8 = 28;

/// Whether a NAL unit type starts a keyframe as browsers send them
/// (SPS [+PPS] + IDR, or a bare IDR).
fn h264_key_nal(nal_type: u8) -> bool {
    nal_type == NAL_IDR || nal_type == NAL_SPS
}

/// H.264, RFC 6184 §5.2-§5.8. NAL header: |F|NRI|Type(5)|.
fn inspect_h264(payload: &[u8]) -> Result<PayloadInfo, InspectError> {
    let mut r = Reader::new(payload);
    let mut info = PayloadInfo::default();
    let nal_type = r.u8()? & 0x1f;
    match nal_type {
        // §5.6 single NAL unit packet.
        1..=23 => {
            info.start_of_frame = true;
            info.keyframe = h264_key_nal(nal_type);
        }
        // §5.7.1 STAP-A: repeated [NALU size (16)][NALU].
        NAL_STAP_A => {
            let mut any = false;
            while !r.rest().is_empty() {
                let size = usize::from(r.u16()?);
                if size == 0 {
                    return Err(InspectError::Malformed);
                }
                let nalu = r.take(size)?;
                if let Some(&hdr) = nalu.first() {
                    if h264_key_nal(hdr & 0x1f) {
                        info.keyframe = true;
                    }
                }
                any = true;
            }
            if !any {
                return Err(InspectError::Truncated);
            }
            info.start_of_frame = true;
        }
        // §5.8 FU-A: FU indicator, then FU header |S|E|R|Type(5)|.
        NAL_FU_A => {
            let fu = r.u8()?;
            let s = fu & 0x80 != 0;
            let e = fu & 0x40 != 0;
            if s && e {
                // §5.8: Start and End bits MUST NOT both be set.
                return Err(InspectError::Malformed);
            }
            info.start_of_frame = s;
            info.keyframe = s && h264_key_nal(fu & 0x1f);
        }
        // STAP-B, MTAP16, MTAP24, FU-B: interleaved mode only (§5.4), which
        // WebRTC does not negotiate; nothing is learned from them.
        25..=27 | 29 => {}
        // 0 and 30-31 are reserved/undefined (§5.2).
        _ => return Err(InspectError::Malformed),
    }
    Ok(info)
}

/// Reads an unsigned LEB128 value (AV1 spec §4.10.5), at most 8 bytes.
fn read_leb128(r: &mut Reader<'_>) -> Result<u64, InspectError> {
    let mut value: u64 = 0;
    for i in 0..8u32 {
        let b = r.u8()?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(InspectError::Malformed)
}

/// AV1, AV1 RTP payload format §4.4 aggregation header:
///
/// ```text
///  0 1 2 3 4 5 6 7
/// +-+-+-+-+-+-+-+-+
/// |Z|Y| W |N|-|-|-|
/// +-+-+-+-+-+-+-+-+
/// ```
///
/// Z: first OBU element continues an OBU from the previous packet.
/// W: number of OBU elements (0 = each element carries a LEB128 length;
/// 1-3 = all but the last carry a length). N: first packet of a coded video
/// sequence (and then Z MUST be 0).
fn inspect_av1(payload: &[u8]) -> Result<PayloadInfo, InspectError> {
    let mut r = Reader::new(payload);
    let hdr = r.u8()?;
    let z = hdr & 0x80 != 0;
    let w = (hdr >> 4) & 0x03;
    let n = hdr & 0x08 != 0;
    if n && z {
        return Err(InspectError::Malformed);
    }

    // Validate the OBU element framing.
    if w == 0 {
        if r.rest().is_empty() {
            return Err(InspectError::Truncated);
        }
        while !r.rest().is_empty() {
            skip_av1_sized_element(&mut r)?;
        }
    } else {
        for _ in 1..w {
            skip_av1_sized_element(&mut r)?;
        }
        // The last element takes the rest of the packet.
        if r.rest().is_empty() {
            return Err(InspectError::Truncated);
        }
    }

    Ok(PayloadInfo {
        keyframe: n,
        start_of_frame: !z,
        ..PayloadInfo::default()
    })
}

/// Skips one LEB128-length-prefixed AV1 OBU element.
fn skip_av1_sized_element(r: &mut Reader<'_>) -> Result<(), InspectError> {
    let len = read_leb128(r)?;
    if len == 0 {
        return Err(InspectError::Malformed);
    }
    let len = usize::try_from(len).map_err(|_| InspectError::Truncated)?;
    r.skip(len)
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
    fn all_prefixes(kind: CodecKind, sample: &[u8]) {
        for n in 0..=sample.len() {
            let res = inspect(kind, &sample[..n]);
            if n == 0 {
                assert_eq!(res, Err(InspectError::Empty));
            }
            let _ = is_keyframe(kind, &sample[..n]);
        }
    }

    // ---- VP8 ----

    /// X=1 S=1 PID=0, I with 15-bit picture id 0x1234, then a real key frame
    /// header (frame tag P=0, start code 9d 01 2a, 640x480).
    const VP8_KEY: &[u8] = &[
        0x90, 0x80, 0x92, 0x34, 0x50, 0x2d, 0x01, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01,
    ];
    /// X=1 S=1 PID=0, I+L+T, 15-bit pid 0x1235, TL0PICIDX 5, TID=1, inter frame (P=1).
    const VP8_INTER: &[u8] = &[0x90, 0xe0, 0x92, 0x35, 0x05, 0x40, 0x31, 0x22, 0x00];
    /// X=1 S=0: continuation packet, 7-bit pid.
    const VP8_CONT: &[u8] = &[0x80, 0x80, 0x12, 0xaa, 0xbb];

    #[test]
    fn vp8_keyframe() {
        let info = inspect(CodecKind::Vp8, VP8_KEY).unwrap();
        assert!(info.keyframe);
        assert!(info.start_of_frame);
        assert_eq!(info.picture_id, Some(0x1234));
        assert_eq!(info.temporal_id, None);
        assert!(is_keyframe(CodecKind::Vp8, VP8_KEY));
        all_prefixes(CodecKind::Vp8, VP8_KEY);
        // Descriptor only, header byte missing.
        assert_eq!(
            inspect(CodecKind::Vp8, &VP8_KEY[..4]),
            Err(InspectError::Truncated)
        );
    }

    #[test]
    fn vp8_minimal_keyframe() {
        // No extension: S=1, PID=0, then P=0.
        let info = inspect(CodecKind::Vp8, &[0x10, 0x50, 0x2d, 0x01]).unwrap();
        assert!(info.keyframe && info.start_of_frame);
        assert_eq!(info.picture_id, None);
    }

    #[test]
    fn vp8_interframe() {
        let info = inspect(CodecKind::Vp8, VP8_INTER).unwrap();
        assert!(!info.keyframe);
        assert!(info.start_of_frame);
        assert_eq!(info.picture_id, Some(0x1235));
        assert_eq!(info.temporal_id, Some(1));
        all_prefixes(CodecKind::Vp8, VP8_INTER);
    }

    #[test]
    fn vp8_continuation_and_partitions() {
        let info = inspect(CodecKind::Vp8, VP8_CONT).unwrap();
        assert!(!info.keyframe && !info.start_of_frame);
        assert_eq!(info.picture_id, Some(0x12));
        all_prefixes(CodecKind::Vp8, VP8_CONT);
        // S=1 but PID=1: start of a later partition, not a frame start; the
        // byte after the descriptor is not a payload header.
        let info = inspect(CodecKind::Vp8, &[0x11, 0x50]).unwrap();
        assert!(!info.keyframe && !info.start_of_frame);
        // Descriptor with no VP8 data at all.
        assert_eq!(
            inspect(CodecKind::Vp8, &[0x80, 0x80, 0x12]),
            Err(InspectError::Truncated)
        );
    }

    #[test]
    fn vp8_k_without_t() {
        // K=1, T=0: the T/K byte is present but TID is not meaningful.
        let info = inspect(CodecKind::Vp8, &[0x90, 0x10, 0xc3, 0x50]).unwrap();
        assert_eq!(info.temporal_id, None);
        assert!(info.keyframe);
    }

    // ---- VP9 ----

    /// I P L F B E V Z = 1 0 1 0 1 1 1 0; 15-bit pid 0x0123; TID0/SID0;
    /// TL0PICIDX 7; SS with N_S=0, Y (640x480), G with N_G=1 (R=1, P_DIFF 1);
    /// then VP9 key frame bytes (frame marker + sync code 49 83 42).
    const VP9_KEY_SS: &[u8] = &[
        0xae, 0x81, 0x23, 0x00, 0x07, 0x18, 0x02, 0x80, 0x01, 0xe0, 0x01, 0x04, 0x01, 0x82, 0x49,
        0x83, 0x42,
    ];
    /// Flexible mode inter frame: I P L F B = 1 1 1 1 1; 7-bit pid 5;
    /// TID=2 U=1 SID=1 D=1; two P_DIFFs (N=1 then N=0).
    const VP9_FLEX_INTER: &[u8] = &[0xf8, 0x05, 0x53, 0x03, 0x04, 0x86, 0x00];
    /// Three spatial layers, SS with Y and G, N_G=2 with R=2 and R=0.
    const VP9_SS_3L: &[u8] = &[
        0x8a, 0x10, // I B V; pid 16
        0x58, // N_S=2, Y, G
        0x01, 0x40, 0x00, 0xb4, // 320x180
        0x02, 0x80, 0x01, 0x68, // 640x360
        0x05, 0x00, 0x02, 0xd0, // 1280x720
        0x02, // N_G=2
        0x08, 0x01, 0x02, // TID0 R=2 P_DIFFs 1,2
        0x30, // TID1 U R=0
        0x82, 0x49, 0x83, 0x42,
    ];

    #[test]
    fn vp9_keyframe_with_ss() {
        let info = inspect(CodecKind::Vp9, VP9_KEY_SS).unwrap();
        assert!(info.keyframe && info.start_of_frame);
        assert_eq!(info.picture_id, Some(0x0123));
        assert_eq!(info.temporal_id, Some(0));
        assert_eq!(info.spatial_id, Some(0));
        all_prefixes(CodecKind::Vp9, VP9_KEY_SS);
        // Cut inside the SS: truncated.
        assert_eq!(
            inspect(CodecKind::Vp9, &VP9_KEY_SS[..8]),
            Err(InspectError::Truncated)
        );
    }

    #[test]
    fn vp9_flexible_inter() {
        let info = inspect(CodecKind::Vp9, VP9_FLEX_INTER).unwrap();
        assert!(!info.keyframe && info.start_of_frame);
        assert_eq!(info.picture_id, Some(5));
        assert_eq!(info.temporal_id, Some(2));
        assert_eq!(info.spatial_id, Some(1));
        all_prefixes(CodecKind::Vp9, VP9_FLEX_INTER);
    }

    #[test]
    fn vp9_ss_three_layers() {
        let info = inspect(CodecKind::Vp9, VP9_SS_3L).unwrap();
        assert!(info.keyframe && info.start_of_frame);
        assert_eq!(info.picture_id, Some(16));
        assert_eq!(info.spatial_id, None);
        all_prefixes(CodecKind::Vp9, VP9_SS_3L);
    }

    #[test]
    fn vp9_misc() {
        // Only B set: keyframe, no ids.
        let info = inspect(CodecKind::Vp9, &[0x08, 0x82]).unwrap();
        assert!(info.keyframe && info.start_of_frame);
        assert_eq!(info.temporal_id, None);
        // Not B: not a frame start.
        let info = inspect(CodecKind::Vp9, &[0x04, 0x00]).unwrap();
        assert!(!info.keyframe && !info.start_of_frame);
        // Upper spatial layer of a key picture (SID=1, P=0): not a keyframe.
        let info = inspect(CodecKind::Vp9, &[0x28, 0x02, 0x00, 0x00]).unwrap();
        assert_eq!(info.spatial_id, Some(1));
        assert!(!info.keyframe && info.start_of_frame);
        // Flexible mode with four P_DIFFs: malformed.
        assert_eq!(
            inspect(CodecKind::Vp9, &[0x58, 0x03, 0x03, 0x03, 0x03, 0x00]),
            Err(InspectError::Malformed)
        );
        // Flexible mode with L: no TL0PICIDX byte.
        let info = inspect(CodecKind::Vp9, &[0x38, 0x20]).unwrap();
        assert_eq!(info.temporal_id, Some(1));
    }

    // ---- H.264 ----

    const H264_IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff];
    const H264_NON_IDR: &[u8] = &[0x41, 0x9a, 0x02, 0x04];
    /// STAP-A with SPS, PPS and a small IDR.
    const H264_STAP_SPS_PPS_IDR: &[u8] = &[
        0x78, // STAP-A, NRI=3
        0x00, 0x0a, 0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, // SPS
        0x00, 0x04, 0x68, 0xce, 0x3c, 0x80, // PPS
        0x00, 0x03, 0x65, 0x88, 0x84, // IDR
    ];
    const H264_FU_START_IDR: &[u8] = &[0x7c, 0x85, 0x88, 0x84, 0x21];
    const H264_FU_MIDDLE_IDR: &[u8] = &[0x7c, 0x05, 0x11, 0x22];
    const H264_FU_END_IDR: &[u8] = &[0x7c, 0x45, 0x11];
    const H264_FU_START_P: &[u8] = &[0x5c, 0x81, 0x9a, 0x02];

    #[test]
    fn h264_single() {
        let info = inspect(CodecKind::H264, H264_IDR).unwrap();
        assert!(info.keyframe && info.start_of_frame);
        let info = inspect(CodecKind::H264, H264_NON_IDR).unwrap();
        assert!(!info.keyframe && info.start_of_frame);
        // Bare SPS counts as a keyframe start.
        assert!(is_keyframe(CodecKind::H264, &[0x67, 0x42, 0xc0]));
        // Reserved NAL type 0 / 30.
        assert_eq!(
            inspect(CodecKind::H264, &[0x00, 0x00]),
            Err(InspectError::Malformed)
        );
        assert_eq!(
            inspect(CodecKind::H264, &[0x1e]),
            Err(InspectError::Malformed)
        );
        all_prefixes(CodecKind::H264, H264_IDR);
        all_prefixes(CodecKind::H264, H264_NON_IDR);
    }

    #[test]
    fn h264_stap_a() {
        let info = inspect(CodecKind::H264, H264_STAP_SPS_PPS_IDR).unwrap();
        assert!(info.keyframe && info.start_of_frame);
        all_prefixes(CodecKind::H264, H264_STAP_SPS_PPS_IDR);
        // Cut in the middle of the IDR NALU.
        let n = H264_STAP_SPS_PPS_IDR.len() - 1;
        assert_eq!(
            inspect(CodecKind::H264, &H264_STAP_SPS_PPS_IDR[..n]),
            Err(InspectError::Truncated)
        );
        // STAP-A header only.
        assert_eq!(
            inspect(CodecKind::H264, &[0x78]),
            Err(InspectError::Truncated)
        );
        // Zero-size NALU.
        assert_eq!(
            inspect(CodecKind::H264, &[0x78, 0x00, 0x00]),
            Err(InspectError::Malformed)
        );
        // STAP-A of non-key NALUs (SEI + non-IDR slice).
        let info = inspect(
            CodecKind::H264,
            &[0x18, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x41, 0x9a],
        )
        .unwrap();
        assert!(!info.keyframe && info.start_of_frame);
    }

    #[test]
    fn h264_fu_a() {
        let info = inspect(CodecKind::H264, H264_FU_START_IDR).unwrap();
        assert!(info.keyframe && info.start_of_frame);
        let info = inspect(CodecKind::H264, H264_FU_MIDDLE_IDR).unwrap();
        assert!(!info.keyframe && !info.start_of_frame);
        let info = inspect(CodecKind::H264, H264_FU_END_IDR).unwrap();
        assert!(!info.keyframe && !info.start_of_frame);
        let info = inspect(CodecKind::H264, H264_FU_START_P).unwrap();
        assert!(!info.keyframe && info.start_of_frame);
        // S and E both set.
        assert_eq!(
            inspect(CodecKind::H264, &[0x7c, 0xc5, 0x00]),
            Err(InspectError::Malformed)
        );
        // FU indicator only.
        assert_eq!(
            inspect(CodecKind::H264, &[0x7c]),
            Err(InspectError::Truncated)
        );
        for s in [
            H264_FU_START_IDR,
            H264_FU_MIDDLE_IDR,
            H264_FU_END_IDR,
            H264_FU_START_P,
        ] {
            all_prefixes(CodecKind::H264, s);
        }
    }

    // ---- AV1 ----

    /// Z=0 Y=0 W=2 N=1: first element (sequence header OBU, LEB128 len 4),
    /// last element (frame OBU) takes the rest.
    const AV1_KEY: &[u8] = &[
        0x28, // W=2, N=1
        0x04, 0x08, 0x00, 0x00, 0x00, // len 4: OBU_SEQUENCE_HEADER (no size field)
        0x30, 0x10, 0x20, // OBU_FRAME ...
    ];
    /// Z=1 Y=1 W=1: continuation of an OBU.
    const AV1_CONT: &[u8] = &[0xd0, 0xaa, 0xbb, 0xcc];
    /// W=0: every element length-prefixed (second length is a 2-byte LEB128 of 1).
    const AV1_W0: &[u8] = &[0x40, 0x02, 0x30, 0x01, 0x81, 0x00, 0x30];

    #[test]
    fn av1() {
        let info = inspect(CodecKind::Av1, AV1_KEY).unwrap();
        assert!(info.keyframe && info.start_of_frame);
        let info = inspect(CodecKind::Av1, AV1_CONT).unwrap();
        assert!(!info.keyframe && !info.start_of_frame);
        let info = inspect(CodecKind::Av1, AV1_W0).unwrap();
        assert!(!info.keyframe && info.start_of_frame);
        assert_eq!(info.temporal_id, None);
        // N=1 with Z=1 is forbidden.
        assert_eq!(
            inspect(CodecKind::Av1, &[0x98, 0x00]),
            Err(InspectError::Malformed)
        );
        // Aggregation header only.
        assert_eq!(
            inspect(CodecKind::Av1, &[0x18]),
            Err(InspectError::Truncated)
        );
        // W=2 but first element length overruns.
        assert_eq!(
            inspect(CodecKind::Av1, &[0x20, 0x05, 0x01]),
            Err(InspectError::Truncated)
        );
        // Overlong LEB128.
        assert_eq!(
            inspect(
                CodecKind::Av1,
                &[0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]
            ),
            Err(InspectError::Malformed)
        );
        // Huge LEB128 length.
        assert_eq!(
            inspect(
                CodecKind::Av1,
                &[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x01]
            ),
            Err(InspectError::Truncated)
        );
        for s in [AV1_KEY, AV1_CONT, AV1_W0] {
            all_prefixes(CodecKind::Av1, s);
        }
    }

    // ---- opaque codecs, helpers ----

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
