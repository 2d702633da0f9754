//! Configuration of the worker (engine), the media a router negotiates, and transports.
//!
//! Plain values with sensible defaults. This module owns no behavior beyond validation and
//! the translation of [`MediaConfig`] into str0m's codec and extension configuration.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use str0m::rtp::{Extension, ExtensionMap};
use str0m::RtcConfig;

/// Remote addresses a transport's session may have. An ICE-lite server only answers the
/// browser's checks, one per candidate pair it tries: a browser has a few host and
/// server-reflexive candidates per interface, and a network change or ICE restart adds a
/// few more. Checks from further new addresses are refused and counted
/// ([`ShardStats::stun_addr_limit`](crate::stats::ShardStats::stun_addr_limit)): each
/// answered address would become a peer-reflexive candidate in the session, which an
/// attacker could otherwise add without bound.
pub const MAX_REMOTE_ADDRS: usize = 16;

/// Remote candidates a transport accepts through
/// [`add_ice_candidate`](crate::transport::PublishTransport::add_ice_candidate) over its
/// life (a browser trickles a handful per ICE round). Beyond it the call fails with
/// [`TransportError::TooManyCandidates`](crate::error::TransportError::TooManyCandidates)
/// and [`ShardStats::candidates_refused`](crate::stats::ShardStats::candidates_refused)
/// counts it: every candidate costs the session memory and candidate pairs.
pub const MAX_REMOTE_CANDIDATES: usize = 32;

/// Configuration of a [`Worker`](crate::worker::Worker): its shards and their sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Number of shards (threads, each with its own UDP socket). Default: available cores.
    pub shards: usize,
    /// Address the shard sockets bind to. Must be a concrete address (not `0.0.0.0`):
    /// it is the host candidate of every session. Use
    /// [`WebRTCTransportConfig::announced_ips`] to announce another address (1:1 NAT).
    /// Default: `127.0.0.1`.
    pub bind_ip: IpAddr,
    /// UDP ports for the shard sockets: shard `i` binds `port_min + i`. With `port_min == 0`
    /// each shard takes an ephemeral port. Default: `0`.
    pub port_min: u16,
    /// Highest port shards may use; `Worker::new` fails if `port_min + shards - 1` exceeds it.
    pub port_max: u16,
    /// Pin shard `i` to CPU core `i % cores`. Default: `false`.
    pub pin_threads: bool,
    /// Capacity of each shard-to-shard ring, in packets. Default: 4096.
    pub ring_capacity: usize,
    /// Relay between workers ([`crate::relay`]): where this worker accepts relays and the
    /// secret every worker of the deployment shares. `None` (default): no relay port, and
    /// `relay_to` fails.
    pub relay: Option<RelayConfig>,
}

/// A worker's relay settings (see [`crate::relay`]).
#[derive(Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// TCP address the relay control port listens on (port 0: any free port; see
    /// [`Worker::relay_addr`](crate::worker::Worker::relay_addr)).
    pub bind: std::net::SocketAddr,
    /// The secret shared by the workers that relay to each other (at least 16 bytes):
    /// both ends of a relay link prove they know it before anything is relayed.
    pub secret: String,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("bind", &self.bind)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            shards: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 0,
            port_max: u16::MAX,
            pin_threads: false,
            ring_capacity: 4096,
            relay: None,
        }
    }
}

/// Audio codecs a router can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AudioCodec {
    /// Opus, 48 kHz stereo.
    Opus,
}

/// Video codecs a router can negotiate. All are negotiated with RTX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VideoCodec {
    /// VP8.
    Vp8,
    /// VP9 (profiles 0 and 2).
    Vp9,
    /// H.264 (constrained baseline and baseline, packetization modes 0 and 1).
    H264,
    /// AV1.
    Av1,
}

/// RTP header extensions a router can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderExtension {
    /// `urn:ietf:params:rtp-hdrext:ssrc-audio-level` (RFC 6464).
    AudioLevel,
    /// `http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time`.
    AbsSendTime,
    /// Transport-wide congestion control sequence numbers.
    TransportCc,
    /// `urn:ietf:params:rtp-hdrext:sdes:mid`.
    Mid,
    /// `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id` (simulcast rid).
    RtpStreamId,
    /// `urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id`.
    RepairedRtpStreamId,
    /// `urn:3gpp:video-orientation`.
    VideoOrientation,
    /// `http://www.webrtc.org/experiments/rtp-hdrext/playout-delay`.
    PlayoutDelay,
    /// `http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time`.
    AbsCaptureTime,
    /// The AV1 RTP payload format's dependency descriptor
    /// (`https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension`):
    /// read on a publisher's AV1 packets for their SVC layers (Chromium sends AV1 SVC only
    /// with it). Not forwarded: subscribers get the frames of the layers chosen for them,
    /// with the marker bit at the end of each picture.
    DependencyDescriptor,
}

/// The URI of [`HeaderExtension::DependencyDescriptor`].
pub const DEPENDENCY_DESCRIPTOR_URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// str0m's side of [`HeaderExtension::DependencyDescriptor`]: read by the shard from the
/// datagram itself (`wire::find_extension`), so str0m does not parse it; written from
/// `ExtensionValues::raw` (the vendored str0m's patch 18), where the shard puts the
/// publisher's bytes for the subscribers' packets.
#[derive(Debug)]
struct DependencyDescriptorPassThrough;

impl str0m::rtp::ExtensionSerializer for DependencyDescriptorPassThrough {
    fn write_to(&self, buf: &mut [u8], ev: &str0m::rtp::ExtensionValues) -> usize {
        let Some(v) = &ev.raw else {
            return 0;
        };
        let b = v.as_bytes();
        match buf.get_mut(..b.len()) {
            Some(out) if !b.is_empty() => {
                out.copy_from_slice(b);
                b.len()
            }
            _ => 0,
        }
    }

    fn requires_two_byte_form(&self, ev: &str0m::rtp::ExtensionValues) -> bool {
        ev.raw.as_ref().is_some_and(|v| v.as_bytes().len() > 16)
    }

    fn parse_value(&self, _buf: &[u8], _ev: &mut str0m::rtp::ExtensionValues) -> bool {
        true
    }

    fn is_video(&self) -> bool {
        true
    }

    fn is_audio(&self) -> bool {
        false
    }
}

/// The str0m extension of [`HeaderExtension::DependencyDescriptor`] (for the test peers).
#[cfg(feature = "testing")]
pub(crate) fn dependency_descriptor_extension() -> Extension {
    HeaderExtension::DependencyDescriptor.to_str0m()
}

impl HeaderExtension {
    fn to_str0m(self) -> Extension {
        match self {
            HeaderExtension::AudioLevel => Extension::AudioLevel,
            HeaderExtension::AbsSendTime => Extension::AbsoluteSendTime,
            HeaderExtension::TransportCc => Extension::TransportSequenceNumber,
            HeaderExtension::Mid => Extension::RtpMid,
            HeaderExtension::RtpStreamId => Extension::RtpStreamId,
            HeaderExtension::RepairedRtpStreamId => Extension::RepairedRtpStreamId,
            HeaderExtension::VideoOrientation => Extension::VideoOrientation,
            HeaderExtension::PlayoutDelay => Extension::PlayoutDelay,
            HeaderExtension::AbsCaptureTime => Extension::AbsoluteCaptureTime,
            HeaderExtension::DependencyDescriptor => Extension::with_serializer(
                DEPENDENCY_DESCRIPTOR_URI,
                DependencyDescriptorPassThrough,
            ),
        }
    }

    /// The id Chrome uses for this extension in its offers; we offer the same ids so
    /// that subscribers and publishers usually agree and no translation is needed.
    fn preferred_id(self) -> u8 {
        match self {
            HeaderExtension::AudioLevel => 1,
            HeaderExtension::AbsSendTime => 2,
            HeaderExtension::TransportCc => 3,
            HeaderExtension::Mid => 4,
            HeaderExtension::RtpStreamId => 10,
            HeaderExtension::RepairedRtpStreamId => 11,
            HeaderExtension::VideoOrientation => 13,
            HeaderExtension::PlayoutDelay => 6,
            HeaderExtension::AbsCaptureTime => 7,
            HeaderExtension::DependencyDescriptor => 12,
        }
    }
}

/// The media a [`Router`](crate::router::Router) negotiates with its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaConfig {
    /// Audio codecs, in order of preference.
    pub audio: Vec<AudioCodec>,
    /// Video codecs, in order of preference.
    pub video: Vec<VideoCodec>,
    /// Header extensions offered and accepted.
    pub header_extensions: Vec<HeaderExtension>,
    /// Send-side bandwidth estimation toward each subscriber (transport-wide congestion
    /// control, which needs [`HeaderExtension::TransportCc`]), starting from this many
    /// bits per second; `None` turns it off. With it on, each subscribe transport's
    /// allocator shares the estimate among its tracks: audio first, then video layers up
    /// to each subscriber's preference, video paused when not even its lowest layer fits
    /// ([`SubscribeTransport`](crate::transport::SubscribeTransport)).
    ///
    /// Off by default: with it on, a forwarded packet costs ≈ 14 % more server CPU and a
    /// subscriber ≈ 135 KiB more memory (str0m's TWCC send history and estimator; README,
    /// "Bandwidth estimation"). [`DEFAULT_INITIAL_BITRATE_BPS`] is a good start; values are
    /// clamped to 50 kbit/s – 10 Gbit/s.
    pub bandwidth_estimation: Option<u64>,
}

/// The bandwidth estimate subscribe transports start from, in bits per second (what
/// libwebrtc starts a call with).
pub const DEFAULT_INITIAL_BITRATE_BPS: u64 = 300_000;

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            audio: vec![AudioCodec::Opus],
            video: vec![
                VideoCodec::Vp8,
                VideoCodec::Vp9,
                VideoCodec::H264,
                VideoCodec::Av1,
            ],
            header_extensions: vec![
                HeaderExtension::AudioLevel,
                HeaderExtension::AbsSendTime,
                HeaderExtension::TransportCc,
                HeaderExtension::Mid,
                HeaderExtension::RtpStreamId,
                HeaderExtension::RepairedRtpStreamId,
                HeaderExtension::VideoOrientation,
                HeaderExtension::DependencyDescriptor,
            ],
            bandwidth_estimation: None,
        }
    }
}

impl MediaConfig {
    /// Apply codecs and extensions to a str0m configuration.
    pub(crate) fn apply(&self, mut cfg: RtcConfig) -> RtcConfig {
        cfg = cfg.clear_codecs();
        for a in &self.audio {
            match a {
                AudioCodec::Opus => cfg = cfg.enable_opus(true, false),
            }
        }
        for v in &self.video {
            cfg = match v {
                VideoCodec::Vp8 => cfg.enable_vp8(true),
                VideoCodec::Vp9 => cfg.enable_vp9(true),
                VideoCodec::H264 => cfg.enable_h264(true),
                VideoCodec::Av1 => cfg.enable_av1(true),
            };
        }
        let mut map = ExtensionMap::empty();
        for e in &self.header_extensions {
            map.set(e.preferred_id(), e.to_str0m());
        }
        cfg.set_extension_map(map)
    }
}

/// A STUN or TURN server, as in the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RTCIceServer {
    /// Server URLs, e.g. `stun:stun.example.org:3478`.
    pub urls: Vec<String>,
    /// TURN username.
    pub username: String,
    /// TURN credential.
    pub credential: String,
}

/// Peer-connection level configuration, as in the browser's `RTCConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RTCConfiguration {
    /// ICE servers. The server side is ICE-lite and needs none; a `stun:` entry is
    /// accepted for compatibility with the original API.
    pub ice_servers: Vec<RTCIceServer>,
}

/// Configuration of one publish or subscribe transport.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebRTCTransportConfig {
    /// Peer-connection configuration (ICE servers).
    pub configuration: RTCConfiguration,
    /// Addresses to announce as candidates instead of / besides the bind address, for
    /// servers behind a 1:1 NAT. The shard's port is used with each address.
    pub announced_ips: Vec<IpAddr>,
    /// How long a new transport may take to connect (ICE + DTLS) before it is closed.
    pub connect_timeout: Duration,
    /// How long a connected transport may stay silent (no datagram from the peer)
    /// before it is considered gone and closed.
    pub ice_disconnected_timeout: Duration,
}

impl Default for WebRTCTransportConfig {
    fn default() -> Self {
        Self {
            configuration: RTCConfiguration::default(),
            announced_ips: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            ice_disconnected_timeout: Duration::from_secs(15),
        }
    }
}
