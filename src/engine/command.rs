//! Messages between the API layer (tokio) and a shard: commands with oneshot replies,
//! and session events flowing back. Control path only: these may allocate.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::PayloadParams;
use str0m::media::MediaKind;
use tokio::sync::{mpsc, oneshot};

use super::{DownTrackId, SessionId, ShardId, TrackKey};
use crate::error::{NegotiationError, RecordingError, SubscribeError, TransportError};
use crate::forward::Layer;
use crate::stats::{ShardStats, TransportStats};

/// Whether a session receives media from its peer or sends media to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Publish,
    Subscribe,
    /// A recording transport: plain RTP out to a fixed address, no peer connection.
    Record,
}

impl Role {
    /// The `role` field of tracing spans.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Publish => "publish",
            Role::Subscribe => "subscribe",
            Role::Record => "record",
        }
    }
}

/// What a shard needs to create a session.
pub(crate) struct SessionSpec {
    pub(crate) id: SessionId,
    pub(crate) role: Role,
    /// Id of the router the transport belongs to (for the session's tracing span).
    pub(crate) router: String,
    pub(crate) media: crate::config::MediaConfig,
    pub(crate) announced_ips: Vec<IpAddr>,
    /// STUN servers to learn the shard's server-reflexive address from.
    pub(crate) stun_servers: Vec<std::net::SocketAddr>,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// A full ICE agent (relay sessions to another worker) instead of ICE-lite.
    pub(crate) full_ice: bool,
    pub(crate) events: mpsc::UnboundedSender<SessionEvent>,
}

/// Reply to session creation.
#[derive(Debug, Clone)]
pub(crate) struct SessionCreated {
    /// Local candidates (`candidate:` attribute values).
    pub(crate) candidates: Vec<String>,
    pub(crate) ufrag: String,
}

/// One receiving m-line of a publish session.
#[derive(Debug, Clone)]
pub(crate) struct TrackInfo {
    pub(crate) key: TrackKey,
    /// The `a=msid` track id: the publisher id.
    pub(crate) track_id: String,
    pub(crate) stream_id: String,
    pub(crate) kind: MediaKind,
    /// Negotiated payload parameters, in order of preference.
    pub(crate) params: Vec<PayloadParams>,
    /// False once the m-line stopped receiving (inactive / removed by the publisher).
    pub(crate) active: bool,
    /// Simulcast encodings its offer announced (1: one stream, SVC layers or none).
    pub(crate) layers: u8,
}

/// What a subscribe session needs to forward a track.
#[derive(Debug, Clone)]
pub(crate) struct DownTrackSpec {
    pub(crate) id: DownTrackId,
    pub(crate) track: TrackKey,
    pub(crate) track_id: String,
    pub(crate) stream_id: String,
    pub(crate) kind: MediaKind,
    pub(crate) params: Vec<PayloadParams>,
    /// Simulcast encodings of the track ([`TrackInfo::layers`]).
    pub(crate) layers: u8,
    /// A relay to another worker: every encoding is forwarded, each as a stream of its
    /// own (one simulcast m-line), with no layer selection and no bandwidth cap.
    pub(crate) relay: bool,
}

impl DownTrackSpec {
    /// A down-track `id` of the published track `info`.
    pub(crate) fn of(info: &TrackInfo, id: DownTrackId) -> DownTrackSpec {
        DownTrackSpec {
            id,
            track: info.key,
            track_id: info.track_id.clone(),
            stream_id: info.stream_id.clone(),
            kind: info.kind,
            params: info.params.clone(),
            layers: info.layers,
            relay: false,
        }
    }
}

/// Commands from the API layer to a shard.
pub(crate) enum Command {
    CreateSession {
        spec: Box<SessionSpec>,
        reply: oneshot::Sender<SessionCreated>,
    },
    /// Publish side: accept an offer, reply with the answer and the current tracks.
    AcceptOffer {
        id: SessionId,
        /// The offer's text and its parse (parsed off the shard).
        sdp: String,
        offer: Box<SdpOffer>,
        reply: oneshot::Sender<Result<(String, Vec<TrackInfo>), NegotiationError>>,
    },
    AddRemoteCandidate {
        id: SessionId,
        candidate: String,
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
    /// Subscribe side, the viewer offering (WHEP): apply its offer and bind each `specs`
    /// track to a receiving m-line of its kind; the answer and the down-tracks bound. A
    /// later offer (an ICE restart) is applied as is and binds nothing new.
    AcceptViewerOffer {
        id: SessionId,
        sdp: String,
        offer: Box<SdpOffer>,
        specs: Vec<DownTrackSpec>,
        reply: oneshot::Sender<Result<(String, Vec<DownTrackId>), SubscribeError>>,
    },
    /// Subscribe side: add a down-track and produce an offer folding all pending changes.
    AddDownTrack {
        id: SessionId,
        spec: Box<DownTrackSpec>,
        reply: oneshot::Sender<Result<String, SubscribeError>>,
    },
    /// Recording side: forward a track as plain RTP to `dest` (RTCP sender reports to the
    /// next port).
    AddRecordingTrack {
        id: SessionId,
        spec: Box<DownTrackSpec>,
        dest: SocketAddr,
        reply: oneshot::Sender<Result<(), RecordingError>>,
    },
    /// Publish side: publish the peer's data channel `label` as data track `key`; answered
    /// once the channel is open.
    PublishData {
        id: SessionId,
        label: String,
        key: TrackKey,
        reply: oneshot::Sender<Result<crate::engine::data::DataInfo, crate::error::PublishError>>,
    },
    /// Publish side: stop forwarding data track `key` (its channel stays as the peer has it).
    UnpublishData {
        id: SessionId,
        key: TrackKey,
    },
    /// Subscribe side: open a channel like the published one and produce an offer.
    AddDataDown {
        id: SessionId,
        down: DownTrackId,
        info: Box<crate::engine::data::DataInfo>,
        reply: oneshot::Sender<Result<Option<String>, SubscribeError>>,
    },
    /// Subscribe side: close a subscriber's data channel and stop forwarding to it.
    RemoveDataDown {
        id: SessionId,
        down: DownTrackId,
    },
    /// Publisher's shard: shard `dest` has (one more) subscriber of data track `key`.
    AddRemoteDataRoute {
        key: TrackKey,
        dest: ShardId,
    },
    /// Publisher's shard: one subscriber fewer on shard `dest`.
    RemoveRemoteDataRoute {
        key: TrackKey,
        dest: ShardId,
    },
    /// Publisher's shard: the payload type the track's publisher sends (`None`: nothing
    /// received yet, or the track is gone).
    SentPayloadType {
        track: TrackKey,
        reply: oneshot::Sender<Option<u8>>,
    },
    /// Subscribe side: the ceiling on the layer a down-track forwards.
    SetPreferredLayer {
        id: SessionId,
        down: DownTrackId,
        layer: Layer,
    },
    /// Subscribe side: stop forwarding a down-track; its m-line is stopped at the next offer.
    RemoveDownTrack {
        id: SessionId,
        down: DownTrackId,
    },
    /// Subscribe side: produce an offer for pending changes, if any.
    CreateOffer {
        id: SessionId,
        ice_restart: bool,
        reply: oneshot::Sender<Result<Option<String>, NegotiationError>>,
    },
    /// Subscribe side: apply the answer to the outstanding offer.
    AcceptAnswer {
        id: SessionId,
        /// The answer's text and its parse (parsed off the shard).
        sdp: String,
        answer: Box<SdpAnswer>,
        reply: oneshot::Sender<Result<(), NegotiationError>>,
    },
    /// Publisher's shard: shard `dest` has (one more) subscriber of `track`.
    AddRemoteRoute {
        track: TrackKey,
        dest: ShardId,
    },
    /// Publisher's shard: shard `dest` has one subscriber fewer of `track`.
    RemoveRemoteRoute {
        track: TrackKey,
        dest: ShardId,
    },
    CloseSession {
        id: SessionId,
    },
    Stats {
        reply: oneshot::Sender<ShardStats>,
    },
    /// A snapshot of one session's transport statistics (the API side fills in the state).
    TransportStats {
        id: SessionId,
        reply: oneshot::Sender<Result<TransportStats, TransportError>>,
    },
    /// Test hook: panic inside the session's guarded code, as a str0m bug would.
    #[cfg(feature = "testing")]
    InjectPanic {
        id: SessionId,
    },
    /// Test hook: block the shard thread, as a long stall would (datagrams queue up).
    /// Handled by the driver: the core never sleeps.
    #[cfg(feature = "testing")]
    Pause(std::time::Duration),
    Shutdown,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseReason {
    Requested,
    ConnectTimeout,
    IdleTimeout,
    PeerClosed,
    Failed(String),
}

/// Events from a shard to the API side of one session.
#[derive(Debug, Clone)]
pub(crate) enum SessionEvent {
    Connected,
    /// A local candidate learned after creation (server-reflexive, from STUN).
    LocalCandidate(String),
    /// A down-track of this (subscribe) session could not be activated after the answer
    /// (the subscriber refused every codec of the publisher).
    DownTrackRejected(DownTrackId),
    /// A down-track of a simulcast track forwards another layer, or other encodings flow.
    Layers {
        down: DownTrackId,
        current: Option<Layer>,
        /// Bit per rank: the encodings flowing.
        active: u8,
    },
    /// Subscribe side: a data channel of this session closed (the peer closed it, or it
    /// could not keep up with a reliable channel's messages).
    DataClosed(DownTrackId),
    /// Publish side: the peer closed its published data channel `label`.
    DataChannelClosed(String),
    Closed(CloseReason),
}
