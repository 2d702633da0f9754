//! WHIP ingest in the example (`docs/PROTOCOL.md`, "HTTP endpoints"): `POST
//! /whip/{room}/{stream}` and its resource, served by `rheomesh::whip::axum`. A WHIP
//! session is a participant of its room named after its stream: the room's WebSocket
//! participants get `Published` (with that name) for its tracks and `Unpublished` when it
//! ends, as for any participant.

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

/// The rooms WHIP sessions publish into.
#[derive(Clone)]
pub struct Host {
    rooms: Rooms,
    /// Participants joined for a `POST` being answered, by room.
    pending: Arc<StdMutex<HashMap<String, Vec<Joined>>>>,
}

impl Host {
    pub fn new(rooms: Rooms) -> Host {
        Host {
            rooms,
            pending: Arc::default(),
        }
    }

    fn take(&self, room: &str) -> Option<Joined> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
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
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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
        for p in &ids {
            joined.track_published(id, p, false);
        }
        tracing::info!(room, stream, resource, participant = %id, tracks = ?ids, "WHIP session published");
        joined.broadcast_except(id, &joined.published(ids));
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
            rooms.leave(&joined, id).await;
        });
    }

    fn refused(&self, room: String, _stream: String) {
        if let Some((joined, id)) = self.take(&room) {
            let rooms = self.rooms.clone();
            tokio::spawn(async move { rooms.leave(&joined, id).await });
        }
    }
}
