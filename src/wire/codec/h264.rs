//! H.264 RTP payloads (RFC 6184): the NAL unit header (§5.3), single NAL unit packets
//! (§5.6), STAP-A aggregation packets (§5.7.1) and FU-A fragmentation units (§5.8); NAL
//! unit types per ITU-T H.264 Table 7-1. Learns frame start and keyframe (SPS or IDR).

use super::{InspectError, PayloadInfo, Reader};

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
pub(super) fn inspect_h264(payload: &[u8]) -> Result<PayloadInfo, InspectError> {
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

#[cfg(test)]
mod tests {
    use crate::wire::codec::tests::all_prefixes;
    use crate::wire::codec::{inspect, is_keyframe, CodecKind, InspectError};

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
}
