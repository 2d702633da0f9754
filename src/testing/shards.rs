//! [`MemoryShards`]: shard cores driven by hand, with commands answered synchronously.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::config::MediaConfig;
use crate::engine::command::{Command, DownTrackSpec, Role, SessionEvent, SessionSpec, TrackInfo};
use crate::engine::core::ShardCore;
use crate::engine::data::DataInfo;
use crate::engine::ring::Mesh;
use crate::engine::TrackKey;
use crate::engine::{next_id, DownTrackId, SessionId, ShardId};
use crate::error::{NegotiationError, PublishError, SubscribeError, TransportError};
use crate::stats::ShardStats;

/// A session (transport) on one of the in-memory shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRef {
    shard: ShardId,
    id: SessionId,
}

impl SessionRef {
    /// The shard the session lives on.
    pub fn shard(&self) -> usize {
        self.shard
    }
}

/// A published track, as returned when a publish offer is accepted.
#[derive(Debug, Clone)]
pub struct TrackRef {
    info: TrackInfo,
}

impl TrackRef {
    /// The publisher id (the track's `a=msid` track id).
    pub fn id(&self) -> &str {
        &self.info.track_id
    }
}

/// A published data channel (a data track), once its publish request was answered.
#[derive(Debug, Clone)]
pub struct DataTrackRef {
    info: DataInfo,
}

impl DataTrackRef {
    /// The data publisher id (the channel's label).
    pub fn id(&self) -> &str {
        &self.info.label
    }
}

/// A data publish request ([`MemoryShards::publish_data`]): answered once the peer's
/// channel is open on the publish session, which may take a few datagrams.
pub struct DataPublishing {
    reply: oneshot::Receiver<Result<DataInfo, PublishError>>,
}

impl DataPublishing {
    /// The answer, once there is one: the data track, or why it was refused. `None` while
    /// the channel is not yet open (drive the datagrams on and ask again).
    pub fn answer(&mut self) -> Option<Result<DataTrackRef, PublishError>> {
        match self.reply.try_recv() {
            Ok(r) => Some(r.map(|info| DataTrackRef { info })),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(PublishError::Closed)),
        }
    }
}

/// Shard cores on the calling thread, without sockets. Shard `i` pretends to own the
/// address `127.0.0.1:(20000 + i)`; nothing is ever bound or sent.
pub struct MemoryShards {
    cores: Vec<ShardCore>,
    media: MediaConfig,
    events: Vec<(SessionId, mpsc::UnboundedReceiver<SessionEvent>, bool)>,
    /// Down-tracks made by [`MemoryShards::subscribe`], by session.
    downs: Vec<(SessionId, DownTrackId)>,
}

impl MemoryShards {
    /// `shards` cores connected by rings of `ring_capacity` entries.
    pub fn new(shards: usize, ring_capacity: usize, media: MediaConfig) -> MemoryShards {
        str0m::crypto::from_feature_flags().install_process_default();
        let mut mesh = Mesh::new(shards, ring_capacity.max(16));
        let now = Instant::now();
        let cores = (0..shards)
            .map(|i| {
                let (p, c) = mesh.take(i);
                ShardCore::new(i, Self::addr_of(i), p, c, shards, now)
            })
            .collect();
        MemoryShards {
            cores,
            media,
            events: Vec::new(),
            downs: Vec::new(),
        }
    }

    fn addr_of(shard: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 20000 + shard as u16)
    }

    /// The address shard `shard` pretends to own (its host candidate).
    pub fn shard_addr(&self, shard: usize) -> SocketAddr {
        Self::addr_of(shard)
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.cores.len()
    }

    fn command<T>(
        &mut self,
        shard: ShardId,
        now: Instant,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Option<T> {
        let (tx, mut rx) = oneshot::channel();
        self.cores[shard].handle_command(make(tx), now);
        rx.try_recv().ok()
    }

    /// Create a session on `shard`. Sessions here never time out for idleness.
    pub fn create_session(&mut self, shard: usize, publish: bool, now: Instant) -> SessionRef {
        let role = if publish {
            Role::Publish
        } else {
            Role::Subscribe
        };
        self.create_session_as(shard, role, now)
    }

    fn create_session_as(&mut self, shard: usize, role: Role, now: Instant) -> SessionRef {
        let id = SessionId(next_id());
        let (tx, rx) = mpsc::unbounded_channel();
        let spec = SessionSpec {
            id,
            role,
            router: "testing".into(),
            media: self.media.clone(),
            announced_ips: Vec::new(),
            stun_servers: Vec::new(),
            connect_timeout: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(3600),
            full_ice: false,
            events: tx,
        };
        self.command(shard, now, |reply| Command::CreateSession {
            spec: Box::new(spec),
            reply,
        });
        self.events.push((id, rx, false));
        SessionRef { shard, id }
    }

    /// Give a session the peer's candidate (`candidate:...`).
    pub fn add_remote_candidate(
        &mut self,
        s: SessionRef,
        candidate: &str,
        now: Instant,
    ) -> Result<(), TransportError> {
        let candidate = candidate.to_string();
        self.command(s.shard, now, |reply| Command::AddRemoteCandidate {
            id: s.id,
            candidate,
            reply,
        })
        .unwrap_or(Err(TransportError::Closed))
    }

    /// Publish side: answer an offer; returns the answer and the received tracks.
    pub fn accept_offer(
        &mut self,
        s: SessionRef,
        offer: &str,
        now: Instant,
    ) -> Result<(String, Vec<TrackRef>), NegotiationError> {
        let sdp = offer.to_string();
        let offer = Box::new(crate::engine::sdp_parse::parse_offer_here(&sdp)?);
        let (answer, tracks) = self
            .command(s.shard, now, |reply| Command::AcceptOffer {
                id: s.id,
                sdp,
                offer,
                reply,
            })
            .unwrap_or(Err(NegotiationError::Closed))?;
        Ok((
            answer,
            tracks.into_iter().map(|info| TrackRef { info }).collect(),
        ))
    }

    /// A recording session (a recording transport's) on `shard`.
    pub fn create_record_session(&mut self, shard: usize, now: Instant) -> SessionRef {
        self.create_session_as(shard, Role::Record, now)
    }

    /// Recording side: send `track` as plain RTP from session `s` to `dest` (which the
    /// harness never delivers anywhere: the datagrams are drained like any others).
    pub fn record(
        &mut self,
        s: SessionRef,
        track: &TrackRef,
        dest: SocketAddr,
        now: Instant,
    ) -> Result<(), crate::error::RecordingError> {
        let info = &track.info;
        let down = DownTrackId(next_id());
        self.downs.push((s.id, down));
        let spec = DownTrackSpec::of(info, down);
        self.command(s.shard, now, |reply| Command::AddRecordingTrack {
            id: s.id,
            spec: Box::new(spec),
            dest,
            reply,
        })
        .unwrap_or(Err(crate::error::RecordingError::Closed))?;
        self.route_to(info.key, s.shard, now);
        Ok(())
    }

    /// Route `track` from its publisher's shard to shard `dest` (the ring), as the router
    /// does for a subscriber on another shard.
    fn route_to(&mut self, track: crate::engine::TrackKey, dest: usize, now: Instant) {
        let from = track.shard();
        if from != dest {
            self.cores[from].handle_command(Command::AddRemoteRoute { track, dest }, now);
        }
    }

    /// Subscribe side: forward `track` to session `s`; returns the offer to send.
    pub fn subscribe(
        &mut self,
        s: SessionRef,
        track: &TrackRef,
        now: Instant,
    ) -> Result<String, SubscribeError> {
        let info = &track.info;
        let down = DownTrackId(next_id());
        self.downs.push((s.id, down));
        let spec = DownTrackSpec::of(info, down);
        let offer = self
            .command(s.shard, now, |reply| Command::AddDownTrack {
                id: s.id,
                spec: Box::new(spec),
                reply,
            })
            .unwrap_or(Err(SubscribeError::Closed))?;
        self.route_to(info.key, s.shard, now);
        Ok(offer)
    }

    /// Publish side: publish the peer's data channel `label` of session `s`, as
    /// `PublishTransport::data_publish` does; answered once the channel is open.
    pub fn publish_data(&mut self, s: SessionRef, label: &str, now: Instant) -> DataPublishing {
        let key = TrackKey::new(s.shard, next_id());
        let (tx, rx) = oneshot::channel();
        self.cores[s.shard].handle_command(
            Command::PublishData {
                id: s.id,
                label: label.to_string(),
                key,
                reply: tx,
            },
            now,
        );
        DataPublishing { reply: rx }
    }

    /// Subscribe side: open a channel of data track `data` on session `s` (and route the
    /// track to its shard), as `SubscribeTransport::data_subscribe` does; returns the offer
    /// to send when the connection gets its SCTP m-line with it, `None` when the channel
    /// opens in-band.
    pub fn data_subscribe(
        &mut self,
        s: SessionRef,
        data: &DataTrackRef,
        now: Instant,
    ) -> Result<Option<String>, SubscribeError> {
        let info = data.info.clone();
        let key = info.key;
        let down = DownTrackId(next_id());
        let offer = self
            .command(s.shard, now, |reply| Command::AddDataDown {
                id: s.id,
                down,
                info: Box::new(info),
                reply,
            })
            .unwrap_or(Err(SubscribeError::Closed))?;
        let from = key.shard();
        if from != s.shard {
            self.cores[from]
                .handle_command(Command::AddRemoteDataRoute { key, dest: s.shard }, now);
        }
        Ok(offer)
    }

    /// Subscribe side: the layer ceiling (`spatial`, `temporal`; `u8::MAX`: none) of every
    /// down-track of session `s`, as `Subscriber::set_preferred_layer` sets it.
    pub fn set_preferred_layer(&mut self, s: SessionRef, spatial: u8, temporal: u8, now: Instant) {
        let downs: Vec<DownTrackId> = self
            .downs
            .iter()
            .filter(|(id, _)| *id == s.id)
            .map(|(_, d)| *d)
            .collect();
        for down in downs {
            self.cores[s.shard].handle_command(
                Command::SetPreferredLayer {
                    id: s.id,
                    down,
                    layer: crate::forward::Layer::new(spatial, temporal),
                },
                now,
            );
        }
    }

    /// Subscribe side: apply the peer's answer to the outstanding offer.
    pub fn accept_answer(
        &mut self,
        s: SessionRef,
        answer: &str,
        now: Instant,
    ) -> Result<(), NegotiationError> {
        let sdp = answer.to_string();
        let answer = Box::new(crate::engine::sdp_parse::parse_answer_here(&sdp)?);
        self.command(s.shard, now, |reply| Command::AcceptAnswer {
            id: s.id,
            sdp,
            answer,
            reply,
        })
        .unwrap_or(Err(NegotiationError::Closed))
    }

    /// True once the session reported ICE+DTLS connected.
    pub fn is_connected(&mut self, s: SessionRef) -> bool {
        let Some((_, rx, connected)) = self.events.iter_mut().find(|(id, _, _)| *id == s.id) else {
            return false;
        };
        while let Ok(e) = rx.try_recv() {
            if matches!(e, SessionEvent::Connected) {
                *connected = true;
            }
        }
        *connected
    }

    /// A datagram from `source` to shard `shard`.
    pub fn receive(&mut self, shard: usize, source: SocketAddr, data: &[u8], now: Instant) {
        self.cores[shard].handle_datagram(data, source, now);
    }

    /// End the batch on every shard in order (rings written by shard `i` are read by
    /// shards after it in the same call, by shards before it in the next).
    pub fn tick(&mut self, now: Instant) {
        for c in &mut self.cores {
            c.tick(now);
            c.take_wakes(|_| {});
        }
    }

    /// Hand every outgoing datagram to `f(shard, destination, contents)`, then drop them.
    pub fn drain_outgoing(&mut self, mut f: impl FnMut(usize, SocketAddr, &[u8])) -> usize {
        let mut n = 0;
        for (i, c) in self.cores.iter_mut().enumerate() {
            n += c.outgoing().drain(|dest, data| f(i, dest, data));
        }
        n
    }

    /// A statistics snapshot per shard.
    pub fn stats(&self) -> Vec<ShardStats> {
        self.cores.iter().map(|c| c.snapshot()).collect()
    }
}
