//! Datagram classification: the first look at every UDP datagram a shard receives.
//!
//! [`classify`] sorts a datagram into STUN / DTLS / RTP / RTCP by its first byte
//! (RFC 7983 §7), using the RTP payload-type field to split RTP from RTCP (RFC 5761 §4),
//! and checks the minimum length of what the first byte announces (STUN header and magic
//! cookie, RFC 8489 §5; RTP fixed header and RTCP common header, RFC 3550 §5.1 / §6.4).

use super::stun::{STUN_HEADER_LEN, STUN_MAGIC_COOKIE};

/// What kind of datagram arrived, by RFC 7983 first-byte demultiplexing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// STUN message (first byte 0..=3, valid length and magic cookie).
    Stun,
    /// DTLS record (first byte 20..=63).
    Dtls,
    /// RTP packet (first byte 128..=191, not an RTCP packet type).
    Rtp,
    /// RTCP packet (first byte 128..=191, packet type 192..=223).
    Rtcp,
    /// Anything else, or too short to be what its first byte suggests.
    Unknown,
}

/// Minimum RTP packet: fixed header (RFC 3550 §5.1).
const RTP_MIN_LEN: usize = 12;
/// Minimum RTCP packet: common header (RFC 3550 §6.4).
const RTCP_MIN_LEN: usize = 4;

/// Classifies a datagram by its first byte, per RFC 7983 §7:
///
/// ```text
///  [0..3]     -> STUN   (also needs >= 20 bytes and the magic cookie)
///  [20..63]   -> DTLS
///  [128..191] -> RTP/RTCP (RTCP when the RFC 5761 packet type is 192..=223)
///  else       -> Unknown
/// ```
///
/// Datagrams shorter than 2 bytes, RTP shorter than 12 bytes and RTCP
/// shorter than 4 bytes are [`DatagramKind::Unknown`].
#[must_use]
pub fn classify(buf: &[u8]) -> DatagramKind {
    let (first, second) = match buf {
        [a, b, ..] => (*a, *b),
        _ => return DatagramKind::Unknown,
    };
    match first {
        0..=3 => {
            if buf.len() >= STUN_HEADER_LEN && buf.get(4..8) == Some(&STUN_MAGIC_COOKIE[..]) {
                DatagramKind::Stun
            } else {
                DatagramKind::Unknown
            }
        }
        20..=63 => DatagramKind::Dtls,
        128..=191 => {
            // RFC 5761 §4: with the marker bit masked off, RTCP packet types
            // 192..=223 appear as 64..=95 in the RTP payload-type field.
            if (64..=95).contains(&(second & 0x7f)) {
                if buf.len() >= RTCP_MIN_LEN {
                    DatagramKind::Rtcp
                } else {
                    DatagramKind::Unknown
                }
            } else if buf.len() >= RTP_MIN_LEN {
                DatagramKind::Rtp
            } else {
                DatagramKind::Unknown
            }
        }
        _ => DatagramKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_kinds() {
        // DTLS handshake record header.
        let dtls = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        assert_eq!(classify(&dtls), DatagramKind::Dtls);
        assert_eq!(classify(&[20, 0]), DatagramKind::Dtls);
        assert_eq!(classify(&[63, 0]), DatagramKind::Dtls);
        // RTP, PT 96, with and without marker.
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert_eq!(classify(&rtp), DatagramKind::Rtp);
        rtp[1] = 0x80 | 96;
        assert_eq!(classify(&rtp), DatagramKind::Rtp);
        assert_eq!(classify(&rtp[..11]), DatagramKind::Unknown);
        // PT 111 (Opus) and PT 0 are RTP.
        rtp[1] = 111;
        assert_eq!(classify(&rtp), DatagramKind::Rtp);
        rtp[1] = 0;
        assert_eq!(classify(&rtp), DatagramKind::Rtp);
        // RTCP SR (200), RR (201), PSFB (206), boundaries 192 and 223.
        for pt in [200u8, 201, 206, 192, 223] {
            let rtcp = [0x81, pt, 0x00, 0x01];
            assert_eq!(classify(&rtcp), DatagramKind::Rtcp, "pt {pt}");
            assert_eq!(classify(&rtcp[..3]), DatagramKind::Unknown);
        }
        // 191 and 224 are outside the RTCP range.
        assert_eq!(classify(&[0x80, 191, 0, 0]), DatagramKind::Unknown);
        let mut p = [0u8; 12];
        p[0] = 0x80;
        p[1] = 224;
        assert_eq!(classify(&p), DatagramKind::Rtp);
        // Other first bytes.
        for b in [4u8, 16, 19, 64, 79, 127, 192, 255] {
            assert_eq!(classify(&[b; 40]), DatagramKind::Unknown, "byte {b}");
        }
        assert_eq!(classify(&[]), DatagramKind::Unknown);
        assert_eq!(classify(&[0x80]), DatagramKind::Unknown);
        assert_eq!(classify(&[0x00; 19]), DatagramKind::Unknown);
    }
}
