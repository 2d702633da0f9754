//! One header extension element of an RTP packet, read from the datagram as it arrived
//! (RFC 3550 §5.3.1 and RFC 8285: the one-byte `0xBEDE` and two-byte `0x100x` forms).
//! SRTP authenticates the RTP header but leaves it in the clear, so this can be read
//! before str0m decrypts the packet; the caller uses the bytes only once str0m has
//! accepted the packet with the same SSRC and sequence number.
//!
//! Zero-copy (the value borrows the datagram), no allocation, loops bounded by the
//! extension block's length, an error for anything malformed.

/// What [`find_extension`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpExtension<'a> {
    /// The packet's SSRC.
    pub ssrc: u32,
    /// The packet's sequence number.
    pub seq: u16,
    /// The element's value, if the packet carries element `id`.
    pub value: Option<&'a [u8]>,
}

/// Why a packet's header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpExtError {
    /// Not RTP version 2, or an RTCP packet type.
    NotRtp,
    /// The header, its CSRCs or its extension block run past the end of the packet.
    Truncated,
    /// An element runs past the end of the extension block.
    Malformed,
}

impl std::fmt::Display for RtpExtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RtpExtError::NotRtp => "not an RTP packet",
            RtpExtError::Truncated => "RTP header truncated",
            RtpExtError::Malformed => "RTP header extension element overruns its block",
        })
    }
}

impl std::error::Error for RtpExtError {}

/// The SSRC and sequence number of RTP packet `packet`, and the value of its header
/// extension element `id` (1..=14 in the one-byte form, 1..=255 in the two-byte form).
pub fn find_extension(packet: &[u8], id: u8) -> Result<RtpExtension<'_>, RtpExtError> {
    if packet.len() < 12 {
        return Err(RtpExtError::Truncated);
    }
    let b0 = packet[0];
    // Version 2; RTCP's packet types 192..=223 (RFC 5761) are not RTP.
    if b0 >> 6 != 2 || (192..=223).contains(&packet[1]) {
        return Err(RtpExtError::NotRtp);
    }
    let seq = u16::from_be_bytes([packet[2], packet[3]]);
    let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
    let mut out = RtpExtension {
        ssrc,
        seq,
        value: None,
    };
    if b0 & 0x10 == 0 {
        return Ok(out); // no extension
    }
    let csrcs = usize::from(b0 & 0x0f) * 4;
    let at = 12 + csrcs;
    let head = packet.get(at..at + 4).ok_or(RtpExtError::Truncated)?;
    let profile = u16::from_be_bytes([head[0], head[1]]);
    let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let block = packet
        .get(at + 4..at + 4 + words * 4)
        .ok_or(RtpExtError::Truncated)?;
    out.value = if profile == 0xBEDE {
        one_byte(block, id)?
    } else if profile >> 4 == 0x100 {
        two_byte(block, id)?
    } else {
        None // another profile: no RFC 8285 elements
    };
    Ok(out)
}

/// RFC 8285 §4.2: `ID (4 bits) | L (4 bits, length - 1)`, then the value; 0 bytes are
/// padding, ID 15 ends the block.
fn one_byte(block: &[u8], id: u8) -> Result<Option<&[u8]>, RtpExtError> {
    let mut i = 0;
    while i < block.len() {
        let b = block[i];
        if b == 0 {
            i += 1;
            continue;
        }
        let (eid, len) = (b >> 4, usize::from(b & 0x0f) + 1);
        if eid == 15 {
            break;
        }
        let value = block
            .get(i + 1..i + 1 + len)
            .ok_or(RtpExtError::Malformed)?;
        if eid == id {
            return Ok(Some(value));
        }
        i += 1 + len;
    }
    Ok(None)
}

/// RFC 8285 §4.3: `ID (8 bits) | length (8 bits)`, then the value; 0 bytes are padding.
fn two_byte(block: &[u8], id: u8) -> Result<Option<&[u8]>, RtpExtError> {
    let mut i = 0;
    while i < block.len() {
        let eid = block[i];
        if eid == 0 {
            i += 1;
            continue;
        }
        let len = usize::from(*block.get(i + 1).ok_or(RtpExtError::Malformed)?);
        let value = block
            .get(i + 2..i + 2 + len)
            .ok_or(RtpExtError::Malformed)?;
        if eid == id {
            return Ok(Some(value));
        }
        i += 2 + len;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP header (one CSRC) with extension block `block` of `profile`, and a payload.
    fn packet(profile: u16, block: &[u8]) -> Vec<u8> {
        assert_eq!(block.len() % 4, 0);
        let mut p = vec![0x91, 96, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        p.extend_from_slice(&[0, 0, 0, 9]); // the CSRC
        p.extend_from_slice(&profile.to_be_bytes());
        p.extend_from_slice(&((block.len() / 4) as u16).to_be_bytes());
        p.extend_from_slice(block);
        p.extend_from_slice(&[1, 2, 3]);
        p
    }

    #[test]
    fn one_byte_elements_with_padding() {
        // id 3 (2 bytes), padding, id 12 (3 bytes: a dependency descriptor), padding.
        let p = packet(0xBEDE, &[0x31, 0xaa, 0xbb, 0, 0xc2, 0x80, 0x01, 0x02]);
        let e = find_extension(&p, 12).unwrap();
        assert_eq!((e.ssrc, e.seq), (0xdeadbeef, 0x1234));
        assert_eq!(e.value, Some(&[0x80, 0x01, 0x02][..]));
        assert_eq!(
            find_extension(&p, 3).unwrap().value,
            Some(&[0xaa, 0xbb][..])
        );
        assert_eq!(find_extension(&p, 5).unwrap().value, None);
    }

    #[test]
    fn two_byte_elements_and_other_profiles() {
        // id 12 with 5 bytes, then id 200 with 0 bytes.
        let p = packet(0x1000, &[12, 5, 1, 2, 3, 4, 5, 200, 0, 0, 0, 0]);
        assert_eq!(
            find_extension(&p, 12).unwrap().value,
            Some(&[1, 2, 3, 4, 5][..])
        );
        assert_eq!(find_extension(&p, 200).unwrap().value, Some(&[][..]));
        let p = packet(0x1234, &[12, 5, 1, 2]);
        assert_eq!(find_extension(&p, 12).unwrap().value, None);
    }

    #[test]
    fn every_truncation_is_an_error_or_a_shorter_read_never_a_panic() {
        let p = packet(0xBEDE, &[0x31, 0xaa, 0xbb, 0, 0xc2, 0x80, 0x01, 0x02]);
        for n in 0..p.len() {
            let _ = find_extension(&p[..n], 12);
        }
        assert_eq!(find_extension(&p[..11], 12), Err(RtpExtError::Truncated));
        assert_eq!(find_extension(&p[..20], 12), Err(RtpExtError::Truncated));
        // An element longer than its block.
        let p = packet(0xBEDE, &[0x3f, 0xaa, 0xbb, 0xcc]);
        assert_eq!(find_extension(&p, 12), Err(RtpExtError::Malformed));
        // RTCP is not RTP.
        let mut r = p.clone();
        r[1] = 200;
        assert_eq!(find_extension(&r, 12), Err(RtpExtError::NotRtp));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut buf = [0u8; 64];
        for _ in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            buf[0] = 0x90 | (buf[0] & 0x0f);
            let n = (x % 64) as usize;
            let _ = find_extension(&buf[..n], (x >> 8) as u8);
        }
    }
}
