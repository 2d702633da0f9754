//! VP9 payload descriptor (RFC 9628 §4.2), including the flexible-mode reference indices
//! and the scalability structure (§4.2.1), which is skipped: frame start, keyframe,
//! picture id, temporal and spatial layer ids.

use super::{InspectError, PayloadInfo, Reader};

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
pub(super) fn inspect_vp9(payload: &[u8]) -> Result<PayloadInfo, InspectError> {
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
        info.switch_point = layer & 0x10 != 0;
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
    info.end_of_frame = b0 & 0x04 != 0;
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

#[cfg(test)]
mod tests {
    use crate::wire::codec::tests::all_prefixes;
    use crate::wire::codec::{inspect, CodecKind, InspectError};

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
}
