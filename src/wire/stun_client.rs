//! A minimal STUN client for server-reflexive discovery: the shard sends a Binding Request
//! to a configured STUN server and reads its own public address from the success response.
//!
//! [`stun_binding_request`] builds a header-only Binding Request (RFC 8489 §5, §6);
//! [`stun_binding_response`] parses a Binding success response and its XOR-MAPPED-ADDRESS
//! (RFC 8489 §14.2) or MAPPED-ADDRESS (§14.1). Matching the transaction id, retries and
//! timeouts are the caller's job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::stun::{attributes, be16, STUN_BINDING_REQUEST, STUN_HEADER_LEN, STUN_MAGIC_COOKIE};

/// STUN Binding success response (RFC 8489 §5: class 0b10, method 0x001).
const STUN_BINDING_SUCCESS: u16 = 0x0101;
/// MAPPED-ADDRESS (RFC 8489 §14.1).
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
/// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// Address family IPv4 in (XOR-)MAPPED-ADDRESS (RFC 8489 §14.1).
const FAMILY_IPV4: u8 = 0x01;
/// Address family IPv6 in (XOR-)MAPPED-ADDRESS (RFC 8489 §14.1).
const FAMILY_IPV6: u8 = 0x02;

/// Errors parsing a STUN Binding response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingError {
    /// Not a STUN message (first byte or magic cookie wrong).
    NotStun,
    /// The datagram is shorter than the 20-byte header, or the body the header declares or
    /// an attribute runs past its end.
    Truncated,
    /// A STUN message, but not a Binding success response (requests, indications and
    /// error responses included).
    NotBindingSuccess,
    /// No XOR-MAPPED-ADDRESS or MAPPED-ADDRESS attribute.
    NoMappedAddress,
    /// No address attribute is usable, and the first one has an address family other than
    /// IPv4 (0x01) or IPv6 (0x02).
    BadAddressFamily,
    /// No address attribute is usable, and the first one is too short for its family
    /// (8 bytes for IPv4, 20 for IPv6).
    ShortAddress,
}

/// A minimal STUN Binding Request (header only, RFC 8489 §6), used to learn the shard's
/// server-reflexive address from a STUN server.
pub fn stun_binding_request(txid: [u8; 12]) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..2].copy_from_slice(&STUN_BINDING_REQUEST.to_be_bytes());
    m[4..8].copy_from_slice(&STUN_MAGIC_COOKIE);
    m[8..20].copy_from_slice(&txid);
    m
}

/// Parses a STUN Binding success response: its transaction id and the mapped address
/// (XOR-MAPPED-ADDRESS preferred, MAPPED-ADDRESS accepted).
///
/// The first usable XOR-MAPPED-ADDRESS wins; otherwise the first usable MAPPED-ADDRESS.
/// Unusable address attributes (unknown family, too short) are skipped. Nothing is
/// authenticated; the caller matches the transaction id against its own request.
///
/// # Errors
///
/// [`BindingError::NotStun`] if the first byte or magic cookie rule out STUN;
/// [`BindingError::Truncated`] if the datagram is shorter than the 20-byte header, or the
/// declared body or an attribute runs past it; [`BindingError::NotBindingSuccess`] for any
/// other STUN method or class; when no usable address is present,
/// [`BindingError::NoMappedAddress`] if there is no address attribute at all, else the
/// reason the first one was unusable ([`BindingError::BadAddressFamily`] or
/// [`BindingError::ShortAddress`]).
pub fn stun_binding_response(buf: &[u8]) -> Result<([u8; 12], SocketAddr), BindingError> {
    let header = buf.get(..STUN_HEADER_LEN).ok_or(BindingError::Truncated)?;
    if header.first().is_none_or(|b| *b > 3) || header.get(4..8) != Some(&STUN_MAGIC_COOKIE[..]) {
        return Err(BindingError::NotStun);
    }
    if be16(header, 0) != Some(STUN_BINDING_SUCCESS) {
        return Err(BindingError::NotBindingSuccess);
    }
    let msg_len = usize::from(be16(header, 2).ok_or(BindingError::Truncated)?);
    let mut txid = [0u8; 12];
    txid.copy_from_slice(header.get(8..20).ok_or(BindingError::Truncated)?);
    let body = buf
        .get(STUN_HEADER_LEN..STUN_HEADER_LEN + msg_len)
        .ok_or(BindingError::Truncated)?;
    let mut mapped = None;
    let mut unusable = None;
    for attr in attributes(body, BindingError::Truncated) {
        let (attr_type, value) = attr?;
        match attr_type {
            ATTR_XOR_MAPPED_ADDRESS => match parse_address(value, Some(&txid)) {
                Ok(a) => return Ok((txid, a)),
                Err(e) => {
                    unusable.get_or_insert(e);
                }
            },
            ATTR_MAPPED_ADDRESS if mapped.is_none() => match parse_address(value, None) {
                Ok(a) => mapped = Some(a),
                Err(e) => {
                    unusable.get_or_insert(e);
                }
            },
            _ => {}
        }
    }
    match mapped {
        Some(a) => Ok((txid, a)),
        None => Err(unusable.unwrap_or(BindingError::NoMappedAddress)),
    }
}

/// Parses the value of a MAPPED-ADDRESS (`xor_txid: None`, RFC 8489 §14.1) or an
/// XOR-MAPPED-ADDRESS (`Some(transaction id)`, §14.2):
///
/// ```text
/// | 0 (8) | family (8) | port (16) | address (32 or 128) |
/// ```
///
/// XOR-MAPPED-ADDRESS xors the port with the cookie's top 16 bits, an IPv4 address with
/// the cookie, and an IPv6 address with the cookie followed by the transaction id.
fn parse_address(v: &[u8], xor_txid: Option<&[u8; 12]>) -> Result<SocketAddr, BindingError> {
    let family = *v.get(1).ok_or(BindingError::ShortAddress)?;
    let mut port = be16(v, 2).ok_or(BindingError::ShortAddress)?;
    if xor_txid.is_some() {
        port ^= 0x2112;
    }
    match family {
        FAMILY_IPV4 => {
            let mut ip = [0u8; 4];
            ip.copy_from_slice(v.get(4..8).ok_or(BindingError::ShortAddress)?);
            if xor_txid.is_some() {
                for (b, k) in ip.iter_mut().zip(STUN_MAGIC_COOKIE) {
                    *b ^= k;
                }
            }
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        FAMILY_IPV6 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(v.get(4..20).ok_or(BindingError::ShortAddress)?);
            if let Some(txid) = xor_txid {
                for (b, k) in ip.iter_mut().zip(STUN_MAGIC_COOKIE.iter().chain(txid)) {
                    *b ^= k;
                }
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => Err(BindingError::BadAddressFamily),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{classify, DatagramKind};

    #[test]
    fn binding_response_roundtrip() {
        // A success response with XOR-MAPPED-ADDRESS 192.0.2.1:32853 (RFC 5769 §2.2 values).
        let txid = [
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ];
        let mut m = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&txid);
        m.extend_from_slice(&[
            0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
        ]);
        let (t, a) = stun_binding_response(&m).unwrap();
        assert_eq!(t, txid);
        assert_eq!(a, "192.0.2.1:32853".parse().unwrap());
        for n in 0..m.len() {
            let _ = stun_binding_response(&m[..n]);
        }
        let req = stun_binding_request(txid);
        assert_eq!(classify(&req), DatagramKind::Stun);
        assert_eq!(
            stun_binding_response(&req),
            Err(BindingError::NotBindingSuccess)
        );
    }

    #[test]
    fn binding_response_errors() {
        let stun = crate::wire::stun::tests::stun;
        const SOFTWARE: u16 = 0x8022;
        // Too short for a header, whatever the first byte.
        assert_eq!(stun_binding_response(&[]), Err(BindingError::Truncated));
        assert_eq!(
            stun_binding_response(&[0x80; 19]),
            Err(BindingError::Truncated)
        );
        // Not STUN: first byte, cookie.
        assert_eq!(
            stun_binding_response(&[0x80; 20]),
            Err(BindingError::NotStun)
        );
        let mut m = stun(STUN_BINDING_SUCCESS, &[]);
        m[5] = 0;
        assert_eq!(stun_binding_response(&m), Err(BindingError::NotStun));
        // Other methods and classes: error response, request, indication.
        for t in [0x0111, STUN_BINDING_REQUEST, 0x0011, 0x0102] {
            let m = stun(t, &[(ATTR_XOR_MAPPED_ADDRESS, &[0, 1, 0, 0, 0, 0, 0, 0])]);
            assert_eq!(
                stun_binding_response(&m),
                Err(BindingError::NotBindingSuccess),
                "type {t:#06x}"
            );
        }
        // No address attribute at all.
        let m = stun(STUN_BINDING_SUCCESS, &[]);
        assert_eq!(
            stun_binding_response(&m),
            Err(BindingError::NoMappedAddress)
        );
        let m = stun(STUN_BINDING_SUCCESS, &[(SOFTWARE, b"rheomesh")]);
        assert_eq!(
            stun_binding_response(&m),
            Err(BindingError::NoMappedAddress)
        );
        // Unknown family; too short for the family (IPv4, IPv6, no port).
        for attr in [ATTR_XOR_MAPPED_ADDRESS, ATTR_MAPPED_ADDRESS] {
            let m = stun(STUN_BINDING_SUCCESS, &[(attr, &[0, 3, 0, 1, 1, 2, 3, 4])]);
            assert_eq!(
                stun_binding_response(&m),
                Err(BindingError::BadAddressFamily)
            );
            for short in [
                &[0, 1, 0, 1, 1, 2, 3][..],
                &[0, 2, 0, 1, 1, 2, 3, 4],
                &[0, 1, 0],
            ] {
                let m = stun(STUN_BINDING_SUCCESS, &[(attr, short)]);
                assert_eq!(
                    stun_binding_response(&m),
                    Err(BindingError::ShortAddress),
                    "{short:?}"
                );
            }
        }
        // The first unusable address attribute names the error.
        let m = stun(
            STUN_BINDING_SUCCESS,
            &[
                (ATTR_MAPPED_ADDRESS, &[0, 9, 0, 1, 1, 2, 3, 4]),
                (ATTR_XOR_MAPPED_ADDRESS, &[0, 1, 0, 1]),
            ],
        );
        assert_eq!(
            stun_binding_response(&m),
            Err(BindingError::BadAddressFamily)
        );
        // An unusable XOR-MAPPED-ADDRESS does not hide a usable MAPPED-ADDRESS.
        let m = stun(
            STUN_BINDING_SUCCESS,
            &[
                (ATTR_XOR_MAPPED_ADDRESS, &[0, 9, 0, 1, 1, 2, 3, 4]),
                (ATTR_MAPPED_ADDRESS, &[0, 1, 0x12, 0x34, 10, 0, 0, 1]),
            ],
        );
        assert_eq!(
            stun_binding_response(&m),
            Ok(([7; 12], "10.0.0.1:4660".parse().unwrap()))
        );
        // A usable XOR-MAPPED-ADDRESS wins over an earlier MAPPED-ADDRESS.
        let m = stun(
            STUN_BINDING_SUCCESS,
            &[
                (ATTR_MAPPED_ADDRESS, &[0, 1, 0x12, 0x34, 10, 0, 0, 1]),
                (
                    ATTR_XOR_MAPPED_ADDRESS,
                    &[0, 1, 0x33, 0x26, 0x2b, 0x12, 0xa4, 0x43],
                ),
            ],
        );
        assert_eq!(
            stun_binding_response(&m),
            Ok(([7; 12], "10.0.0.1:4660".parse().unwrap()))
        );
        // Declared body past the datagram; attribute past the declared body.
        let mut m = stun(STUN_BINDING_SUCCESS, &[(SOFTWARE, b"rheomesh")]);
        m.pop();
        assert_eq!(stun_binding_response(&m), Err(BindingError::Truncated));
        let mut m = stun(STUN_BINDING_SUCCESS, &[(SOFTWARE, b"rheomesh")]);
        m[23] = 0x20;
        assert_eq!(stun_binding_response(&m), Err(BindingError::Truncated));
    }

    #[test]
    fn binding_response_ipv6() {
        // RFC 5769 §2.3: XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853.
        let txid = [
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ];
        let mut m = vec![0x01, 0x01, 0x00, 0x18, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&txid);
        m.extend_from_slice(&[
            0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3,
            0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        ]);
        assert_eq!(
            stun_binding_response(&m),
            Ok((
                txid,
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            ))
        );
        for n in 0..m.len() {
            assert_eq!(
                stun_binding_response(&m[..n]),
                Err(BindingError::Truncated),
                "len {n}"
            );
        }
    }
}
