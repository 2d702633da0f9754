//! The relay control connection's frames: `u32` big-endian length, then a 32-byte
//! HMAC-SHA256 tag, then one JSON message ([`Msg`]). The tag covers the sender's
//! direction byte, the frame's sequence number (its index in that direction; never sent,
//! both ends count) and the JSON: a frame altered, replayed, reordered or sent the other
//! way fails. The two `Hello`s are tagged with the shared secret; every later frame with
//! the session key both ends derive from the secret and the two hellos' nonces
//! ([`session_key`]), so a recorded session replayed to a worker fails after its hello.
//! Confidentiality is not needed here: media and data go over DTLS-SRTP sessions whose
//! fingerprints these authenticated frames carry.

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};

/// Largest frame accepted (an offer with many tracks stays far below).
pub const MAX_FRAME: usize = 256 * 1024;
/// Length of the tag before the JSON.
pub const TAG_LEN: usize = 32;
/// The protocol version in `Hello`.
pub const VERSION: u32 = 1;

/// Who sent a frame: the connecting worker or the listening one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The worker that connected (the source of relayed tracks).
    Connector,
    /// The worker that accepted the connection.
    Listener,
}

impl Side {
    fn byte(self) -> u8 {
        match self {
            Side::Connector => b'C',
            Side::Listener => b'L',
        }
    }
}

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Msg {
    /// First frame each way: the version and a fresh random nonce (hex, 32 bytes).
    Hello {
        /// [`VERSION`].
        version: u32,
        /// 64 hex digits.
        nonce: String,
    },
    /// Open media session `session` into router `router` with the connector's offer.
    Open {
        /// Request id (echoed by the reply).
        req: u64,
        /// The connector's id for the session pair.
        session: u64,
        /// The listener's router id.
        router: String,
        /// The offer of the connector's relay transport.
        offer: String,
    },
    /// A new offer of session `session` (tracks added or removed).
    Offer {
        /// Request id.
        req: u64,
        /// Session id.
        session: u64,
        /// The offer.
        offer: String,
    },
    /// Publish track (or, `data`, data channel) `publisher_id` of session `session` in its
    /// router, once the offer (or the channel) carrying it is in place.
    Publish {
        /// Request id.
        req: u64,
        /// Session id.
        session: u64,
        /// The publisher id (same on both workers).
        publisher_id: String,
        /// A data channel, not a media track.
        data: bool,
    },
    /// Session `session` ends (its publishers are unpublished on the listener).
    Close {
        /// Session id.
        session: u64,
    },
    /// Liveness, answered by a `Reply`.
    Ping {
        /// Request id.
        req: u64,
    },
    /// The answer to a request.
    Reply {
        /// The request's id.
        req: u64,
        /// An answer SDP (`Open`, `Offer`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp: Option<String>,
        /// Why the request was refused; `None`: done.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than a tag, or over [`MAX_FRAME`].
    #[error("bad frame length {0}")]
    Length(usize),
    /// The tag does not match: wrong key, altered, replayed or reordered.
    #[error("frame authentication failed")]
    BadTag,
    /// Authentic but not a message this version knows.
    #[error("bad message: {0}")]
    BadMessage(String),
}

/// The per-connection key, from the shared secret and both hellos' nonces.
pub fn session_key(secret: &[u8], connector_nonce: &str, listener_nonce: &str) -> hmac::Key {
    let k = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(b"rheomesh relay v1 session key\0");
    ctx.update(connector_nonce.as_bytes());
    ctx.update(b"\0");
    ctx.update(listener_nonce.as_bytes());
    hmac::Key::new(hmac::HMAC_SHA256, ctx.sign().as_ref())
}

/// The key the hellos are tagged with.
pub fn hello_key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

fn tag(key: &hmac::Key, from: Side, seq: u64, json: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&[from.byte()]);
    ctx.update(&seq.to_be_bytes());
    ctx.update(json);
    ctx.sign()
}

/// The bytes of frame number `seq` from `from`: length, tag, JSON.
pub fn encode(key: &hmac::Key, from: Side, seq: u64, msg: &Msg) -> Vec<u8> {
    let json = serde_json::to_vec(msg).expect("relay messages serialize");
    seal(key, from, seq, &json)
}

/// The frame `encode` would make of `json`, whatever bytes they are: length, a valid tag,
/// the bytes. For the fuzz target, which must reach the parser behind the tag check.
#[doc(hidden)]
pub fn seal(key: &hmac::Key, from: Side, seq: u64, json: &[u8]) -> Vec<u8> {
    let t = tag(key, from, seq, json);
    let len = (TAG_LEN + json.len()) as u32;
    let mut out = Vec::with_capacity(4 + len as usize);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(t.as_ref());
    out.extend_from_slice(json);
    out
}

/// Check and read one frame's body (what follows the length): frame number `seq` from
/// `from`.
pub fn decode(key: &hmac::Key, from: Side, seq: u64, body: &[u8]) -> Result<Msg, FrameError> {
    if body.len() < TAG_LEN || body.len() > MAX_FRAME {
        return Err(FrameError::Length(body.len()));
    }
    let (given, json) = body.split_at(TAG_LEN);
    let expected = tag(key, from, seq, json);
    if aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_ref(), given).is_err() {
        return Err(FrameError::BadTag);
    }
    serde_json::from_slice(json).map_err(|e| FrameError::BadMessage(e.to_string()))
}

/// The frame length a length prefix announces, if acceptable.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let n = u32::from_be_bytes(prefix) as usize;
    if !(TAG_LEN..=MAX_FRAME).contains(&n) {
        return Err(FrameError::Length(n));
    }
    Ok(n)
}

/// A fresh nonce: 32 random bytes, hex.
pub fn nonce() -> String {
    let a: u128 = rand::random();
    let b: u128 = rand::random();
    format!("{a:032x}{b:032x}")
}

/// Whether `n` is a well-formed nonce (64 hex digits).
pub fn is_nonce(n: &str) -> bool {
    n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_fail_when_tampered_replayed_or_misdirected() {
        let key = session_key(b"secret", &nonce(), &nonce());
        let msg = Msg::Ping { req: 7 };
        let f = encode(&key, Side::Connector, 3, &msg);
        let body = &f[4..];
        assert_eq!(frame_len(f[..4].try_into().unwrap()).unwrap(), body.len());
        assert_eq!(decode(&key, Side::Connector, 3, body).unwrap(), msg);
        assert_eq!(
            decode(&key, Side::Connector, 4, body),
            Err(FrameError::BadTag),
            "replayed later"
        );
        assert_eq!(
            decode(&key, Side::Listener, 3, body),
            Err(FrameError::BadTag),
            "reflected"
        );
        let other = session_key(b"secreT", "a", "b");
        assert_eq!(
            decode(&other, Side::Connector, 3, body),
            Err(FrameError::BadTag)
        );
        let mut bad = body.to_vec();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(
            decode(&key, Side::Connector, 3, &bad),
            Err(FrameError::BadTag)
        );
        assert!(matches!(
            decode(&key, Side::Connector, 3, &[0; 8]),
            Err(FrameError::Length(8))
        ));
        assert!(frame_len((MAX_FRAME as u32 + 1).to_be_bytes()).is_err());
        assert!(is_nonce(&nonce()) && !is_nonce("xyz"));
    }
}
