//! Rooms: a room name maps to one rheomesh `Router` and the participants (WebSockets) in it.
//! A room is created by its first participant and dropped with its last. This module only
//! keeps membership and delivers messages; it does not know the protocol's actions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};

use rheomesh::config::MediaConfig;
use rheomesh::publisher::Publisher;
use rheomesh::router::Router;
use rheomesh::worker::Worker;
use tokio::sync::{mpsc, Mutex, Notify};

use crate::cluster::Cluster;
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
    /// With `--redis`: where this room's tracks are announced (`cluster.rs`).
    cluster: Option<Cluster>,
}

/// What the room tells about its participants beside media (protocol extensions): display
/// names, who published which track, which tracks are muted at the source. Bounded by the
/// participants and their published tracks; entries go when they do.
#[derive(Default)]
struct Meta {
    names: HashMap<ParticipantId, String>,
    tracks: HashMap<String, TrackMeta>,
    /// With `--redis`: the room's tracks published on other nodes (`cluster.rs`).
    remote: BTreeMap<String, RemoteTrack>,
}

struct TrackMeta {
    owner: ParticipantId,
    muted: bool,
    publisher: Publisher,
}

/// A track of the room published on another node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrack {
    pub node: String,
    pub name: Option<String>,
}

/// What [`Room::set_remote_tracks`] changed.
#[derive(Debug, Default)]
pub struct RemoteChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// (tracks, their new name)
    pub renamed: Vec<(Vec<String>, String)>,
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
            } else if let Some(name) = meta.remote.get(id).and_then(|r| r.name.as_ref()) {
                names.insert(id.clone(), name.clone());
            }
        }
        ServerMessage::Published {
            publisher_ids,
            names,
            muted,
        }
    }

    /// `owner` published `publisher` (muted from the start or not).
    pub fn track_published(&self, owner: ParticipantId, publisher: &Publisher, muted: bool) {
        let id = publisher.id();
        let name = {
            let mut meta = self.meta();
            meta.tracks.insert(
                id.clone(),
                TrackMeta {
                    owner,
                    muted,
                    publisher: publisher.clone(),
                },
            );
            meta.names.get(&owner).cloned()
        };
        if let Some(c) = &self.cluster {
            c.announce(&self.name, &id, name, Some(kind_name(publisher)));
        }
    }

    /// Track `id` is no longer published.
    pub fn track_unpublished(&self, id: &str) {
        let was_local = self.meta().tracks.remove(id).is_some();
        if let (true, Some(c)) = (was_local, &self.cluster) {
            c.withdraw(&self.name, id);
        }
    }

    /// Set `who`'s display name; returns its published tracks (to tell the others).
    pub fn set_name(&self, who: ParticipantId, name: String) -> Vec<String> {
        let mut meta = self.meta();
        meta.names.insert(who, name.clone());
        let mut tracks: Vec<(String, String)> = meta
            .tracks
            .iter()
            .filter(|(_, t)| t.owner == who)
            .map(|(id, t)| (id.clone(), kind_name(&t.publisher)))
            .collect();
        drop(meta);
        tracks.sort();
        if let Some(c) = &self.cluster {
            for (id, kind) in &tracks {
                c.announce(&self.name, id, Some(name.clone()), Some(kind.clone()));
            }
        }
        tracks.into_iter().map(|(id, _)| id).collect()
    }

    /// The cluster this room's tracks are announced in (`--redis`).
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// The local publisher of track `id` (not a relayed copy).
    pub fn local_publisher(&self, id: &str) -> Option<Publisher> {
        self.meta().tracks.get(id).map(|t| t.publisher.clone())
    }

    /// The tracks published by this node's participants: (id, name, kind).
    pub fn local_tracks(&self) -> Vec<(String, Option<String>, Option<String>)> {
        let meta = self.meta();
        meta.tracks
            .iter()
            .map(|(id, t)| {
                (
                    id.clone(),
                    meta.names.get(&t.owner).cloned(),
                    Some(kind_name(&t.publisher)),
                )
            })
            .collect()
    }

    /// Track `id` if it is published on another node.
    pub fn remote_track(&self, id: &str) -> Option<RemoteTrack> {
        self.meta().remote.get(id).cloned()
    }

    /// Every track a participant of this room can subscribe to: the router's, or with
    /// `--redis` those published on this node and on the others (not the router's relayed
    /// copies, which come and go with subscriptions and with the track on its node).
    pub fn track_ids(&self) -> Vec<String> {
        if self.cluster.is_none() {
            return self.router.publisher_ids();
        }
        let meta = self.meta();
        let ids: BTreeSet<String> = meta
            .tracks
            .keys()
            .chain(meta.remote.keys())
            .cloned()
            .collect();
        ids.into_iter().collect()
    }

    /// Replace the tracks published on other nodes; what changed, to tell the participants.
    pub fn set_remote_tracks(&self, remote: BTreeMap<String, RemoteTrack>) -> RemoteChanges {
        let mut meta = self.meta();
        let old = std::mem::replace(&mut meta.remote, remote);
        let mut changes = RemoteChanges::default();
        let mut renamed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, t) in &meta.remote {
            match old.get(id) {
                None => changes.added.push(id.clone()),
                Some(o) if o.name != t.name => {
                    if let Some(name) = &t.name {
                        renamed.entry(name.clone()).or_default().push(id.clone());
                    }
                }
                Some(_) => {}
            }
        }
        changes.removed = old
            .into_keys()
            .filter(|id| !meta.remote.contains_key(id))
            .collect();
        changes.renamed = renamed.into_iter().map(|(n, ids)| (ids, n)).collect();
        changes
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

    /// Send `msg` to every participant.
    pub fn broadcast(&self, msg: &ServerMessage) {
        for outbox in self.participants().values() {
            let _ = outbox.send(msg.clone());
        }
    }

    pub fn len(&self) -> usize {
        self.participants().len()
    }
}

fn kind_name(p: &Publisher) -> String {
    format!("{:?}", p.kind()).to_lowercase()
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
    /// With `--redis`: the cluster, set once at start.
    cluster: Arc<OnceLock<Cluster>>,
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
            cluster: Arc::default(),
        }
    }

    /// Announce every room's tracks through `cluster` (rooms created from now on).
    pub fn set_cluster(&self, cluster: Cluster) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster (`--redis`), once started.
    pub fn cluster(&self) -> Option<Cluster> {
        self.cluster.get().cloned()
    }

    /// Every room right now.
    pub async fn all(&self) -> Vec<Arc<Room>> {
        self.rooms.lock().await.values().cloned().collect()
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
                    cluster: self.cluster.get().cloned(),
                });
                rooms.insert(name.to_owned(), room.clone());
                if let Some(c) = &room.cluster {
                    c.room_created(room.clone());
                }
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
        let gone: Vec<String> = {
            let mut meta = room.meta();
            meta.names.remove(&id);
            let gone = meta
                .tracks
                .iter()
                .filter(|(_, t)| t.owner == id)
                .map(|(k, _)| k.clone())
                .collect();
            meta.tracks.retain(|_, t| t.owner != id);
            gone
        };
        if let Some(c) = &room.cluster {
            for track in gone {
                c.withdraw(&room.name, &track);
            }
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
