//! A minimal STUN client for server-reflexive discovery: the shard sends a Binding Request
//! to a configured STUN server and reads its own public address from the success response.
//!
//! [`stun_binding_request`] builds a header-only Binding Request (RFC 8489 §5, §6);
//! [`stun_binding_response`] parses a Binding success response and its XOR-MAPPED-ADDRESS
//! (RFC 8489 §14.2) or MAPPED-ADDRESS (§14.1). Matching the transaction id, retries and
//! timeouts are the caller's job.

use super::stun::{
    attributes, be16, StunError, STUN_BINDING_REQUEST, STUN_HEADER_LEN, STUN_MAGIC_COOKIE,
};

/// STUN Binding success response (RFC 8489 §5: class 0b10, method 0x001).
const STUN_BINDING_SUCCESS: u16 = 0x0101;
/// MAPPED-ADDRESS (RFC 8489 §14.1).
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
/// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;

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
/// # Errors
///
/// [`StunError::NotStun`] / [`StunError::Truncated`] as for [`stun_local_ufrag`](super::stun_local_ufrag);
/// [`StunError::NotBindingRequest`] if it is not a Binding success response;
/// [`StunError::NoUsername`] (reused: "missing attribute") if no usable address is present.
pub fn stun_binding_response(buf: &[u8]) -> Result<([u8; 12], std::net::SocketAddr), StunError> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let header = buf.get(..STUN_HEADER_LEN).ok_or(StunError::Truncated)?;
    if header.first().is_none_or(|b| *b > 3) || header.get(4..8) != Some(&STUN_MAGIC_COOKIE[..]) {
        return Err(StunError::NotStun);
    }
    if be16(header, 0) != Some(STUN_BINDING_SUCCESS) {
        return Err(StunError::NotBindingRequest);
    }
    let msg_len = usize::from(be16(header, 2).ok_or(StunError::Truncated)?);
    let mut txid = [0u8; 12];
    txid.copy_from_slice(header.get(8..20).ok_or(StunError::Truncated)?);
    let body = buf
        .get(STUN_HEADER_LEN..STUN_HEADER_LEN + msg_len)
        .ok_or(StunError::Truncated)?;
    let parse_addr = |v: &[u8], xor: bool| -> Option<SocketAddr> {
        let family = *v.get(1)?;
        let mut port = be16(v, 2)?;
        if xor {
            port ^= 0x2112;
        }
        match family {
            0x01 => {
                let mut ip = [0u8; 4];
                ip.copy_from_slice(v.get(4..8)?);
                if xor {
                    for (b, k) in ip.iter_mut().zip(STUN_MAGIC_COOKIE) {
                        *b ^= k;
                    }
                }
                Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
            }
            0x02 => {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(v.get(4..20)?);
                if xor {
                    let key: Vec<u8> = STUN_MAGIC_COOKIE
                        .iter()
                        .chain(txid.iter())
                        .copied()
                        .collect();
                    for (b, k) in ip.iter_mut().zip(key) {
                        *b ^= k;
                    }
                }
                Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
            }
            _ => None,
        }
    };
    let mut mapped = None;
    for attr in attributes(body, StunError::Truncated) {
        let (attr_type, value) = attr?;
        match attr_type {
            ATTR_XOR_MAPPED_ADDRESS => {
                if let Some(a) = parse_addr(value, true) {
                    return Ok((txid, a));
                }
            }
            ATTR_MAPPED_ADDRESS => mapped = mapped.or_else(|| parse_addr(value, false)),
            _ => {}
        }
    }
    mapped.map(|a| (txid, a)).ok_or(StunError::NoUsername)
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
            Err(StunError::NotBindingRequest)
        );
    }
}
