//! The recording transport: published tracks out as plain RTP (no ICE, DTLS or SRTP) to
//! an address of the user's choosing, for ffmpeg or GStreamer to record or play.
//!
//! Each publisher recorded through one transport gets two ports, RTP and RTCP, in the
//! order it was first described or recorded: the transport's port, then port + 2, and so
//! on. [`RecordingTransport::generate_sdp_for`] describes several tracks (a participant's
//! audio and video) in one SDP, so that one receiver records them together, lined up by
//! the sender reports each track sends to its RTCP port. The packets come from the
//! shard's own socket; the shard side is [`crate::engine::core`]'s `record` module.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::oneshot;

use super::Core;
use crate::config::WebRTCTransportConfig;
use crate::engine::command::{Command, DownTrackSpec, Role, TrackInfo};
use crate::engine::{next_id, DownTrackId};
use crate::error::RecordingError;
use crate::publisher::MediaKind;
use crate::router::{RouteOwner, RouterInner, Subscription};

/// One publisher this transport describes or records.
struct Entry {
    publisher_id: String,
    /// Its RTP port (RTCP on the next).
    port: u16,
    /// While recording: the down-track and its route.
    route: Option<Subscription>,
}

pub(crate) struct RecordInner {
    core: Core,
    router: Arc<RouterInner>,
    weak: Weak<RecordInner>,
    ip: IpAddr,
    port: u16,
    entries: Mutex<Vec<Entry>>,
    /// One `start_recording` at a time: two for the same publisher would otherwise both
    /// pass the "already recording" check and leave one down-track without an owner.
    starting: tokio::sync::Mutex<()>,
}

impl RecordInner {
    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The RTP port of `publisher_id`, given it the first time.
    fn port_for(&self, publisher_id: &str) -> Result<u16, RecordingError> {
        let mut entries = self.entries();
        if let Some(e) = entries.iter().find(|e| e.publisher_id == publisher_id) {
            return Ok(e.port);
        }
        let port = u32::from(self.port) + 2 * entries.len() as u32;
        // RTCP goes to port + 1, which must exist too.
        let port = u16::try_from(port)
            .ok()
            .filter(|&p| p < u16::MAX)
            .ok_or(RecordingError::NoPort)?;
        entries.push(Entry {
            publisher_id: publisher_id.to_string(),
            port,
            route: None,
        });
        Ok(port)
    }

    /// The published track `publisher_id` and its shard, with the payload parameters of
    /// the codec its publisher sends first (it may have negotiated several; the shard knows
    /// which arrives; before the first packet, the first negotiated).
    async fn track(&self, publisher_id: &str) -> Result<(TrackInfo, usize), RecordingError> {
        let (mut info, shard) = self
            .router
            .lock()
            .get(publisher_id)
            .map(|p| (p.info.clone(), p.shard))
            .ok_or_else(|| RecordingError::UnknownPublisher(publisher_id.to_string()))?;
        let (tx, rx) = oneshot::channel();
        let asked = self.router.engine.shard(shard).is_some_and(|s| {
            s.send(Command::SentPayloadType {
                track: info.key,
                reply: tx,
            })
        });
        if asked {
            if let Ok(Some(pt)) = rx.await {
                if let Some(i) = info.params.iter().position(|p| *p.pt() == pt) {
                    info.params[..=i].rotate_right(1);
                }
            }
        }
        Ok((info, shard))
    }

    /// Stop recording the down-track `down` (no-op if it already stopped).
    fn stop(&self, down: DownTrackId) {
        let route = self.entries().iter_mut().find_map(|e| {
            if e.route.as_ref().is_some_and(|r| r.down == down) {
                e.route.take()
            } else {
                None
            }
        });
        if let Some(route) = route {
            self.core.send(Command::RemoveDownTrack {
                id: self.core.id,
                down,
            });
            self.router.close_route(&route);
        }
    }

    fn stop_all(&self) {
        let routes: Vec<Subscription> = self
            .entries()
            .iter_mut()
            .filter_map(|e| e.route.take())
            .collect();
        for r in routes {
            self.core.send(Command::RemoveDownTrack {
                id: self.core.id,
                down: r.down,
            });
            self.router.close_route(&r);
        }
    }
}

impl RouteOwner for RecordInner {
    fn remove_subscription(&self, down: DownTrackId, _renegotiate: bool) {
        self.stop(down);
    }
}

impl super::SessionHandler for RecordInner {
    fn core(&self) -> &Core {
        &self.core
    }
    fn session_closed(&self) {
        self.core.close_with(|| self.stop_all());
    }
}

impl Drop for RecordInner {
    fn drop(&mut self) {
        if !self.core.is_closed() {
            self.core.request_close();
        }
        self.stop_all();
    }
}

/// Sends published tracks as plain RTP to one receiver, as the original Rheomesh's
/// `RecordingTransport` does: [`generate_sdp`](Self::generate_sdp) describes what will
/// arrive (give it to `ffmpeg -protocol_whitelist file,rtp,udp -i stream.sdp -c copy
/// out.mkv` or GStreamer's `sdpdemux`), [`start_recording`](Self::start_recording)
/// starts sending. Start the receiver first: video begins at a keyframe, which is
/// requested from the publisher when recording starts.
///
/// A cheap handle (clone freely); the transport closes when [`close`](Self::close) is
/// called, when its router's worker stops, or when the last handle is dropped.
#[derive(Clone)]
pub struct RecordingTransport {
    inner: Arc<RecordInner>,
}

impl std::fmt::Debug for RecordingTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingTransport")
            .field("id", &self.inner.core.id.0)
            .field("ip", &self.inner.ip)
            .field("port", &self.inner.port)
            .finish()
    }
}

impl RecordingTransport {
    pub(crate) async fn create(
        router: &Arc<RouterInner>,
        ip: &str,
        port: u16,
    ) -> Result<RecordingTransport, RecordingError> {
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| RecordingError::BadAddress(format!("{ip:?} is not an IP address")))?;
        if port == 0 || port == u16::MAX || ip.is_unspecified() || ip.is_multicast() {
            return Err(RecordingError::BadAddress(format!(
                "cannot send RTP to {}",
                SocketAddr::new(ip, port)
            )));
        }
        let (core, events) = router
            .create_session(Role::Record, &WebRTCTransportConfig::default())
            .await;
        if core.is_closed() {
            return Err(RecordingError::Closed);
        }
        let inner = Arc::new_cyclic(|weak| RecordInner {
            core,
            router: router.clone(),
            weak: weak.clone(),
            ip,
            port,
            entries: Mutex::new(Vec::new()),
            starting: tokio::sync::Mutex::new(()),
        });
        super::spawn_event_loop(events, &inner);
        router.adopt(&inner);
        Ok(RecordingTransport { inner })
    }

    /// The transport's id, unique in the process (the `transport` field of its tracing
    /// spans).
    pub fn id(&self) -> u64 {
        self.inner.core.id.0
    }

    /// The id of the router this transport belongs to.
    pub fn router_id(&self) -> &str {
        &self.inner.router.id
    }

    /// The receiver's address: its IP and the first RTP port.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.inner.ip, self.inner.port)
    }

    /// The RTP port `publisher_id` is (or will be) sent to, if it was described or
    /// recorded through this transport.
    pub fn port_of(&self, publisher_id: &str) -> Option<u16> {
        self.inner
            .entries()
            .iter()
            .find(|e| e.publisher_id == publisher_id)
            .map(|e| e.port)
    }

    /// An SDP describing `publisher_id`'s track as this transport will send it (its codec
    /// and payload types as the publisher negotiated them, at its port), for ffmpeg or
    /// GStreamer.
    pub async fn generate_sdp(&self, publisher_id: String) -> Result<String, RecordingError> {
        self.generate_sdp_for(&[publisher_id]).await
    }

    /// One SDP describing several tracks (each at its own port pair), so that one
    /// receiver records them together: typically a participant's audio and video.
    pub async fn generate_sdp_for(
        &self,
        publisher_ids: &[String],
    ) -> Result<String, RecordingError> {
        let inner = &self.inner;
        if inner.core.is_closed() {
            return Err(RecordingError::Closed);
        }
        if publisher_ids.is_empty() {
            return Err(RecordingError::BadRequest("no publisher id".into()));
        }
        for (i, id) in publisher_ids.iter().enumerate() {
            if publisher_ids[..i].contains(id) {
                return Err(RecordingError::BadRequest(format!("{id} is named twice")));
            }
        }
        let mut tracks = Vec::with_capacity(publisher_ids.len());
        for id in publisher_ids {
            let (info, _) = inner.track(id).await?;
            if info.params.is_empty() {
                return Err(RecordingError::NoCodec(id.clone()));
            }
            tracks.push(info);
        }
        let mut ports = Vec::with_capacity(tracks.len());
        for id in publisher_ids {
            ports.push(inner.port_for(id)?);
        }
        Ok(describe(inner.ip, &tracks, &ports))
    }

    /// Start sending `publisher_id`'s track to its port (given it here if
    /// [`generate_sdp`](Self::generate_sdp) did not). Of a simulcast track the top layer
    /// is sent.
    pub async fn start_recording(
        &self,
        publisher_id: String,
    ) -> Result<RecordingTrack, RecordingError> {
        let inner = &self.inner;
        let core = &inner.core;
        let _turn = inner.starting.lock().await;
        if core.is_closed() {
            return Err(RecordingError::Closed);
        }
        let (info, publisher_shard) = inner.track(&publisher_id).await?;
        let port = inner.port_for(&publisher_id)?;
        if inner
            .entries()
            .iter()
            .any(|e| e.publisher_id == publisher_id && e.route.is_some())
        {
            return Err(RecordingError::AlreadyRecording(publisher_id));
        }
        let down = DownTrackId(next_id());
        let (tx, rx) = oneshot::channel();
        if !core.send(Command::AddRecordingTrack {
            id: core.id,
            spec: Box::new(DownTrackSpec::of(&info, down)),
            dest: SocketAddr::new(inner.ip, port),
            reply: tx,
        }) {
            return Err(RecordingError::Closed);
        }
        rx.await.unwrap_or(Err(RecordingError::Closed))?;
        let route = Subscription {
            publisher_id: publisher_id.clone(),
            track: info.key,
            down,
            publisher_shard,
            subscriber_shard: core.shard,
        };
        if let Some(e) = inner
            .entries()
            .iter_mut()
            .find(|e| e.publisher_id == publisher_id)
        {
            e.route = Some(route.clone());
        }
        let owner: Weak<dyn RouteOwner> = inner.weak.clone();
        if !inner.router.open_route(&route, owner) {
            // The publisher left meanwhile.
            inner.stop(down);
            return Err(RecordingError::UnknownPublisher(publisher_id));
        }
        Ok(RecordingTrack {
            publisher_id,
            port,
            kind: MediaKind::from(info.kind),
            down,
            transport: inner.weak.clone(),
        })
    }

    /// Stop sending `publisher_id`'s track (its port stays its own).
    pub async fn stop_recording(&self, publisher_id: &str) -> Result<(), RecordingError> {
        let down = self
            .inner
            .entries()
            .iter()
            .find(|e| e.publisher_id == publisher_id)
            .and_then(|e| e.route.as_ref().map(|r| r.down))
            .ok_or_else(|| RecordingError::NotRecording(publisher_id.to_string()))?;
        self.inner.stop(down);
        Ok(())
    }

    /// Stop every recording and close the transport; returns once its shard has.
    pub async fn close(&self) {
        self.inner.stop_all();
        self.inner.core.close_and_wait().await;
    }

    /// Whether the transport is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.core.is_closed()
    }

    /// A snapshot of the transport's statistics (datagrams and bytes sent), taken on its
    /// shard. Fails only if the transport is closed.
    pub async fn stats(
        &self,
    ) -> Result<crate::stats::TransportStats, crate::error::TransportError> {
        self.inner.core.stats().await
    }
}

/// One track being recorded, from [`RecordingTransport::start_recording`].
#[derive(Debug, Clone)]
pub struct RecordingTrack {
    publisher_id: String,
    port: u16,
    kind: MediaKind,
    down: DownTrackId,
    transport: Weak<RecordInner>,
}

impl RecordingTrack {
    /// The recorded publisher's id.
    pub fn publisher_id(&self) -> &str {
        &self.publisher_id
    }

    /// The RTP port it is sent to (RTCP on the next).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    /// Stop sending it.
    pub fn close(&self) {
        if let Some(t) = self.transport.upgrade() {
            t.stop(self.down);
        }
    }
}

/// The SDP of `tracks` at `ports` on `ip`: one `m=` line each with the publisher's
/// preferred payload type, its `rtpmap` and `fmtp` lines.
fn describe(ip: IpAddr, tracks: &[TrackInfo], ports: &[u16]) -> String {
    use std::fmt::Write;
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = String::new();
    let _ = write!(
        s,
        "v=0\r\no=- 0 0 IN {family} {ip}\r\ns=Rheomesh recording\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
    );
    for (t, port) in tracks.iter().zip(ports) {
        let kind = match t.kind {
            str0m::media::MediaKind::Audio => "audio",
            str0m::media::MediaKind::Video => "video",
        };
        // The publisher's preferred codec only: the one it sends, and the only payload
        // type the recording forwards (ffmpeg reads one format per m-line).
        let Some(p) = t.params.first() else {
            continue;
        };
        let _ = write!(s, "m={kind} {port} RTP/AVP {}\r\n", p.pt());
        {
            let spec = p.spec();
            let pt = *p.pt();
            match spec.channels {
                Some(ch) if ch > 1 => {
                    let _ = write!(
                        s,
                        "a=rtpmap:{pt} {}/{}/{ch}\r\n",
                        spec.codec,
                        spec.clock_rate.get()
                    );
                }
                _ => {
                    let _ = write!(
                        s,
                        "a=rtpmap:{pt} {}/{}\r\n",
                        spec.codec,
                        spec.clock_rate.get()
                    );
                }
            }
            let fmtp = spec.format.to_string();
            if !fmtp.is_empty() {
                let _ = write!(s, "a=fmtp:{pt} {fmtp}\r\n");
            }
        }
        let _ = write!(s, "a=recvonly\r\n");
    }
    s
}
