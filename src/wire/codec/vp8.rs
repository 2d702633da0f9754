//! VP8 payload descriptor (RFC 7741 §4.2) and the keyframe bit of the VP8 payload
//! header (RFC 7741 §4.3): frame start, keyframe, picture id, temporal layer id.

use super::{InspectError, PayloadInfo, Reader};

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
pub(super) fn inspect_vp8(payload: &[u8]) -> Result<PayloadInfo, InspectError> {
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
                info.switch_point = tk & 0x20 != 0;
            }
        }
    }

    let start = s && pid == 0;
    info.start_of_frame = start;
    if start {
        // §4.3: |Size0|H| VER |P| — P is inverse key frame flag.
        let hdr = r.u8()?;
        info.keyframe = hdr & 0x01 == 0;
        if info.keyframe {
            // §4.3 / RFC 6386 §9.1: the rest of the frame tag, the start code 9d 01 2a,
            // then 14-bit width and height (little endian, 2 scaling bits on top). A
            // keyframe cut short here still is one; its size stays unknown.
            let rest = r.rest();
            if rest.len() >= 9 && rest[2..5] == [0x9d, 0x01, 0x2a] {
                let w = u16::from_le_bytes([rest[5], rest[6]]) & 0x3fff;
                let h = u16::from_le_bytes([rest[7], rest[8]]) & 0x3fff;
                info.size = Some((w, h));
            }
        }
    } else if r.rest().is_empty() {
        // §4.2: the descriptor is followed by at least one octet of VP8 data.
        return Err(InspectError::Truncated);
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use crate::wire::codec::tests::all_prefixes;
    use crate::wire::codec::{inspect, is_keyframe, CodecKind, InspectError};

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
        assert_eq!(info.size, Some((640, 480)));
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
        assert!(!info.switch_point);
        assert_eq!(info.size, None);
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
}
