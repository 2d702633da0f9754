//! Rooms: a room name maps to one rheomesh `Router` and the participants (WebSockets) in it.
//! A room is created by its first participant and dropped with its last. This module only
//! keeps membership and delivers messages; it does not know the protocol's actions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use rheomesh::config::MediaConfig;
use rheomesh::router::Router;
use rheomesh::worker::Worker;
use tokio::sync::{mpsc, Mutex, Notify};

use crate::protocol::ServerMessage;

/// Messages a participant's WebSocket writer may have waiting. The browser page never has
/// more than a few in flight; a client that stops reading its socket fills the queue (the
/// writer then waits on TCP) and is disconnected.
pub const OUTBOX_CAPACITY: usize = 256;

/// Where a participant's outgoing messages go (drained by its WebSocket writer). Bounded:
/// when a message does not fit, the participant is told to leave ([`Outbox::overflowed`])
/// instead of the server buffering for a client that does not read.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<ServerMessage>,
    overflow: Arc<Notify>,
}

impl Outbox {
    /// An outbox and the receiver its writer drains.
    pub fn new() -> (Outbox, mpsc::Receiver<ServerMessage>) {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let overflow = Arc::new(Notify::new());
        (Outbox { tx, overflow }, rx)
    }

    /// The participant's writer is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Queue `msg`. False if it was dropped: the queue is full (the participant is then
    /// disconnected) or the participant is gone.
    pub fn send(&self, msg: ServerMessage) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Resolves once a message did not fit (at once if that happened already).
    pub async fn overflowed(&self) {
        self.overflow.notified().await
    }
}

/// A participant id, unique in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParticipantId(u64);

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// One meeting room.
pub struct Room {
    pub name: String,
    pub router: Router,
    participants: StdMutex<HashMap<ParticipantId, Outbox>>,
    meta: StdMutex<Meta>,
}

/// What the room tells about its participants beside media (protocol extensions): display
/// names, who published which track, which tracks are muted at the source. Bounded by the
/// participants and their published tracks; entries go when they do.
#[derive(Default)]
struct Meta {
    names: HashMap<ParticipantId, String>,
    tracks: HashMap<String, TrackMeta>,
}

struct TrackMeta {
    owner: ParticipantId,
    muted: bool,
}

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// A display name as sent by a client, checked: trimmed, 1 to [`MAX_NAME_CHARS`]
/// characters, no control characters.
pub fn check_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "the name is longer than {MAX_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("the name has control characters".into());
    }
    Ok(name.to_owned())
}

impl Room {
    fn meta(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A `Published` message for `ids`, with the names and mute states the room knows.
    pub fn published(&self, publisher_ids: Vec<String>) -> ServerMessage {
        let meta = self.meta();
        let mut names = std::collections::BTreeMap::new();
        let mut muted = Vec::new();
        for id in &publisher_ids {
            if let Some(t) = meta.tracks.get(id) {
                if let Some(name) = meta.names.get(&t.owner) {
                    names.insert(id.clone(), name.clone());
                }
                if t.muted {
                    muted.push(id.clone());
                }
            }
        }
        ServerMessage::Published {
            publisher_ids,
            names,
            muted,
        }
    }

    /// `owner` published track `id` (muted from the start or not).
    pub fn track_published(&self, owner: ParticipantId, id: &str, muted: bool) {
        self.meta()
            .tracks
            .insert(id.to_owned(), TrackMeta { owner, muted });
    }

    /// Track `id` is no longer published.
    pub fn track_unpublished(&self, id: &str) {
        self.meta().tracks.remove(id);
    }

    /// Set `who`'s display name; returns its published tracks (to tell the others).
    pub fn set_name(&self, who: ParticipantId, name: String) -> Vec<String> {
        let mut meta = self.meta();
        meta.names.insert(who, name);
        let mut ids: Vec<String> = meta
            .tracks
            .iter()
            .filter(|(_, t)| t.owner == who)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Mark `who`'s track `id` muted or not: whether that changed, or an error if `id` is
    /// not a track `who` published.
    pub fn set_muted(&self, who: ParticipantId, id: &str, muted: bool) -> Result<bool, String> {
        match self.meta().tracks.get_mut(id) {
            Some(t) if t.owner == who => Ok(std::mem::replace(&mut t.muted, muted) != muted),
            _ => Err(format!("{id:?} is not published by you")),
        }
    }

    fn participants(&self) -> std::sync::MutexGuard<'_, HashMap<ParticipantId, Outbox>> {
        self.participants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send `msg` to every participant but `except`.
    pub fn broadcast_except(&self, except: ParticipantId, msg: &ServerMessage) {
        for (id, outbox) in self.participants().iter() {
            if *id != except {
                let _ = outbox.send(msg.clone());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.participants().len()
    }
}

/// Counts over all rooms, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Census {
    pub rooms: usize,
    pub participants: usize,
    /// Published tracks (publishers) in all rooms.
    pub tracks: usize,
}

/// All rooms of the server.
#[derive(Clone)]
pub struct Rooms {
    worker: Arc<Mutex<Worker>>,
    /// The media configuration of every room's router.
    media: MediaConfig,
    rooms: Arc<Mutex<HashMap<String, Arc<Room>>>>,
    next_id: Arc<AtomicU64>,
    /// Where recordings go (`--record-*`).
    pub record: Arc<crate::record::RecordSettings>,
}

impl Rooms {
    pub fn new(
        worker: Arc<Mutex<Worker>>,
        media: MediaConfig,
        record: crate::record::RecordSettings,
    ) -> Self {
        Self {
            worker,
            media,
            rooms: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            record: Arc::new(record),
        }
    }

    /// Add a participant to room `name` (creating the room and its router if needed).
    pub async fn join(&self, name: &str, outbox: Outbox) -> (Arc<Room>, ParticipantId) {
        let id = ParticipantId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut rooms = self.rooms.lock().await;
        let room = match rooms.get(name) {
            Some(room) => room.clone(),
            None => {
                let router = self.worker.lock().await.new_router(self.media.clone());
                tracing::info!(room = name, router = router.id(), "room created");
                let room = Arc::new(Room {
                    name: name.to_owned(),
                    router,
                    participants: StdMutex::default(),
                    meta: StdMutex::default(),
                });
                rooms.insert(name.to_owned(), room.clone());
                room
            }
        };
        room.participants().insert(id, outbox);
        (room, id)
    }

    /// Room `name`, if it exists.
    pub async fn find(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.lock().await.get(name).cloned()
    }

    /// Rooms, participants and published tracks right now.
    pub async fn census(&self) -> Census {
        let rooms = self.rooms.lock().await;
        rooms.values().fold(
            Census {
                rooms: rooms.len(),
                ..Census::default()
            },
            |mut c, room| {
                c.participants += room.len();
                c.tracks += room.router.publisher_ids().len();
                c
            },
        )
    }

    /// Remove a participant; the room goes away with its last participant.
    pub async fn leave(&self, room: &Arc<Room>, id: ParticipantId) {
        let mut rooms = self.rooms.lock().await;
        room.participants().remove(&id);
        {
            let mut meta = room.meta();
            meta.names.remove(&id);
            meta.tracks.retain(|_, t| t.owner != id);
        }
        if room.len() == 0 && rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room)) {
            rooms.remove(&room.name);
            tracing::info!(room = room.name, "room closed");
            // Nobody is left, but a transport may still be on its way (a participant's
            // task finishing): close whatever the router still has.
            let router = room.router.clone();
            tokio::spawn(async move { router.close().await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("  Ada  ").unwrap(), "Ada");
        assert_eq!(check_name("Zoë 🎤").unwrap(), "Zoë 🎤");
        assert!(check_name("   ").is_err());
        assert!(check_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(check_name(&"é".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(check_name("a\u{7}b").is_err());
        assert!(check_name("a\nb").is_err());
    }
}
