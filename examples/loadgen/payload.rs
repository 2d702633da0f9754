//! The synthetic VP8 payload the publishers send.
//!
//! ```text
//! [0]      VP8 payload descriptor 0x10 (X=0, N=0, S=1, PID=0)            RFC 7741 §4.2
//! [1..4]   VP8 frame tag: P bit 0 = keyframe (0x10 0x00 0x00 / 0x11 ...)  RFC 7741 §4.3
//! [4..11]  keyframe: start code 9d 01 2a, width 320, height 240 (LE u16);
//!          inter frame: zeros
//! [11..15] magic "RMLG"
//! [15..19] publisher index, u32 BE
//! [19..27] per-publisher packet counter, u64 BE (survives SFU sequence-number rewriting)
//! [27..35] send time, µs since the process epoch, u64 BE
//! [35..]   filler: byte i = (i as u8) ^ 0x5a, up to the --payload size
//! ```
//!
//! Every packet is a whole frame (the sender sets the marker bit). The parser skips
//! descriptor extensions (an SFU may add a picture id) and checks the magic, the length
//! of what follows it and the last filler byte.

/// Bytes before the magic in what the publisher sends.
const HEADER: usize = 11;
const MAGIC: &[u8; 4] = b"RMLG";
/// Bytes from the magic to the end of the send time.
const BODY_FIXED: usize = 4 + 4 + 8 + 8;
/// Smallest payload that holds all fields.
pub const MIN_PAYLOAD: usize = HEADER + BODY_FIXED;

fn filler(i: usize) -> u8 {
    (i as u8) ^ 0x5a
}

/// A payload of `len` bytes with the filler written; fields are set by [`stamp`].
pub fn template(len: usize) -> Vec<u8> {
    let len = len.max(MIN_PAYLOAD);
    let mut v = vec![0u8; len];
    v[0] = 0x10;
    v[HEADER..HEADER + 4].copy_from_slice(MAGIC);
    for (i, b) in v[MIN_PAYLOAD..].iter_mut().enumerate() {
        *b = filler(i);
    }
    v
}

/// Write the frame header and the fields into a copy of [`template`].
pub fn stamp(p: &mut [u8], keyframe: bool, publisher: u32, counter: u64, send_us: u64) {
    if keyframe {
        // size0=0, show_frame=1, version=0, P=0; start code; 320x240.
        p[1..11].copy_from_slice(&[0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]);
    } else {
        p[1..11].copy_from_slice(&[0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
    let b = HEADER + 4;
    p[b..b + 4].copy_from_slice(&publisher.to_be_bytes());
    p[b + 4..b + 12].copy_from_slice(&counter.to_be_bytes());
    p[b + 12..b + 20].copy_from_slice(&send_us.to_be_bytes());
}

/// What a subscriber reads back out of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub publisher: u32,
    pub counter: u64,
    pub send_us: u64,
    pub keyframe: bool,
}

/// Parse a payload built by [`stamp`]; `None` if it is not intact. `sent_len` is the
/// payload size the publishers use.
pub fn parse(p: &[u8], sent_len: usize) -> Option<Parsed> {
    let b0 = *p.first()?;
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return None;
    }
    let mut idx = 1;
    if b0 & 0x80 != 0 {
        let ext = *p.get(idx)?;
        idx += 1;
        if ext & 0x80 != 0 {
            idx += if *p.get(idx)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            idx += 1;
        }
        if ext & 0x30 != 0 {
            idx += 1;
        }
    }
    let keyframe = *p.get(idx)? & 0x01 == 0;
    let body = p.get(idx + HEADER - 1..)?;
    let sent_len = sent_len.max(MIN_PAYLOAD);
    if body.len() != sent_len - HEADER || &body[..4] != MAGIC {
        return None;
    }
    if body.len() > BODY_FIXED && body[body.len() - 1] != filler(body.len() - BODY_FIXED - 1) {
        return None;
    }
    Some(Parsed {
        publisher: u32::from_be_bytes(body[4..8].try_into().ok()?),
        counter: u64::from_be_bytes(body[8..16].try_into().ok()?),
        send_us: u64::from_be_bytes(body[16..24].try_into().ok()?),
        keyframe,
    })
}

/// Checks run once at startup (examples have no test harness here): a payload parses
/// back, with and without a descriptor extension added by an SFU.
pub fn self_check() {
    for len in [MIN_PAYLOAD, 100, 1100] {
        for key in [true, false] {
            let mut p = template(len);
            stamp(&mut p, key, 7, 123_456, 987_654_321);
            assert_eq!(p.len(), len);
            assert_eq!(str0m::format::detect_vp8_keyframe(&p), key);
            let want = Parsed {
                publisher: 7,
                counter: 123_456,
                send_us: 987_654_321,
                keyframe: key,
            };
            assert_eq!(parse(&p, len), Some(want));
            // X=1, I=1, M=1: a 15-bit picture id inserted after the first byte.
            let mut ext = vec![0x90, 0x80, 0x81, 0x23];
            ext.extend_from_slice(&p[1..]);
            assert_eq!(parse(&ext, len), Some(want));
            assert_eq!(parse(&p[..len - 1], len), None);
        }
    }
}
