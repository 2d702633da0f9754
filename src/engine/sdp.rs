//! SDP text helpers for what str0m's SDP API does not give us. They read the SDP *text*;
//! str0m parses and validates the same SDP separately, so nothing here has to be a full
//! parser, and each helper tolerates garbage (it never panics, and a malformed SDP is
//! rejected by str0m anyway).
//!
//! What str0m 0.25 does not expose, and why each helper exists:
//! - [`check_sdp_limits`]: str0m parses whatever it is given; the size and m-line limits
//!   are checked on the text first, so a hostile SDP costs no parsing.
//! - [`answer_in_offer_order`]: str0m orders an answer's payload types by its own codec
//!   configuration, not by the offerer's preference; we reorder the `m=` lines.
//! - [`sdp_mids`]: the m-line order of an offer or answer (str0m's `SdpOffer`/`SdpAnswer`
//!   do not expose their m-lines), to check that an answer matches our pending offer.
//! - [`sdp_msids`]: the remote `a=msid` per m-line (after negotiation str0m's
//!   `Media::track_id` may hold our own msid).
//! - [`stop_m_lines`]: removing m-lines while keeping the BUNDLE tag alive (str0m would
//!   reject the tagged m-line like any other, and browsers then tear the transport down).

use str0m::media::{Direction, Mid};

use crate::error::NegotiationError;

/// Largest SDP accepted (bytes). Browser offers with dozens of tracks stay far below.
pub(crate) const MAX_SDP_LEN: usize = 256 * 1024;
/// Most m-lines accepted in one SDP.
pub(crate) const MAX_MLINES: usize = 128;

/// Reject SDPs that are too large or have too many m-lines before parsing them.
pub(crate) fn check_sdp_limits(sdp: &str) -> Result<(), NegotiationError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(NegotiationError::TooLarge(sdp.len()));
    }
    let mlines = sdp.lines().filter(|l| l.starts_with("m=")).count();
    if mlines > MAX_MLINES {
        return Err(NegotiationError::TooManyMedia(mlines));
    }
    Ok(())
}

/// The mids of an SDP's m-lines, in order (from `a=mid:` lines).
pub(crate) fn sdp_mids(sdp: &str) -> Vec<Mid> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(Mid::from)
        .collect()
}

/// `(mid, stream id, track id)` of each m-section with an `a=msid` line, read from the
/// remote SDP text (str0m's `Media::track_id` may hold our own msid after negotiation).
pub(crate) fn sdp_msids(sdp: &str) -> Vec<(Mid, String, String)> {
    let mut out = Vec::new();
    let mut mid: Option<Mid> = None;
    let mut msid: Option<(String, String)> = None;
    let mut flush = |mid: &mut Option<Mid>, msid: &mut Option<(String, String)>| {
        if let (Some(m), Some((s, t))) = (mid.take(), msid.take()) {
            out.push((m, s, t));
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            flush(&mut mid, &mut msid);
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(Mid::from(m));
        } else if let Some(v) = line.strip_prefix("a=msid:") {
            let mut it = v.split_whitespace();
            if let (Some(s), Some(t)) = (it.next(), it.next()) {
                msid = Some((s.to_string(), t.to_string()));
            }
        }
    }
    flush(&mut mid, &mut msid);
    out
}

/// Put the payload types of each m-line of our answer in the order the offer listed them,
/// so the offerer's codec preference (e.g. VP9 first) decides what it sends. str0m orders
/// answers by its own codec configuration; the set of payload types is unchanged.
pub(crate) fn answer_in_offer_order(offer: &str, answer: &str) -> String {
    fn sections(sdp: &str) -> Vec<(Option<String>, Vec<String>)> {
        // (mid, fmt list of the m= line) per m-section, in order.
        let mut out: Vec<(Option<String>, Vec<String>)> = Vec::new();
        for line in sdp.lines() {
            let line = line.trim_end();
            if let Some(m) = line.strip_prefix("m=") {
                out.push((None, m.split(' ').skip(3).map(str::to_string).collect()));
            } else if let (Some(mid), Some(last)) = (line.strip_prefix("a=mid:"), out.last_mut()) {
                last.0 = Some(mid.to_string());
            }
        }
        out
    }
    let offered = sections(offer);
    let answered = sections(answer);
    let mut idx = 0;
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let eol = &line[body.len()..];
        if let Some(m) = body.strip_prefix("m=") {
            let mid = answered.get(idx).and_then(|(mid, _)| mid.clone());
            idx += 1;
            let order = offered
                .iter()
                .find(|(omid, _)| omid.is_some() && *omid == mid)
                .map(|(_, fmts)| fmts.clone());
            let parts: Vec<&str> = m.split(' ').collect();
            if let (Some(order), true) = (order, parts.len() > 3) {
                let mut fmts: Vec<&str> = parts[3..].to_vec();
                fmts.sort_by_key(|f| order.iter().position(|o| o == f).unwrap_or(usize::MAX));
                out.push_str("m=");
                out.push_str(&parts[..3].join(" "));
                for f in fmts {
                    out.push(' ');
                    out.push_str(f);
                }
                out.push_str(eol);
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// Take removed down-tracks' m-lines out of the session: rejected (port 0), except the
/// BUNDLE tag, which only goes inactive (see `Session::anchor_mid`).
pub(crate) fn stop_m_lines(api: &mut str0m::change::SdpApi<'_>, mids: &[Mid], anchor: Option<Mid>) {
    for &mid in mids {
        if Some(mid) == anchor {
            api.set_direction(mid, Direction::Inactive);
        } else {
            api.stop_media(mid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_follows_offer_codec_order() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97\r\na=mid:1\r\n";
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\na=mid:1\r\na=x\r\n";
        let fixed = answer_in_offer_order(offer, answer);
        assert!(
            fixed.contains("m=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97\r\n"),
            "{fixed}"
        );
        assert!(fixed.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"));
        assert!(fixed.ends_with("a=x\r\n"));
        assert_eq!(fixed.len(), answer.len());
        // Garbage in, no panic, unchanged.
        assert_eq!(answer_in_offer_order("x", "m=\n"), "m=\n");
    }

    #[test]
    fn mids_and_msids_are_read_per_section() {
        let sdp = "v=0\r\nm=audio 9 X 1\r\na=mid:a\r\na=msid:s t1\r\nm=video 9 X 2\r\na=mid:b\r\n";
        assert_eq!(sdp_mids(sdp), vec![Mid::from("a"), Mid::from("b")]);
        let m = sdp_msids(sdp);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].2, "t1");
    }
}
