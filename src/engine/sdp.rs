//! SDP text helpers for what str0m's SDP API does not give us. They read the SDP *text*;
//! str0m parses and validates the same SDP separately, so nothing here has to be a full
//! parser, and each helper tolerates garbage (it never panics, and a malformed SDP is
//! rejected by str0m anyway).
//!
//! What str0m 0.25 does not expose, and why each helper exists:
//! - [`check_sdp_limits`]: str0m parses whatever it is given; the size and m-line limits
//!   are checked on the text first, so a hostile SDP costs no parsing.
//! - [`parse_offer`] / [`parse_answer`]: the parse itself, on low-priority parse threads
//!   (one per two cores), so the shard only applies the result.
//! - [`answer_in_offer_order`]: str0m orders an answer's payload types by its own codec
//!   configuration, not by the offerer's preference; we reorder the `m=` lines.
//! - [`sdp_mids`]: the m-line order of an offer or answer (str0m's `SdpOffer`/`SdpAnswer`
//!   do not expose their m-lines), to check that an answer matches our pending offer.
//! - [`sdp_msids`]: the remote `a=msid` per m-line (after negotiation str0m's
//!   `Media::track_id` may hold our own msid).
//! - [`stop_m_lines`]: removing m-lines while keeping the BUNDLE tag alive (str0m would
//!   reject the tagged m-line like any other, and browsers then tear the transport down).

use std::sync::OnceLock;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, Mid};

use crate::error::NegotiationError;

/// A job for the parse threads.
type ParseJob = Box<dyn FnOnce() + Send>;

/// The SDP parse threads: one per two cores, started on first use, at a lower scheduling
/// priority than everything else (nice 10 on Linux). A 200 KB offer takes milliseconds
/// to parse and a client may send many: the shards, one per core, keep the CPU for
/// everybody's media, and the parses get what is left.
fn parse_threads() -> &'static std::sync::mpsc::Sender<ParseJob> {
    static JOBS: OnceLock<std::sync::mpsc::Sender<ParseJob>> = OnceLock::new();
    JOBS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<ParseJob>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..(cores / 2).max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("rheomesh-sdp-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("starting an SDP parse thread: {e}");
            }
        }
        tx
    })
}

/// Lower the calling thread's scheduling priority (Linux: per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with PRIO_PROCESS and id 0 changes the calling thread's nice
    // value on Linux; it reads no memory of ours.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// Check `sdp`'s limits and parse it on the parse threads ([`parse_threads`]): parsing is
/// the costliest part of accepting a large SDP, and a shard is busy with everybody's media.
async fn parse_off_shard<T: Send + 'static>(
    sdp: String,
    parse: fn(&str) -> Result<T, NegotiationError>,
) -> Result<(String, T), NegotiationError> {
    check_sdp_limits(&sdp)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: ParseJob = Box::new(move || {
        // A parser panic (a str0m bug a hostile SDP found) fails this negotiation only, and
        // the parse thread lives on.
        let parsed = std::panic::catch_unwind(|| parse(&sdp)).unwrap_or_else(|_| {
            Err(NegotiationError::SessionFailed(
                "the SDP parser panicked".into(),
            ))
        });
        let _ = tx.send(parsed.map(|parsed| (sdp, parsed)));
    });
    if parse_threads().send(job).is_err() {
        return Err(NegotiationError::SessionFailed(
            "no SDP parse thread".into(),
        ));
    }
    rx.await
        .map_err(|_| NegotiationError::SessionFailed("SDP parsing failed".into()))?
}

/// Parse an offer (its limits checked first), where the caller is.
pub(crate) fn parse_offer_here(sdp: &str) -> Result<SdpOffer, NegotiationError> {
    check_sdp_limits(sdp)?;
    SdpOffer::from_sdp_string(sdp).map_err(|e| NegotiationError::InvalidSdp(e.to_string()))
}

/// Parse an answer (its limits checked first), where the caller is.
pub(crate) fn parse_answer_here(sdp: &str) -> Result<SdpAnswer, NegotiationError> {
    check_sdp_limits(sdp)?;
    SdpAnswer::from_sdp_string(sdp).map_err(|e| NegotiationError::InvalidSdp(e.to_string()))
}

/// An offer's text and its parse, made on a parse thread (see [`parse_off_shard`]).
pub(crate) async fn parse_offer(sdp: String) -> Result<(String, SdpOffer), NegotiationError> {
    parse_off_shard(sdp, parse_offer_here).await
}

/// An answer's text and its parse, made on a parse thread (see [`parse_off_shard`]).
pub(crate) async fn parse_answer(sdp: String) -> Result<(String, SdpAnswer), NegotiationError> {
    parse_off_shard(sdp, parse_answer_here).await
}

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
