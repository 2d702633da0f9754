//! The WebSocket messages of the example server (`PROTOCOL.md`): one JSON object per text
//! frame, tagged by `"action"`, camelCase fields. Pure data: parsing and serialization only.

use rheomesh::{IceCandidateInit, SdpType, SessionDescription};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every action a client may send, by name (used to tell "unknown action" from "bad fields").
const CLIENT_ACTIONS: &[&str] = &[
    "Ping",
    "PublisherInit",
    "SubscriberInit",
    "PublisherIce",
    "SubscriberIce",
    "Offer",
    "Publish",
    "StopPublish",
    "Subscribe",
    "Answer",
    "StopSubscribe",
    "SetPreferredLayer",
    "RestartICE",
    "Record",
    "StartRecording",
    "StopRecording",
    "PublishData",
    "StopPublishData",
    "SubscribeData",
    "StopSubscribeData",
    "SetName",
    "SetMuted",
];

/// A message from the browser.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "action", rename_all_fields = "camelCase")]
pub enum ClientMessage {
    Ping,
    PublisherInit,
    SubscriberInit,
    PublisherIce {
        candidate: IceCandidateInit,
    },
    SubscriberIce {
        candidate: IceCandidateInit,
    },
    Offer {
        sdp: SdpInput,
    },
    Publish {
        publisher_id: String,
    },
    StopPublish {
        publisher_id: String,
    },
    Subscribe {
        publisher_id: String,
    },
    Answer {
        sdp: SdpInput,
    },
    StopSubscribe {
        subscriber_id: String,
    },
    SetPreferredLayer {
        subscriber_id: String,
        #[serde(default)]
        sid: Option<u8>,
        #[serde(default)]
        tid: Option<u8>,
    },
    #[serde(rename = "RestartICE")]
    RestartIce,
    /// `publisherId`, or (an extension) `publisherIds`: several tracks in one SDP, e.g. a
    /// participant's audio and video for one receiver.
    Record {
        #[serde(default)]
        publisher_id: Option<String>,
        #[serde(default)]
        publisher_ids: Option<Vec<String>>,
    },
    StartRecording {
        publisher_id: String,
    },
    StopRecording {
        publisher_id: String,
    },
    /// Publish the data channel `label` the client opened on its publish connection.
    PublishData {
        label: String,
    },
    StopPublishData {
        publisher_id: String,
    },
    SubscribeData {
        publisher_id: String,
    },
    StopSubscribeData {
        subscriber_id: String,
    },
    /// Extension: this participant's display name, shown to the others.
    SetName {
        name: String,
    },
    /// Extension: one of this participant's tracks is muted (or unmuted) at the source; the
    /// others are told so.
    SetMuted {
        publisher_id: String,
        muted: bool,
    },
}

/// The `sdp` of `Offer` / `Answer`: a browser `RTCSessionDescriptionInit`
/// (`{"type","sdp"}`), or, leniently, the bare SDP text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SdpInput {
    Description(SessionDescription),
    Text(String),
}

impl SdpInput {
    /// The description; bare text gets `kind` as its type.
    pub fn into_description(self, kind: SdpType) -> SessionDescription {
        match self {
            SdpInput::Description(d) => d,
            SdpInput::Text(sdp) => SessionDescription {
                sdp_type: kind,
                sdp,
            },
        }
    }
}

/// A message to the browser.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all_fields = "camelCase")]
pub enum ServerMessage {
    Pong,
    Answer {
        sdp: SessionDescription,
    },
    Offer {
        sdp: SessionDescription,
    },
    PublisherIce {
        candidate: IceCandidateInit,
    },
    SubscriberIce {
        candidate: IceCandidateInit,
    },
    Published {
        publisher_ids: Vec<String>,
        /// Extension: the display name of the participant who published each id (only ids
        /// whose participant set one).
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        names: BTreeMap<String, String>,
        /// Extension: which of these ids are muted at the source.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        muted: Vec<String>,
    },
    /// Extension: a participant set its display name; `publisherIds` are its tracks.
    NameChanged {
        publisher_ids: Vec<String>,
        name: String,
    },
    /// Extension: a track was muted or unmuted at the source.
    Muted {
        publisher_id: String,
        muted: bool,
    },
    /// Extension: `StartRecording` succeeded; `file` is the recording's file name when the
    /// server records by itself (`--record-dir`).
    RecordingStarted {
        publisher_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<String>,
    },
    /// Extension: `StopRecording` succeeded (the file, if any, is finished).
    RecordingStopped {
        publisher_id: String,
    },
    Unpublished {
        publisher_id: String,
    },
    DataPublished {
        publisher_ids: Vec<String>,
    },
    DataUnpublished {
        publisher_id: String,
    },
    DataSubscribed {
        subscriber_id: String,
        /// Extension: the data publisher this subscription receives.
        publisher_id: String,
    },
    Subscribed {
        subscriber_id: String,
        /// Extension: the publisher this subscription receives.
        publisher_id: String,
    },
    /// Extension: the layer forwarded to a subscriber of a simulcast track changed.
    LayerChanged {
        subscriber_id: String,
        sid: u8,
        /// `None`: every temporal layer.
        tid: Option<u8>,
    },
    #[serde(rename = "RecordingSDP")]
    RecordingSdp {
        sdp: String,
    },
    RecordingError {
        error: String,
    },
    Error {
        message: String,
    },
}

impl ServerMessage {
    /// An `Error` frame; the message is cut to [`MAX_ERROR_LEN`] bytes (and `…`).
    pub fn error(message: impl Into<String>) -> Self {
        ServerMessage::Error {
            message: clip(message.into()),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// Longest error message sent back for a bad frame: names and values from the frame are
/// echoed in it, and a frame may be large (a 400 KiB action name was echoed whole).
pub const MAX_ERROR_LEN: usize = 256;

/// `message`, cut to [`MAX_ERROR_LEN`] bytes (on a character boundary) with `…` appended.
pub fn clip(mut message: String) -> String {
    if message.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// Parse one text frame. The error is the message to send back in an `Error` frame (at
/// most [`MAX_ERROR_LEN`] bytes and `…`).
pub fn parse(text: &str) -> Result<ClientMessage, String> {
    parse_unclipped(text).map_err(clip)
}

fn parse_unclipped(text: &str) -> Result<ClientMessage, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let action = match value.get("action") {
        Some(serde_json::Value::String(a)) => a.clone(),
        Some(_) => return Err("\"action\" must be a string".into()),
        None if value.is_object() => return Err("missing \"action\"".into()),
        None => return Err("a message must be a JSON object".into()),
    };
    if !CLIENT_ACTIONS.contains(&action.as_str()) {
        return Err(format!("unknown action {action:?}"));
    }
    serde_json::from_value(value).map_err(|e| format!("invalid {action} message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to_value(m: &ServerMessage) -> serde_json::Value {
        serde_json::from_str(&m.to_json()).unwrap()
    }

    #[test]
    fn parses_every_client_action() {
        let cand = json!({"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null});
        let offer = json!({"type":"offer","sdp":"v=0\r\n"});
        let answer = json!({"type":"answer","sdp":"v=0\r\n"});
        let cases = [
            json!({"action":"Ping"}),
            json!({"action":"PublisherInit"}),
            json!({"action":"SubscriberInit"}),
            json!({"action":"PublisherIce","candidate":cand}),
            json!({"action":"SubscriberIce","candidate":cand}),
            json!({"action":"Offer","sdp":offer}),
            json!({"action":"Publish","publisherId":"t1"}),
            json!({"action":"StopPublish","publisherId":"t1"}),
            json!({"action":"Subscribe","publisherId":"t1"}),
            json!({"action":"Answer","sdp":answer}),
            json!({"action":"StopSubscribe","subscriberId":"7"}),
            json!({"action":"SetPreferredLayer","subscriberId":"7","sid":2,"tid":null}),
            json!({"action":"RestartICE"}),
            json!({"action":"Record","publisherId":"t1"}),
            json!({"action":"StartRecording","publisherId":"t1"}),
            json!({"action":"StopRecording","publisherId":"t1"}),
            json!({"action":"PublishData","label":"d1"}),
            json!({"action":"StopPublishData","publisherId":"d1"}),
            json!({"action":"SubscribeData","publisherId":"d1"}),
            json!({"action":"StopSubscribeData","subscriberId":"9"}),
            json!({"action":"SetName","name":"Ada"}),
            json!({"action":"SetMuted","publisherId":"t1","muted":true}),
        ];
        assert_eq!(cases.len(), CLIENT_ACTIONS.len());
        for c in cases {
            parse(&c.to_string()).unwrap_or_else(|e| panic!("{c}: {e}"));
        }
    }

    #[test]
    fn record_takes_one_id_or_several() {
        assert_eq!(
            parse(r#"{"action":"Record","publisherId":"v"}"#).unwrap(),
            ClientMessage::Record {
                publisher_id: Some("v".into()),
                publisher_ids: None
            }
        );
        assert_eq!(
            parse(r#"{"action":"Record","publisherIds":["v","a"]}"#).unwrap(),
            ClientMessage::Record {
                publisher_id: None,
                publisher_ids: Some(vec!["v".into(), "a".into()])
            }
        );
    }

    #[test]
    fn parses_fields() {
        assert_eq!(
            parse(r#"{"action":"Publish","publisherId":"abc"}"#).unwrap(),
            ClientMessage::Publish {
                publisher_id: "abc".into()
            }
        );
        let m = parse(r#"{"action":"Offer","sdp":{"type":"offer","sdp":"v=0"}}"#).unwrap();
        let ClientMessage::Offer { sdp } = m else {
            panic!()
        };
        assert_eq!(
            sdp.into_description(SdpType::Offer),
            SessionDescription::offer("v=0")
        );
        // Bare SDP text is accepted too.
        let m = parse(r#"{"action":"Answer","sdp":"v=0"}"#).unwrap();
        let ClientMessage::Answer { sdp } = m else {
            panic!()
        };
        assert_eq!(
            sdp.into_description(SdpType::Answer),
            SessionDescription::answer("v=0")
        );
        let m = parse(r#"{"action":"SubscriberIce","candidate":{"candidate":""}}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::SubscriberIce {
                candidate: IceCandidateInit::default()
            }
        );
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        assert!(parse("{not json").unwrap_err().contains("malformed"));
        assert!(parse("[1,2]").unwrap_err().contains("object"));
        assert!(parse(r#"{"foo":1}"#).unwrap_err().contains("missing"));
        assert!(parse(r#"{"action":5}"#).unwrap_err().contains("string"));
        assert!(parse(r#"{"action":"Dance"}"#)
            .unwrap_err()
            .contains("unknown action"));
        assert!(parse(r#"{"action":"Publish"}"#)
            .unwrap_err()
            .contains("invalid Publish"));
        // Field names are camelCase only.
        assert!(parse(r#"{"action":"Publish","publisher_id":"x"}"#).is_err());
    }

    /// Names and values echoed from a frame are cut: a 400 KiB action name came back whole.
    #[test]
    fn errors_echo_at_most_a_bounded_prefix() {
        let huge = "é".repeat(200_000);
        for frame in [
            format!(r#"{{"action":"{huge}"}}"#),
            format!(r#"{{"action":"Publish","publisherId":["{huge}"]}}"#),
            format!("{{\"{huge}"),
        ] {
            let e = parse(&frame).unwrap_err();
            assert!(
                e.len() <= MAX_ERROR_LEN + '…'.len_utf8(),
                "{} bytes",
                e.len()
            );
        }
        assert!(parse(&format!(r#"{{"action":"{huge}"}}"#))
            .unwrap_err()
            .starts_with("unknown action"));
    }

    #[test]
    fn server_messages_have_protocol_shapes() {
        assert_eq!(to_value(&ServerMessage::Pong), json!({"action":"Pong"}));
        assert_eq!(
            to_value(&ServerMessage::Answer {
                sdp: SessionDescription::answer("v=0")
            }),
            json!({"action":"Answer","sdp":{"type":"answer","sdp":"v=0"}})
        );
        assert_eq!(
            to_value(&ServerMessage::Offer {
                sdp: SessionDescription::offer("v=0")
            }),
            json!({"action":"Offer","sdp":{"type":"offer","sdp":"v=0"}})
        );
        let cand = IceCandidateInit {
            candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: Some("u".into()),
        };
        assert_eq!(
            to_value(&ServerMessage::PublisherIce {
                candidate: cand.clone()
            }),
            json!({"action":"PublisherIce","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"u"}})
        );
        assert_eq!(
            to_value(&ServerMessage::SubscriberIce { candidate: cand })["action"],
            "SubscriberIce"
        );
        assert_eq!(
            to_value(&ServerMessage::Published {
                publisher_ids: vec!["a".into(), "b".into()],
                names: BTreeMap::new(),
                muted: Vec::new(),
            }),
            json!({"action":"Published","publisherIds":["a","b"]})
        );
        assert_eq!(
            to_value(&ServerMessage::Published {
                publisher_ids: vec!["a".into(), "b".into()],
                names: BTreeMap::from([("a".into(), "Ada".into())]),
                muted: vec!["b".into()],
            }),
            json!({"action":"Published","publisherIds":["a","b"],"names":{"a":"Ada"},"muted":["b"]})
        );
        assert_eq!(
            to_value(&ServerMessage::Muted {
                publisher_id: "a".into(),
                muted: true,
            }),
            json!({"action":"Muted","publisherId":"a","muted":true})
        );
        assert_eq!(
            to_value(&ServerMessage::RecordingStarted {
                publisher_id: "a".into(),
                file: None,
            }),
            json!({"action":"RecordingStarted","publisherId":"a"})
        );
        assert_eq!(
            to_value(&ServerMessage::Unpublished {
                publisher_id: "a".into()
            }),
            json!({"action":"Unpublished","publisherId":"a"})
        );
        assert_eq!(
            to_value(&ServerMessage::Subscribed {
                subscriber_id: "9".into(),
                publisher_id: "a".into(),
            }),
            json!({"action":"Subscribed","subscriberId":"9","publisherId":"a"})
        );
        assert_eq!(
            to_value(&ServerMessage::LayerChanged {
                subscriber_id: "9".into(),
                sid: 1,
                tid: None,
            }),
            json!({"action":"LayerChanged","subscriberId":"9","sid":1,"tid":null})
        );
        assert_eq!(
            to_value(&ServerMessage::DataPublished {
                publisher_ids: vec!["d1".into()]
            }),
            json!({"action":"DataPublished","publisherIds":["d1"]})
        );
        assert_eq!(
            to_value(&ServerMessage::DataUnpublished {
                publisher_id: "d1".into()
            }),
            json!({"action":"DataUnpublished","publisherId":"d1"})
        );
        assert_eq!(
            to_value(&ServerMessage::DataSubscribed {
                subscriber_id: "9".into(),
                publisher_id: "d1".into()
            }),
            json!({"action":"DataSubscribed","subscriberId":"9","publisherId":"d1"})
        );
        assert_eq!(
            to_value(&ServerMessage::RecordingSdp { sdp: "v=0".into() }),
            json!({"action":"RecordingSDP","sdp":"v=0"})
        );
        assert_eq!(
            to_value(&ServerMessage::RecordingError { error: "no".into() }),
            json!({"action":"RecordingError","error":"no"})
        );
        assert_eq!(
            to_value(&ServerMessage::error("bad")),
            json!({"action":"Error","message":"bad"})
        );
    }
}
