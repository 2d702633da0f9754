//! `application/trickle-ice-sdpfrag` bodies (RFC 8840), as WHIP and WHEP `PATCH` requests
//! carry them: ICE credentials (session level, or in the first media section) and candidates
//! per media section (`a=mid`). Also the few SDP lines of an offer or answer the WHIP
//! resource needs (credentials, candidates). Reads text only; never allocates per byte.

/// Longest fragment accepted (a fragment names a few candidates; browsers send < 2 KiB).
pub const MAX_SDPFRAG: usize = 16 * 1024;

/// What a `PATCH` fragment says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpFrag {
    /// `a=ice-ufrag`, if present: different from the current one means an ICE restart.
    pub ufrag: Option<String>,
    /// `a=ice-pwd`, if present.
    pub pwd: Option<String>,
    /// The candidates: (`a=mid` of their media section, or `None` before any, the value of
    /// the `a=candidate:` attribute without `a=`).
    pub candidates: Vec<(Option<String>, String)>,
    /// `a=end-of-candidates` was present.
    pub end_of_candidates: bool,
}

/// Why a fragment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpFragError {
    /// Over [`MAX_SDPFRAG`] bytes.
    #[error("fragment larger than {MAX_SDPFRAG} bytes")]
    TooLarge,
    /// A line that is neither `m=`, `a=` nor empty (line number from 1).
    #[error("line {0} is not an SDP attribute or media line")]
    BadLine(usize),
    /// An ICE ufrag or password with characters ICE does not allow, or empty.
    #[error("bad ICE credentials")]
    BadCredentials,
    /// Only one of `a=ice-ufrag` and `a=ice-pwd`.
    #[error("a=ice-ufrag and a=ice-pwd must come together")]
    HalfCredentials,
    /// A candidate attribute that is empty or has control characters.
    #[error("bad candidate on line {0}")]
    BadCandidate(usize),
}

/// Parse a `PATCH` body.
pub fn parse(body: &str) -> Result<SdpFrag, SdpFragError> {
    if body.len() > MAX_SDPFRAG {
        return Err(SdpFragError::TooLarge);
    }
    let mut frag = SdpFrag::default();
    let mut mid: Option<String> = None;
    for (n, line) in body.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if line.starts_with("m=") {
            mid = None;
            continue;
        }
        let Some(attr) = line.strip_prefix("a=") else {
            return Err(SdpFragError::BadLine(n + 1));
        };
        if let Some(v) = attr.strip_prefix("ice-ufrag:") {
            frag.ufrag = Some(credential(v)?);
        } else if let Some(v) = attr.strip_prefix("ice-pwd:") {
            frag.pwd = Some(credential(v)?);
        } else if let Some(v) = attr.strip_prefix("mid:") {
            mid = Some(v.trim().to_string());
        } else if attr.starts_with("candidate:") {
            if attr.len() <= "candidate:".len() || attr.chars().any(char::is_control) {
                return Err(SdpFragError::BadCandidate(n + 1));
            }
            frag.candidates.push((mid.clone(), attr.to_string()));
        } else if attr == "end-of-candidates" {
            frag.end_of_candidates = true;
        }
        // Other attributes (ice-options, group:BUNDLE, …) say nothing WHIP acts on.
    }
    if frag.ufrag.is_some() != frag.pwd.is_some() {
        return Err(SdpFragError::HalfCredentials);
    }
    Ok(frag)
}

/// ICE credentials are `ice-char`s (RFC 8839: ALPHA / DIGIT / "+" / "/"), 1 to 256.
fn credential(v: &str) -> Result<String, SdpFragError> {
    let v = v.trim();
    let ok = !v.is_empty()
        && v.len() <= 256
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok {
        Ok(v.to_string())
    } else {
        Err(SdpFragError::BadCredentials)
    }
}

/// The first `a=ice-ufrag` and `a=ice-pwd` of an SDP.
pub fn credentials(sdp: &str) -> Option<(&str, &str)> {
    let find = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end_matches('\r').strip_prefix(key))
            .map(str::trim)
    };
    Some((find("a=ice-ufrag:")?, find("a=ice-pwd:")?))
}

/// `sdp` with every `a=ice-ufrag` / `a=ice-pwd` line replaced by `ufrag` / `pwd`: the
/// offer a WHIP client would have sent for its ICE restart.
pub fn with_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// A fragment carrying `answer`'s ICE credentials and, per media section, its `a=mid` and
/// candidates: the body of the reply to an ICE restart.
pub fn from_answer(answer: &str) -> String {
    let mut out = String::new();
    if let Some((ufrag, pwd)) = credentials(answer) {
        out.push_str(&format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n"));
    }
    for line in answer.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("m=")
            || line.starts_with("a=mid:")
            || line.starts_with("a=candidate:")
            || line == "a=end-of-candidates"
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_trickle_fragment() {
        let body = "a=ice-options:trickle ice2\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
                    a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
                    a=end-of-candidates\r\n";
        let f = parse(body).unwrap();
        assert_eq!(f.ufrag, None);
        assert_eq!(
            f.candidates,
            vec![(
                Some("0".into()),
                "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into()
            )]
        );
        assert!(f.end_of_candidates);
    }

    #[test]
    fn parses_an_ice_restart_and_refuses_bad_fragments() {
        let f = parse("a=ice-ufrag:abcd\na=ice-pwd:0123456789abcdef012345\n").unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("abcd"));
        assert_eq!(
            parse("a=ice-ufrag:abcd\n"),
            Err(SdpFragError::HalfCredentials)
        );
        assert_eq!(parse("hello\n"), Err(SdpFragError::BadLine(1)));
        assert_eq!(
            parse("a=ice-ufrag:a b\na=ice-pwd:x\n"),
            Err(SdpFragError::BadCredentials)
        );
        assert_eq!(parse("a=candidate:\n"), Err(SdpFragError::BadCandidate(1)));
        assert_eq!(
            parse(&"a=x\n".repeat(MAX_SDPFRAG)),
            Err(SdpFragError::TooLarge)
        );
    }

    #[test]
    fn restart_offer_and_reply_fragment() {
        let offer = "v=0\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\nm=video 9 UDP 96\r\na=mid:0\r\n";
        let new = with_credentials(offer, "new", "newpwd");
        assert_eq!(credentials(&new), Some(("new", "newpwd")));
        let answer =
            "v=0\r\nm=video 9 UDP 96\r\na=mid:0\r\na=ice-ufrag:srv\r\na=ice-pwd:srvpwd\r\n\
                      a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n";
        let frag = from_answer(answer);
        assert_eq!(parse(&frag).unwrap().ufrag.as_deref(), Some("srv"));
        assert!(frag.contains("a=mid:0\r\na=candidate:1 1 udp"));
    }
}
