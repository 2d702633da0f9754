//! WHIP ingest and WHEP playback in the example (`docs/PROTOCOL.md`, "HTTP endpoints"):
//! `POST /whip/{room}/{stream}`, `POST /whep/{room}/{stream}` and their resources, served
//! by `rheomesh::whip::axum`. A WHIP session is a participant of its room named after its
//! stream: the room's WebSocket participants get `Published` (with that name) for its
//! tracks and `Unpublished` when it ends, as for any participant. A WHEP viewer of
//! `{stream}` gets that WHIP session's tracks, or else the published track whose id is
//! `{stream}`.
//!
//! With `--redis`, a WHEP viewer on one node may play a stream published on another (by WHIP
//! or a WebSocket participant): [`whep_routes`] answers that `POST` itself, relaying the
//! stream's tracks into this node's router of the room first (`Cluster::use_relayed`) and
//! holding the relays, and the room, while the WHEP session lives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{OriginalUri, Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
use rheomesh::publisher::Publisher;
use rheomesh::router::Router;
use rheomesh::whip::axum::WhipHost;
use rheomesh::whip::{Viewing, Whip};

use crate::cluster::Carried;
use crate::protocol::ServerMessage;
use crate::room::{Outbox, ParticipantId, Room, Rooms, MAX_NAME_CHARS};

/// Longest room name (as for `/socket`).
const MAX_ROOM_NAME: usize = 128;
/// Longest stream name kept in the cluster's entries (a WHEP viewer on another node finds
/// the session's tracks by it).
const MAX_STREAM_NAME: usize = 128;
/// Largest `POST` body read (as axum's default limit for the library's handler; the offer
/// itself is limited by `Whip`).
const MAX_BODY: usize = 2 * 1024 * 1024;

/// A WHIP session's participant: its room and id.
type Joined = (Arc<Room>, ParticipantId);

/// The tracks of each live WHIP session, by (room, stream).
type Streams = HashMap<(String, String), Vec<String>>;

/// The rooms WHIP sessions publish into.
#[derive(Clone)]
pub struct Host {
    rooms: Rooms,
    /// Participants joined for a `POST` being answered, by room.
    pending: Arc<StdMutex<HashMap<String, Vec<Joined>>>>,
    /// The tracks of each live WHIP session, by (room, stream).
    streams: Arc<StdMutex<Streams>>,
}

impl Host {
    pub fn new(rooms: Rooms) -> Host {
        Host {
            rooms,
            pending: Arc::default(),
            streams: Arc::default(),
        }
    }

    fn take(&self, room: &str) -> Option<Joined> {
        let mut pending = lock(&self.pending);
        let list = pending.get_mut(room)?;
        let entry = list.pop();
        if list.is_empty() {
            pending.remove(room);
        }
        entry
    }
}

impl WhipHost for Host {
    async fn router(&self, room: String) -> Option<Router> {
        if room.is_empty() || room.len() > MAX_ROOM_NAME {
            return None;
        }
        // The session is a participant from now on (it keeps the room alive); nothing is
        // sent to it: its outbox is never read.
        let (outbox, _unread) = Outbox::new();
        let (joined, id) = self.rooms.join(&room, outbox).await;
        let router = joined.router.clone();
        lock(&self.pending)
            .entry(room)
            .or_default()
            .push((joined, id));
        Some(router)
    }

    fn published(
        &self,
        room: String,
        stream: String,
        resource: String,
        publishers: Vec<Publisher>,
    ) {
        let Some((joined, id)) = self.take(&room) else {
            return;
        };
        let name: String = stream.chars().take(MAX_NAME_CHARS).collect();
        let name = crate::room::check_name(&name).unwrap_or_else(|_| "WHIP".into());
        joined.set_name(id, name);
        let ids: Vec<String> = publishers.iter().map(|p| p.id()).collect();
        // Announced with the stream with --redis, for WHEP viewers on other nodes.
        let announced = (stream.len() <= MAX_STREAM_NAME).then(|| stream.clone());
        for p in &publishers {
            joined.track_published(id, p, false, announced.clone());
        }
        tracing::info!(room, stream, resource, participant = %id, tracks = ?ids, "WHIP session published");
        joined.broadcast_except(id, &joined.published(ids.clone()));
        let key = (room.clone(), stream.clone());
        lock(&self.streams).insert(key.clone(), ids);
        let streams = self.streams.clone();
        let rooms = self.rooms.clone();
        tokio::spawn(async move {
            for p in publishers {
                p.closed().await;
                joined.track_unpublished(&p.id());
                joined.broadcast_except(
                    id,
                    &ServerMessage::Unpublished {
                        publisher_id: p.id(),
                    },
                );
            }
            tracing::info!(room = joined.name, resource, "WHIP session ended");
            lock(&streams).remove(&key);
            rooms.leave(&joined, id).await;
        });
    }

    async fn whep_tracks(&self, room: String, stream: String) -> Option<(Router, Vec<String>)> {
        let joined = self.rooms.find(&room).await?;
        let ids = lock(&self.streams)
            .get(&(room, stream.clone()))
            .cloned()
            .unwrap_or_else(|| vec![stream]);
        Some((joined.router.clone(), ids))
    }

    fn refused(&self, room: String, _stream: String) {
        if let Some((joined, id)) = self.take(&room) {
            let rooms = self.rooms.clone();
            tokio::spawn(async move { rooms.leave(&joined, id).await });
        }
    }
}

impl Host {
    /// With `--redis`: the tracks a WHEP viewer of `stream` in `room` gets from other nodes,
    /// if `stream` is not a WHIP session or a track of this node (empty otherwise).
    async fn remote_stream(&self, room: &str, stream: &str) -> Vec<String> {
        let Some(cluster) = self.rooms.cluster() else {
            return Vec::new();
        };
        if room.is_empty() || room.len() > MAX_ROOM_NAME {
            return Vec::new();
        }
        if lock(&self.streams).contains_key(&(room.to_owned(), stream.to_owned())) {
            return Vec::new();
        }
        if let Some(r) = self.rooms.find(room).await {
            if r.local_publisher(stream).is_some() {
                return Vec::new();
            }
        }
        cluster.remote_stream(room, stream).await
    }

    /// A WHEP viewer in `room` of `ids`, tracks published on other nodes: the viewer joins
    /// the room here (keeping it, and its router, alive), the tracks are relayed into its
    /// router, then the viewer's offer is answered. The relays and the membership are held
    /// until every track of the session has ended (the viewer's `DELETE`, its connection
    /// closing, the tracks unpublished on their node).
    async fn view_remote(
        &self,
        whip: &Whip,
        room: &str,
        ids: Vec<String>,
        location: &str,
        req: &rheomesh::whip::Request<'_>,
    ) -> rheomesh::whip::Response {
        // Never read, as a WHIP session's (its receiver is dropped: nothing waits in it).
        let (outbox, _unread) = Outbox::new();
        let (joined, me) = self.rooms.join(room, outbox).await;
        let mut leases = Vec::new();
        if let Some(cluster) = joined.cluster().cloned() {
            // A room just created here learns its remote tracks now.
            cluster.refresh(&joined).await;
            let relayed = futures_util::future::join_all(
                ids.iter()
                    .map(|t| cluster.use_relayed(&joined, Carried::Track, t)),
            )
            .await;
            for (track, lease) in ids.iter().zip(relayed) {
                match lease {
                    Ok(l) => leases.push(l),
                    Err(e) => {
                        tracing::warn!(room, track, "WHEP of a remote track: not relayed: {e}")
                    }
                }
            }
        }
        match whip.post_whep(&joined.router, location, &ids, req).await {
            Ok(Viewing {
                response,
                resource,
                subscribers,
            }) => {
                tracing::info!(room, resource, participant = %me, tracks = ?ids, "WHEP session of remote tracks");
                let rooms = self.rooms.clone();
                tokio::spawn(async move {
                    for s in &subscribers {
                        s.closed().await;
                    }
                    drop(leases);
                    tracing::info!(
                        room = joined.name,
                        resource,
                        "WHEP session of remote tracks ended"
                    );
                    rooms.leave(&joined, me).await;
                });
                response
            }
            Err(r) => {
                drop(leases);
                self.rooms.leave(&joined, me).await;
                r
            }
        }
    }
}

/// The `/whep` routes: the library's (`rheomesh::whip::axum::whep_router`), except that with
/// `--redis` a `POST` for a stream published on another node is answered by
/// [`Host::view_remote`] (once its bearer token, if one is required, is right: nothing is
/// relayed for a client that may not view).
pub fn whep_routes(whip: Whip, host: Host) -> axum::Router {
    let remote = RemoteWhep {
        whip: whip.clone(),
        host: host.clone(),
    };
    rheomesh::whip::axum::whep_router(whip, host)
        .route_layer(axum::middleware::from_fn_with_state(remote, remote_whep))
}

#[derive(Clone)]
struct RemoteWhep {
    whip: Whip,
    host: Host,
}

/// Around every `/whep` route: a `POST /whep/{room}/{stream}` of a remote stream is answered
/// here; everything else goes to the library's handlers.
async fn remote_whep(
    State(r): State<RemoteWhep>,
    path: Result<Path<HashMap<String, String>>, PathRejection>,
    req: Request,
    next: Next,
) -> axum::response::Response {
    let target = match &path {
        Ok(Path(p)) if req.method() == Method::POST && !p.contains_key("resource") => {
            p.get("room").cloned().zip(p.get("stream").cloned())
        }
        _ => None,
    };
    let Some((room, stream)) = target else {
        return next.run(req).await;
    };
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if !r.whip.is_authorized(authorization) {
        return next.run(req).await;
    }
    let ids = r.host.remote_stream(&room, &stream).await;
    if ids.is_empty() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let get = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let is_sdp = get("content-type")
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/sdp"));
    let text = std::str::from_utf8(&bytes).ok().filter(|t| {
        is_sdp && t.len() <= rheomesh::whip::MAX_OFFER && t.trim_start().starts_with("v=0")
    });
    let Some(text) = text else {
        // Not an offer that could be answered: nothing is relayed for it, the library
        // answers (400, 413, 415).
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    let request = rheomesh::whip::Request {
        content_type: get("content-type"),
        authorization: get("authorization"),
        if_match: get("if-match"),
        body: text,
    };
    let location = parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.path().to_owned(), |u| u.path().to_owned());
    let response = r
        .host
        .view_remote(&r.whip, &room, ids, &location, &request)
        .await;
    response.into_response()
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
