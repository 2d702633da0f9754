//! The remote description as the client peer tracks it: each m-line's mid, kind, msid
//! track id and whether the remote side sends on it, read from the SDP text (str0m keeps
//! the msid it first saw for a mid; renegotiations may change it or stop the line).

use str0m::media::{MediaKind, Mid};

/// One m-line of a remote SDP.
#[derive(Debug, Clone)]
pub(super) struct RemoteLine {
    pub mid: Mid,
    pub kind: MediaKind,
    /// The msid track id (or, without `a=msid`, the one of an `a=ssrc … msid:` line).
    pub track_id: Option<String>,
    /// The remote direction includes sending (sendonly/sendrecv) and the port is not 0.
    pub remote_sends: bool,
}

/// The m-lines of `sdp`, in order.
pub(super) fn media_lines(sdp: &str) -> Vec<RemoteLine> {
    struct Cur {
        kind: MediaKind,
        port0: bool,
        mid: Option<String>,
        msid_track: Option<String>,
        ssrc_track: Option<String>,
        dir: Option<&'static str>,
    }
    let finish = |c: Cur, out: &mut Vec<RemoteLine>| {
        if let Some(mid) = c.mid {
            let dir = c.dir.unwrap_or("sendrecv");
            out.push(RemoteLine {
                mid: Mid::from(mid.as_str()),
                kind: c.kind,
                track_id: c.msid_track.or(c.ssrc_track),
                remote_sends: !c.port0 && (dir == "sendrecv" || dir == "sendonly"),
            });
        }
    };
    let mut out = Vec::new();
    let mut cur: Option<Cur> = None;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r').trim();
        if let Some(m) = line.strip_prefix("m=") {
            if let Some(c) = cur.take() {
                finish(c, &mut out);
            }
            let mut it = m.split_whitespace();
            let kind = match it.next() {
                Some("video") => MediaKind::Video,
                _ => MediaKind::Audio,
            };
            cur = Some(Cur {
                kind,
                port0: it.next() == Some("0"),
                mid: None,
                msid_track: None,
                ssrc_track: None,
                dir: None,
            });
            continue;
        }
        let Some(c) = cur.as_mut() else { continue };
        if let Some(v) = line.strip_prefix("a=mid:") {
            c.mid = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("a=msid:") {
            if let Some(t) = v.split_whitespace().nth(1) {
                c.msid_track = Some(t.to_string());
            }
        } else if let Some(v) = line.strip_prefix("a=ssrc:") {
            // a=ssrc:<ssrc> msid:<stream> <track>
            let track = v
                .split_once(' ')
                .and_then(|(_, rest)| rest.strip_prefix("msid:"))
                .and_then(|ms| ms.split_whitespace().nth(1));
            if let Some(t) = track {
                c.ssrc_track.get_or_insert_with(|| t.to_string());
            }
        } else {
            match line {
                "a=sendrecv" => c.dir = Some("sendrecv"),
                "a=sendonly" => c.dir = Some("sendonly"),
                "a=recvonly" => c.dir = Some("recvonly"),
                "a=inactive" => c.dir = Some("inactive"),
                _ => {}
            }
        }
    }
    if let Some(c) = cur.take() {
        finish(c, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_msid_ssrc_fallback_and_directions() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
                   a=msid:s a\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n\
                   a=ssrc:1 msid:s v\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n\
                   a=sendonly\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:3\r\na=recvonly\r\n";
        let l = media_lines(sdp);
        let got: Vec<_> = l
            .iter()
            .map(|l| {
                (
                    l.mid.to_string(),
                    l.kind,
                    l.track_id.clone(),
                    l.remote_sends,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("0".into(), MediaKind::Audio, Some("a".into()), true),
                ("1".into(), MediaKind::Video, Some("v".into()), true),
                ("2".into(), MediaKind::Video, None, false),
                ("3".into(), MediaKind::Audio, None, false),
            ]
        );
    }
}
