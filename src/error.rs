//! Errors, one enum per family of operations.
//!
//! Every failure a caller can cause (bad SDP, unknown ids, closed objects) is reported
//! through these types; nothing in the API panics on bad input.

use thiserror::Error;

/// Errors from [`Worker::new`](crate::worker::Worker::new).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The configuration asks for zero shards.
    #[error("worker needs at least one shard")]
    NoShards,
    /// The bind address is unspecified (`0.0.0.0` / `::`); shards need a concrete address.
    #[error("bind address {0} is unspecified; bind a concrete address and use announced_ips")]
    UnspecifiedBind(std::net::IpAddr),
    /// `port_min + shards - 1` exceeds `port_max`.
    #[error("port range {min}..={max} is too small for {shards} shards")]
    PortRange {
        /// Lowest port.
        min: u16,
        /// Highest port.
        max: u16,
        /// Shards requested.
        shards: usize,
    },
    /// A shard socket could not be created or bound.
    #[error("binding shard socket: {0}")]
    Bind(#[source] std::io::Error),
    /// The relay port could not be opened, or the relay secret is too short.
    #[error("relay port: {0}")]
    Relay(#[source] std::io::Error),
    /// A shard thread could not be started.
    #[error("starting shard thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Errors from transport-level operations (`add_ice_candidate`, `close`, …).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// The transport is closed (by the user, the peer, a timeout or a failure).
    #[error("transport is closed")]
    Closed,
    /// The candidate could not be parsed.
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    /// The transport already has [`MAX_REMOTE_CANDIDATES`](crate::config::MAX_REMOTE_CANDIDATES)
    /// trickled candidates; this one is ignored.
    #[error("too many ICE candidates (at most {0} per transport)")]
    TooManyCandidates(usize),
}

/// Errors from SDP negotiation (`get_answer`, `set_answer`).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NegotiationError {
    /// The transport is closed.
    #[error("transport is closed")]
    Closed,
    /// An offer was expected and something else was given, or vice versa.
    #[error("expected an SDP {expected}")]
    WrongType {
        /// What was expected: "offer" or "answer".
        expected: &'static str,
    },
    /// The SDP is larger than Rheomesh accepts.
    #[error("SDP is {0} bytes, over the limit")]
    TooLarge(usize),
    /// The SDP has more m-lines than Rheomesh accepts.
    #[error("SDP has {0} m-lines, over the limit")]
    TooManyMedia(usize),
    /// The SDP could not be parsed or was rejected (fingerprint, ICE, structure).
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    /// The offer contains no media this router can receive (e.g. only unknown codecs).
    #[error("offer contains no usable media")]
    NoUsableMedia,
    /// The answer parsed but does not fit the outstanding offer. That offer is consumed:
    /// the next change makes a new one.
    #[error("answer rejected: {0}")]
    AnswerRejected(String),
    /// An answer arrived but no offer is outstanding.
    #[error("no offer is outstanding")]
    NoPendingOffer,
    /// A new offer was asked for (an ICE restart) while an earlier offer still waits for
    /// its answer: answer that one first (it expires after 20 s unanswered).
    #[error("an earlier offer is still waiting for its answer")]
    OfferOutstanding,
    /// The media session failed internally and was closed.
    #[error("session failed: {0}")]
    SessionFailed(String),
}

/// Errors from [`PublishTransport::try_publish`](crate::transport::PublishTransport::try_publish).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The transport is closed.
    #[error("transport is closed")]
    Closed,
    /// No negotiated m-line carries this track id (the `a=msid` track id).
    #[error("no track with id {0} on this transport")]
    UnknownTrack(String),
    /// This track id is already published in the router.
    #[error("track {0} is already published")]
    AlreadyPublished(String),
    /// The transport already has as many data channels as one publisher may (64); the
    /// channel with this label was closed.
    #[error("too many data channels: {0} was closed")]
    TooManyDataChannels(String),
}

/// Errors from [`SubscribeTransport::subscribe`](crate::transport::SubscribeTransport::subscribe).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The transport is closed.
    #[error("transport is closed")]
    Closed,
    /// No publisher with this id in the router.
    #[error("no publisher with id {0}")]
    UnknownPublisher(String),
    /// This transport already subscribes to that publisher.
    #[error("already subscribed to {0}")]
    AlreadySubscribed(String),
    /// The router's media configuration cannot carry the publisher's codec.
    #[error("codec of publisher {0} cannot be offered")]
    IncompatibleCodec(String),
    /// The previous offer was not answered in time.
    #[error("previous offer was not answered in time")]
    NegotiationTimeout,
    /// The media session failed internally and was closed.
    #[error("session failed: {0}")]
    SessionFailed(String),
    /// A viewer's offer ([`SubscribeTransport::answer_viewer_offer`](crate::transport::SubscribeTransport::answer_viewer_offer))
    /// was refused: not SDP, or receiving none of the tracks.
    #[error("offer refused: {0}")]
    BadOffer(String),
}

/// Errors from the [`RecordingTransport`](crate::transport::RecordingTransport).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordingError {
    /// The transport is closed.
    #[error("recording transport is closed")]
    Closed,
    /// The receiver address is not an IP address and port the transport can send to.
    #[error("bad receiver address: {0}")]
    BadAddress(String),
    /// No publisher with this id in the router.
    #[error("no publisher with id {0}")]
    UnknownPublisher(String),
    /// This transport already records that publisher.
    #[error("already recording {0}")]
    AlreadyRecording(String),
    /// This transport does not record that publisher.
    #[error("not recording {0}")]
    NotRecording(String),
    /// The publisher's codec has no payload parameters to describe.
    #[error("codec of publisher {0} cannot be described")]
    NoCodec(String),
    /// The request names no publisher, or one twice.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The ports from the transport's first port on are used up (each track takes two:
    /// RTP and RTCP).
    #[error("no port left for another track")]
    NoPort,
}

/// Errors from [`Publisher::relay_to`](crate::publisher::Publisher::relay_to) and
/// [`DataPublisher::relay_to`](crate::data::DataPublisher::relay_to).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayError {
    /// This worker has no [`RelayConfig`](crate::config::RelayConfig) (no shared secret).
    #[error("relay is not configured on this worker")]
    NotConfigured,
    /// The other worker could not be reached or did not answer in time.
    #[error("relay peer unreachable: {0}")]
    Unreachable(String),
    /// The other worker refused (wrong secret, unknown router, bad offer, …).
    #[error("relay refused: {0}")]
    Refused(String),
    /// The control link closed meanwhile.
    #[error("relay link closed")]
    LinkClosed,
    /// The publisher is closed.
    #[error("publisher is closed")]
    Closed,
    /// Subscribing to the publisher on this worker failed.
    #[error("relay subscription: {0}")]
    Subscribe(SubscribeError),
}
