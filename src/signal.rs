//! Signaling values exchanged with the browser: session descriptions and ICE candidates.
//!
//! These serialize to exactly the JSON a browser produces and consumes
//! (`RTCSessionDescriptionInit`, `RTCIceCandidateInit`), so a server can pass them through
//! its own signaling unchanged. This module owns only the value types and their
//! conversions; it never talks to the engine.

use serde::{Deserialize, Serialize};

/// The `type` of a [`SessionDescription`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
    /// A provisional answer (not used by Rheomesh, accepted for completeness).
    Pranswer,
    /// A rollback (not used by Rheomesh, accepted for completeness).
    Rollback,
}

/// A session description: `{"type": "offer" | "answer", "sdp": "v=0..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// Whether this is an offer or an answer.
    #[serde(rename = "type")]
    pub sdp_type: SdpType,
    /// The SDP text.
    pub sdp: String,
}

impl SessionDescription {
    /// An offer with the given SDP text.
    pub fn offer(sdp: impl Into<String>) -> Self {
        Self {
            sdp_type: SdpType::Offer,
            sdp: sdp.into(),
        }
    }

    /// An answer with the given SDP text.
    pub fn answer(sdp: impl Into<String>) -> Self {
        Self {
            sdp_type: SdpType::Answer,
            sdp: sdp.into(),
        }
    }
}

/// An ICE candidate as the browser exchanges it:
/// `{"candidate": "candidate:...", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": null}`.
///
/// An empty `candidate` string means end of candidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidateInit {
    /// The `candidate:` attribute value (without the `a=` prefix).
    pub candidate: String,
    /// The media stream identification tag the candidate belongs to.
    #[serde(default)]
    pub sdp_mid: Option<String>,
    /// The index of the m-line the candidate belongs to.
    #[serde(default, rename = "sdpMLineIndex")]
    pub sdp_mline_index: Option<u16>,
    /// The ICE username fragment the candidate belongs to.
    #[serde(default)]
    pub username_fragment: Option<String>,
}

/// A local (server-side) ICE candidate, handed to `on_ice_candidate` callbacks.
///
/// Call [`IceCandidate::to_json`] to get the [`IceCandidateInit`] to send to the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCandidate {
    pub(crate) candidate: String,
    pub(crate) sdp_mid: Option<String>,
    pub(crate) ufrag: Option<String>,
}

/// Error converting an [`IceCandidate`] to JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("candidate could not be converted: {0}")]
pub struct CandidateError(pub String);

impl IceCandidate {
    /// The candidate attribute value, e.g. `candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host`.
    pub fn candidate(&self) -> &str {
        &self.candidate
    }

    /// The browser-facing form of this candidate.
    ///
    /// Returns a `Result` to keep the original Rheomesh signature; it does not fail for
    /// candidates produced by Rheomesh.
    pub fn to_json(&self) -> Result<IceCandidateInit, CandidateError> {
        if self.candidate.is_empty() {
            return Err(CandidateError("empty candidate".into()));
        }
        Ok(IceCandidateInit {
            candidate: self.candidate.clone(),
            sdp_mid: self.sdp_mid.clone(),
            sdp_mline_index: Some(0),
            username_fragment: self.ufrag.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_description_json_matches_browser() {
        let d = SessionDescription::offer("v=0\r\n");
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, r#"{"type":"offer","sdp":"v=0\r\n"}"#);
        let back: SessionDescription =
            serde_json::from_str(r#"{"type":"answer","sdp":"x"}"#).unwrap();
        assert_eq!(back, SessionDescription::answer("x"));
    }

    #[test]
    fn candidate_init_json_matches_browser() {
        let j = r#"{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null}"#;
        let c: IceCandidateInit = serde_json::from_str(j).unwrap();
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(c.sdp_mline_index, Some(0));
        assert_eq!(serde_json::to_string(&c).unwrap(), j);
        // Browsers may omit fields.
        let c: IceCandidateInit = serde_json::from_str(r#"{"candidate":""}"#).unwrap();
        assert!(c.candidate.is_empty());
    }
}
