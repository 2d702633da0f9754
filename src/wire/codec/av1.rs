//! AV1 RTP payloads ("RTP Payload Format For AV1", AOMedia): the aggregation header
//! (§4.4) and the LEB128-length OBU element framing (§4.4, AV1 spec §4.10.5), which is
//! validated. Learns frame start (Z) and the start of a coded video sequence (N).

use super::{InspectError, PayloadInfo, Reader};

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
pub(super) fn inspect_av1(payload: &[u8]) -> Result<PayloadInfo, InspectError> {
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
    use crate::wire::codec::tests::all_prefixes;
    use crate::wire::codec::{inspect, CodecKind, InspectError};

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
}
