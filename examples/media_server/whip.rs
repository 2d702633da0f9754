//! WHIP ingest and WHEP playback in the example (`docs/PROTOCOL.md`, "HTTP endpoints"):
//! `POST /whip/{room}/{stream}`, `POST /whep/{room}/{stream}` and their resources, served
//! by `rheomesh::whip::axum`. A WHIP session is a participant of its room named after its
//! stream: the room's WebSocket participants get `Published` (with that name) for its
//! tracks and `Unpublished` when it ends, as for any participant. A WHEP viewer of
//! `{stream}` gets that WHIP session's tracks, or else the published track whose id is
//! `{stream}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use rheomesh::publisher::Publisher;
use rheomesh::router::Router;
use rheomesh::whip::axum::WhipHost;

use crate::protocol::ServerMessage;
use crate::room::{Outbox, ParticipantId, Room, Rooms, MAX_NAME_CHARS};

/// Longest room name (as for `/socket`).
const MAX_ROOM_NAME: usize = 128;

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
        for p in &publishers {
            joined.track_published(id, p, false);
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

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
