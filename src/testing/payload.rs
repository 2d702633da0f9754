//! The synthetic media payload every test client sends: its layout, a zero-allocation
//! stamp into a prepared template, and the parser that checks it on arrival.
//!
//! ```text
//! video (VP8, RFC 7741):
//! [0]      payload descriptor 0x10 (X=0, N=0, S=1, PID=0)                §4.2
//! [1..4]   frame tag, P bit 0 = keyframe (10 00 00 / 11 00 00)           §4.3
//! [4..11]  keyframe: start code 9d 01 2a, width and height (LE u16; 320×240 unless the
//!          sender sets another size);
//!          inter frame: zeros
//! [11..]   body
//! audio (Opus): the body only
//!
//! body:
//! [0..4]   publisher id, u32 BE
//! [4..12]  per-track packet counter, u64 BE (survives SFU sequence-number rewriting)
//! [12..20] send time in µs (the sender's clock), u64 BE
//! [20..24] check: a hash of the four fields above, the keyframe flag and the body length
//! [24..]   filler: byte i = (i as u8) ^ 0x5a
//! ```
//!
//! The server inspects the VP8 header for keyframes (S=1, PID=0, P bit), as it would a
//! browser's. The parser skips descriptor extensions (an SFU may add a picture id) and
//! refuses anything whose frame header, check or filler is not exactly what was sent, so
//! truncation, extension and corruption anywhere in the payload are detected.

use str0m::media::MediaKind;

/// VP8 descriptor byte plus the 10-byte frame header before the body.
const VP8_HEADER: usize = 11;
/// The fixed part of the body: publisher, counter, send time, check.
const BODY_FIXED: usize = 4 + 8 + 8 + 4;
const VP8_KEY: [u8; 10] = [0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
const VP8_INTER: [u8; 10] = [0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Smallest video payload that holds every field.
pub const MIN_VIDEO_LEN: usize = VP8_HEADER + BODY_FIXED;
/// Smallest audio payload that holds every field.
pub const MIN_AUDIO_LEN: usize = BODY_FIXED;

/// What a payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Who sent it (loadgen's publisher index; 0 where nobody asks).
    pub publisher: u32,
    /// The sender's per-track packet counter.
    pub counter: u64,
    /// Send time in µs of the sender's clock.
    pub send_us: u64,
    /// A VP8 keyframe (always false for audio).
    pub keyframe: bool,
}

/// The smallest payload of `kind`.
pub fn min_len(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Video => MIN_VIDEO_LEN,
        MediaKind::Audio => MIN_AUDIO_LEN,
    }
}

fn header_len(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Video => VP8_HEADER,
        MediaKind::Audio => 0,
    }
}

fn filler(i: usize) -> u8 {
    (i as u8) ^ 0x5a
}

fn check(s: &Stamp, body_len: usize) -> u32 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    let last = ((body_len as u64) << 1) | u64::from(s.keyframe);
    for v in [u64::from(s.publisher), s.counter, s.send_us, last] {
        h = (h ^ v).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
    }
    (h >> 32) as u32
}

/// A payload of `len` bytes (at least [`min_len`]) with the descriptor and filler in
/// place; [`stamp`] writes the fields into (a copy of) it.
pub fn template(kind: MediaKind, len: usize) -> Vec<u8> {
    let len = len.max(min_len(kind));
    let mut v = vec![0u8; len];
    let body = header_len(kind);
    if kind == MediaKind::Video {
        v[0] = 0x10;
    }
    for (i, b) in v[body + BODY_FIXED..].iter_mut().enumerate() {
        *b = filler(i);
    }
    v
}

/// Write `s` into `p`, a copy of [`template`] of the same kind. Allocates nothing.
pub fn stamp(p: &mut [u8], kind: MediaKind, s: &Stamp) {
    let b = header_len(kind);
    let keyframe = kind == MediaKind::Video && s.keyframe;
    if kind == MediaKind::Video {
        p[1..VP8_HEADER].copy_from_slice(if keyframe { &VP8_KEY } else { &VP8_INTER });
    }
    let s = Stamp { keyframe, ..*s };
    let check = check(&s, p.len() - b);
    p[b..b + 4].copy_from_slice(&s.publisher.to_be_bytes());
    p[b + 4..b + 12].copy_from_slice(&s.counter.to_be_bytes());
    p[b + 12..b + 20].copy_from_slice(&s.send_us.to_be_bytes());
    p[b + 20..b + 24].copy_from_slice(&check.to_be_bytes());
}

/// Make a stamped video keyframe announce picture size `(width, height)` instead of the
/// template's 320×240 (the server ranks simulcast encodings by it). Not covered by the
/// check: [`parse`] accepts any size.
pub fn set_key_size(p: &mut [u8], (w, h): (u16, u16)) {
    if p.len() >= VP8_HEADER {
        p[7..9].copy_from_slice(&(w & 0x3fff).to_le_bytes());
        p[9..11].copy_from_slice(&(h & 0x3fff).to_le_bytes());
    }
}

/// A stamped payload of `len` bytes (a fresh [`template`] with [`stamp`] applied).
pub fn build(kind: MediaKind, len: usize, s: &Stamp) -> Vec<u8> {
    let mut p = template(kind, len);
    stamp(&mut p, kind, s);
    p
}

/// Where the VP8 frame header starts: after the descriptor and its extensions.
fn vp8_header_at(p: &[u8]) -> Option<usize> {
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
    Some(idx)
}

/// Read a payload of `kind` back; `None` unless it is intact (see the module docs).
pub fn parse(p: &[u8], kind: MediaKind) -> Option<Stamp> {
    let (keyframe, body) = match kind {
        MediaKind::Video => {
            let at = vp8_header_at(p)?;
            let header = p.get(at..at + VP8_HEADER - 1)?;
            let keyframe = header[0] & 0x01 == 0;
            // A keyframe's size (the last four header bytes) may be any
            // ([`set_key_size`]).
            let same = if keyframe {
                header[..6] == VP8_KEY[..6]
            } else {
                header == VP8_INTER
            };
            if !same || keyframe != str0m::format::detect_vp8_keyframe(p) {
                return None;
            }
            (keyframe, &p[at + VP8_HEADER - 1..])
        }
        MediaKind::Audio => (false, p),
    };
    let fixed = body.get(..BODY_FIXED)?;
    let word = |r: std::ops::Range<usize>| -> u64 {
        fixed[r].iter().fold(0u64, |a, b| (a << 8) | u64::from(*b))
    };
    let s = Stamp {
        publisher: word(0..4) as u32,
        counter: word(4..12),
        send_us: word(12..20),
        keyframe,
    };
    if word(20..24) as u32 != check(&s, body.len()) {
        return None;
    }
    let intact = body[BODY_FIXED..]
        .iter()
        .enumerate()
        .all(|(i, b)| *b == filler(i));
    intact.then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Stamp = Stamp {
        publisher: 7,
        counter: 123_456,
        send_us: 987_654_321,
        keyframe: true,
    };

    #[test]
    fn round_trip() {
        for kind in [MediaKind::Video, MediaKind::Audio] {
            for len in [min_len(kind), 100, 1100] {
                for keyframe in [true, false] {
                    let s = Stamp { keyframe, ..S };
                    let p = build(kind, len, &s);
                    assert_eq!(p.len(), len);
                    let want = Stamp {
                        keyframe: keyframe && kind == MediaKind::Video,
                        ..s
                    };
                    assert_eq!(parse(&p, kind), Some(want), "{kind:?} {len}");
                    if kind == MediaKind::Video {
                        assert_eq!(str0m::format::detect_vp8_keyframe(&p), keyframe);
                        assert_eq!(
                            crate::wire::codec::is_keyframe(crate::wire::codec::CodecKind::Vp8, &p),
                            keyframe
                        );
                        // X=1, I=1, M=1: a 15-bit picture id an SFU inserted.
                        let mut ext = vec![0x90, 0x80, 0x81, 0x23];
                        ext.extend_from_slice(&p[1..]);
                        assert_eq!(parse(&ext, kind), Some(want));
                    }
                }
            }
        }
    }

    #[test]
    fn stamping_a_template_again_replaces_every_field() {
        let mut p = template(MediaKind::Video, 200);
        stamp(&mut p, MediaKind::Video, &S);
        let s2 = Stamp {
            publisher: 1,
            counter: 2,
            send_us: 3,
            keyframe: false,
        };
        stamp(&mut p, MediaKind::Video, &s2);
        assert_eq!(p, build(MediaKind::Video, 200, &s2));
        assert_eq!(parse(&p, MediaKind::Video), Some(s2));
    }

    #[test]
    fn truncation_extension_and_corruption_are_refused_without_panics() {
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let p = build(kind, 120, &S);
            for n in 0..p.len() {
                assert_eq!(parse(&p[..n], kind), None, "{kind:?} cut to {n}");
            }
            let mut longer = p.clone();
            longer.push(filler(120 - min_len(kind)));
            assert_eq!(parse(&longer, kind), None);
            // S is a keyframe: its announced size (bytes 7..11) may be anything.
            let size = if kind == MediaKind::Video {
                7..11
            } else {
                0..0
            };
            for i in (0..p.len()).filter(|i| !size.contains(i)) {
                let mut bad = p.clone();
                bad[i] ^= 0x04;
                assert_eq!(parse(&bad, kind), None, "{kind:?} byte {i} flipped");
            }
            if kind == MediaKind::Video {
                let mut sized = p.clone();
                set_key_size(&mut sized, (1280, 720));
                assert_eq!(parse(&sized, kind), Some(S), "any keyframe size");
            }
            // Arbitrary bytes never panic.
            for n in 0..64 {
                let junk: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
                let _ = parse(&junk, kind);
            }
        }
    }
}
