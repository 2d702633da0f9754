//! STUN parsing for the shard's O(1) demux, and the STUN building blocks the STUN client
//! shares.
//!
//! [`stun_local_ufrag`] pulls the server-side ICE ufrag out of a STUN Binding Request's
//! USERNAME attribute (RFC 8445 §7.2.2) so a datagram from an unknown 5-tuple can be routed
//! to its session. It follows the message structure of RFC 8489: the 20-byte header with
//! the magic cookie (§5), type-length-value attributes padded to 4 bytes (§14), USERNAME
//! (§14.3), and nothing after MESSAGE-INTEGRITY(-SHA256) counts (§14.5, §14.6).
//!
//! The header constants, `be16` and the attribute walker `attributes` are shared with the
//! STUN client (`stun_client.rs`).

/// Size of the fixed STUN header (RFC 8489 §5).
pub(super) const STUN_HEADER_LEN: usize = 20;
/// STUN magic cookie (RFC 8489 §5).
pub(super) const STUN_MAGIC_COOKIE: [u8; 4] = 0x2112_A442u32.to_be_bytes();
/// STUN Binding Request message type (RFC 8489 §18.2).
pub(super) const STUN_BINDING_REQUEST: u16 = 0x0001;
/// USERNAME attribute (RFC 8489 §14.3).
const ATTR_USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY attribute (RFC 8489 §14.5).
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
/// MESSAGE-INTEGRITY-SHA256 attribute (RFC 8489 §14.6).
const ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// Maximum USERNAME value length in bytes (RFC 8489 §14.3).
const MAX_USERNAME_LEN: usize = 513;

/// Errors extracting a ufrag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunError {
    /// Not a STUN message (first byte, magic cookie or length alignment wrong).
    NotStun,
    /// The header or an attribute runs past the end of the datagram.
    Truncated,
    /// A STUN message, but not a Binding Request.
    NotBindingRequest,
    /// No USERNAME attribute before MESSAGE-INTEGRITY / end of message.
    NoUsername,
    /// USERNAME is not of the form `"<local ufrag>:<remote ufrag>"`.
    BadUsername,
}

/// Reads a big-endian `u16` at `at`, if in bounds.
pub(super) fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    match buf.get(at..end)? {
        [a, b] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// Returns the *local* (server-side) ufrag from a STUN Binding Request's
/// USERNAME attribute, as a byte slice borrowed from `buf`.
///
/// Per RFC 8445 §7.2.2 the sender sets USERNAME to
/// `"<receiver ufrag>:<sender ufrag>"`, so for a request arriving at this
/// server the part before the first `:` is our own ufrag.
///
/// Attributes after MESSAGE-INTEGRITY(-SHA256) are ignored (RFC 8489 §14.5),
/// and bytes past the header's declared message length are not examined.
/// Nothing is authenticated here; the caller must still verify
/// MESSAGE-INTEGRITY before trusting the request.
///
/// # Errors
///
/// [`StunError::NotStun`] if the first byte, magic cookie or length
/// alignment rule out STUN; [`StunError::Truncated`] if the header or an
/// attribute runs past the datagram; [`StunError::NotBindingRequest`] for
/// other STUN methods/classes; [`StunError::NoUsername`] when no USERNAME
/// precedes MESSAGE-INTEGRITY; [`StunError::BadUsername`] when it is not
/// `"<local>:<remote>"` with both parts non-empty (or exceeds 513 bytes).
pub fn stun_local_ufrag(buf: &[u8]) -> Result<&[u8], StunError> {
    match buf.first() {
        None => return Err(StunError::Truncated),
        // RFC 8489 §5: the two most significant bits are zero; RFC 7983
        // narrows the first byte to 0..=3.
        Some(&b) if b > 3 => return Err(StunError::NotStun),
        Some(_) => {}
    }
    let header = buf.get(..STUN_HEADER_LEN).ok_or(StunError::Truncated)?;
    if header.get(4..8) != Some(&STUN_MAGIC_COOKIE[..]) {
        return Err(StunError::NotStun);
    }
    let msg_type = be16(header, 0).ok_or(StunError::Truncated)?;
    let msg_len = usize::from(be16(header, 2).ok_or(StunError::Truncated)?);
    // RFC 8489 §5: the message length is always a multiple of 4.
    if msg_len % 4 != 0 {
        return Err(StunError::NotStun);
    }
    if msg_type != STUN_BINDING_REQUEST {
        return Err(StunError::NotBindingRequest);
    }
    let body = buf
        .get(STUN_HEADER_LEN..STUN_HEADER_LEN + msg_len)
        .ok_or(StunError::Truncated)?;

    for attr in attributes(body, StunError::Truncated) {
        let (attr_type, value) = attr?;
        match attr_type {
            ATTR_USERNAME => return local_part(value),
            ATTR_MESSAGE_INTEGRITY | ATTR_MESSAGE_INTEGRITY_SHA256 => break,
            _ => {}
        }
    }
    Err(StunError::NoUsername)
}

/// The attributes of a STUN body: type (16), length (16), value padded to 4 bytes
/// (RFC 8489 §14). Yields `Err(truncated)` once, if an attribute runs past the body.
pub(super) fn attributes<E: Copy>(
    body: &[u8],
    truncated: E,
) -> impl Iterator<Item = Result<(u16, &[u8]), E>> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let attr_type = be16(rest, 0)?;
            let attr_len = usize::from(be16(rest, 2)?);
            let value = rest.get(4..4 + attr_len)?;
            Some((attr_type, value, (4 + attr_len).next_multiple_of(4)))
        })();
        match parsed {
            Some((attr_type, value, padded)) => {
                // The body length is 4-aligned, so the padding fits; stay defensive anyway.
                rest = rest.get(padded..).unwrap_or(&[]);
                Some(Ok((attr_type, value)))
            }
            None => {
                rest = &[];
                Some(Err(truncated))
            }
        }
    })
}

/// Splits a USERNAME value `"local:remote"` and returns `local`.
fn local_part(value: &[u8]) -> Result<&[u8], StunError> {
    if value.len() > MAX_USERNAME_LEN {
        return Err(StunError::BadUsername);
    }
    let colon = value
        .iter()
        .position(|&c| c == b':')
        .ok_or(StunError::BadUsername)?;
    let (local, remote) = value
        .split_at_checked(colon)
        .ok_or(StunError::BadUsername)?;
    // `remote` still starts with the ':'.
    if local.is_empty() || remote.len() < 2 {
        return Err(StunError::BadUsername);
    }
    Ok(local)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::wire::{classify, DatagramKind};

    /// RFC 5769 §2.1 sample Binding Request (USERNAME "evtj:h6vY",
    /// SOFTWARE, PRIORITY, ICE-CONTROLLED, MESSAGE-INTEGRITY, FINGERPRINT).
    const RFC5769_REQUEST: &[u8] = &[
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];

    /// Builds a STUN message of `msg_type` with the given attributes
    /// (type, value), padding values to 4 bytes; transaction id `[7; 12]`.
    pub(in crate::wire) fn stun(msg_type: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in attrs {
            body.extend_from_slice(&t.to_be_bytes());
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut msg = Vec::new();
        msg.extend_from_slice(&msg_type.to_be_bytes());
        msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
        msg.extend_from_slice(&STUN_MAGIC_COOKIE);
        msg.extend_from_slice(&[7u8; 12]);
        msg.extend_from_slice(&body);
        msg
    }

    fn browser_like_request() -> Vec<u8> {
        stun(
            STUN_BINDING_REQUEST,
            &[
                (ATTR_USERNAME, b"srvUfrag1:cli2"),
                (0xC057, &[0x00, 0x01, 0x00, 0x0a]), // GOOG-NETWORK-INFO
                (0x802A, &[1, 2, 3, 4, 5, 6, 7, 8]), // ICE-CONTROLLING
                (0x0025, &[]),                       // USE-CANDIDATE
                (0x0024, &[0x6e, 0x7f, 0x1e, 0xff]), // PRIORITY
                (ATTR_MESSAGE_INTEGRITY, &[0xaa; 20]),
                (0x8028, &[0xde, 0xad, 0xbe, 0xef]), // FINGERPRINT
            ],
        )
    }

    #[test]
    fn rfc5769_vector() {
        assert_eq!(classify(RFC5769_REQUEST), DatagramKind::Stun);
        assert_eq!(stun_local_ufrag(RFC5769_REQUEST), Ok(&b"evtj"[..]));
    }

    #[test]
    fn hand_built_request() {
        let msg = browser_like_request();
        assert_eq!(classify(&msg), DatagramKind::Stun);
        assert_eq!(stun_local_ufrag(&msg), Ok(&b"srvUfrag1"[..]));
        // Trailing bytes beyond the declared length are ignored.
        let mut longer = msg.clone();
        longer.extend_from_slice(&[0xff; 7]);
        assert_eq!(stun_local_ufrag(&longer), Ok(&b"srvUfrag1"[..]));
    }

    #[test]
    fn every_prefix() {
        for sample in [RFC5769_REQUEST.to_vec(), browser_like_request()] {
            for n in 0..sample.len() {
                let p = &sample[..n];
                let _ = classify(p);
                assert_eq!(stun_local_ufrag(p), Err(StunError::Truncated), "len {n}");
            }
        }
    }

    #[test]
    fn stun_errors() {
        // Binding success response.
        let resp = stun(0x0101, &[(ATTR_USERNAME, b"a:b")]);
        assert_eq!(stun_local_ufrag(&resp), Err(StunError::NotBindingRequest));
        // No USERNAME.
        let msg = stun(STUN_BINDING_REQUEST, &[(0x0024, &[0, 0, 0, 1])]);
        assert_eq!(stun_local_ufrag(&msg), Err(StunError::NoUsername));
        let empty = stun(STUN_BINDING_REQUEST, &[]);
        assert_eq!(classify(&empty), DatagramKind::Stun);
        assert_eq!(stun_local_ufrag(&empty), Err(StunError::NoUsername));
        // USERNAME after MESSAGE-INTEGRITY is ignored.
        let msg = stun(
            STUN_BINDING_REQUEST,
            &[(ATTR_MESSAGE_INTEGRITY, &[0; 20]), (ATTR_USERNAME, b"a:b")],
        );
        assert_eq!(stun_local_ufrag(&msg), Err(StunError::NoUsername));
        // Bad usernames.
        for bad in [&b"nocolon"[..], b":remote", b"local:", b"", b":"] {
            let msg = stun(STUN_BINDING_REQUEST, &[(ATTR_USERNAME, bad)]);
            assert_eq!(
                stun_local_ufrag(&msg),
                Err(StunError::BadUsername),
                "{bad:?}"
            );
        }
        let long = vec![b'a'; 600];
        let msg = stun(STUN_BINDING_REQUEST, &[(ATTR_USERNAME, &long)]);
        assert_eq!(stun_local_ufrag(&msg), Err(StunError::BadUsername));
        // Only the first colon splits.
        let msg = stun(STUN_BINDING_REQUEST, &[(ATTR_USERNAME, b"ab:cd:ef")]);
        assert_eq!(stun_local_ufrag(&msg), Ok(&b"ab"[..]));
        // Wrong cookie.
        let mut msg = browser_like_request();
        msg[4] = 0;
        assert_eq!(stun_local_ufrag(&msg), Err(StunError::NotStun));
        assert_eq!(classify(&msg), DatagramKind::Unknown);
        // Length not a multiple of 4.
        let mut msg = browser_like_request();
        msg[3] |= 0x01;
        assert_eq!(stun_local_ufrag(&msg), Err(StunError::NotStun));
        // Declared length past the end.
        let mut msg = browser_like_request();
        msg[2] = 0x10;
        assert_eq!(stun_local_ufrag(&msg), Err(StunError::Truncated));
        // Attribute length past the declared body.
        let msg = [
            &stun(STUN_BINDING_REQUEST, &[])[..2],
            &[0x00, 0x08],
            &STUN_MAGIC_COOKIE,
            &[0; 12],
            &[0x00, 0x06, 0x00, 0x20, b'a', b':', b'b', 0],
        ]
        .concat();
        assert_eq!(stun_local_ufrag(&msg), Err(StunError::Truncated));
        // Not STUN at all.
        assert_eq!(stun_local_ufrag(&[0x80; 40]), Err(StunError::NotStun));
        assert_eq!(stun_local_ufrag(&[22; 40]), Err(StunError::NotStun));
        assert_eq!(stun_local_ufrag(&[]), Err(StunError::Truncated));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = [0u8; 96];
        let mut found = 0u32;
        for i in 0..100_000u32 {
            let len = (next() % 97) as usize;
            for chunk in buf.chunks_mut(8) {
                let v = next().to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
            // Half the time, stamp a plausible Binding Request header so the
            // attribute walker sees random TLVs.
            if i % 2 == 0 {
                let body = (len.saturating_sub(20) as u16) & !3;
                buf[..2].copy_from_slice(&STUN_BINDING_REQUEST.to_be_bytes());
                buf[2..4].copy_from_slice(&body.to_be_bytes());
                buf[4..8].copy_from_slice(&STUN_MAGIC_COOKIE);
                if i % 4 == 0 {
                    let ulen = (next() % 24) as u16;
                    buf[20..22].copy_from_slice(&ATTR_USERNAME.to_be_bytes());
                    buf[22..24].copy_from_slice(&ulen.to_be_bytes());
                    buf[26] = b':';
                }
            }
            let data = &buf[..len];
            let _ = classify(data);
            if let Ok(ufrag) = stun_local_ufrag(data) {
                assert!(!ufrag.is_empty() && !ufrag.contains(&b':'));
                found += 1;
            }
        }
        // The stamped headers should let some usernames through.
        assert!(found > 0);
    }
}
