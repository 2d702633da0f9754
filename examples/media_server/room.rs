//! Rooms: a room name maps to one rheomesh `Router` and the participants (WebSockets) in it.
//! A room is created by its first participant and dropped with its last. This module only
//! keeps membership and delivers messages; it does not know the protocol's actions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};

use rheomesh::config::MediaConfig;
use rheomesh::data::DataPublisher;
use rheomesh::publisher::Publisher;
use rheomesh::router::Router;
use rheomesh::worker::Worker;
use tokio::sync::{mpsc, Mutex, Notify};

use crate::cluster::{Announced, Carried, Cluster};
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
    /// The data channels published by this node's participants.
    data: HashMap<String, DataMeta>,
    /// With `--redis`: the room's tracks published on other nodes (`cluster.rs`).
    remote: BTreeMap<String, RemoteTrack>,
    /// With `--redis`: the room's data channels published on other nodes: label → node.
    remote_data: BTreeMap<String, String>,
}

impl Meta {
    /// What the cluster is told about local track `id`.
    fn announced(&self, id: &str) -> Option<Announced> {
        let t = self.tracks.get(id)?;
        Some(Announced {
            name: self.names.get(&t.owner).cloned(),
            kind: Some(kind_name(&t.publisher)),
            muted: t.muted,
            stream: t.stream.clone(),
        })
    }
}

struct TrackMeta {
    owner: ParticipantId,
    muted: bool,
    publisher: Publisher,
    /// The WHIP stream whose session published it.
    stream: Option<String>,
}

struct DataMeta {
    owner: ParticipantId,
    publisher: DataPublisher,
}

/// A track of the room published on another node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrack {
    pub node: String,
    pub name: Option<String>,
    /// Muted at the source.
    pub muted: bool,
    /// The WHIP stream whose session published it.
    pub stream: Option<String>,
}

/// What [`Room::set_remote`] changed.
#[derive(Debug, Default)]
pub struct RemoteChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// (tracks, their new name)
    pub renamed: Vec<(Vec<String>, String)>,
    /// (track, muted now) of the tracks that were there before
    pub muted: Vec<(String, bool)>,
    pub data_added: Vec<String>,
    pub data_removed: Vec<String>,
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
            } else if let Some(r) = meta.remote.get(id) {
                if let Some(name) = &r.name {
                    names.insert(id.clone(), name.clone());
                }
                if r.muted {
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

    /// Tell the cluster (if any) what local track `id` is now. Called with the room's meta
    /// locked, so that the announcements of one track are written in the order of its
    /// changes.
    fn announce(&self, meta: &Meta, id: &str) {
        if let (Some(c), Some(about)) = (&self.cluster, meta.announced(id)) {
            c.announce(&self.name, Carried::Track, id, about);
        }
    }

    /// `owner` published `publisher` (muted from the start or not; by the WHIP session of
    /// `stream`).
    pub fn track_published(
        &self,
        owner: ParticipantId,
        publisher: &Publisher,
        muted: bool,
        stream: Option<String>,
    ) {
        let id = publisher.id();
        let mut meta = self.meta();
        meta.tracks.insert(
            id.clone(),
            TrackMeta {
                owner,
                muted,
                publisher: publisher.clone(),
                stream,
            },
        );
        self.announce(&meta, &id);
    }

    /// Track `id` is no longer published.
    pub fn track_unpublished(&self, id: &str) {
        let was_local = self.meta().tracks.remove(id).is_some();
        if let (true, Some(c)) = (was_local, &self.cluster) {
            c.withdraw(&self.name, Carried::Track, id);
        }
    }

    /// `owner` published data channel `publisher`.
    pub fn data_published(&self, owner: ParticipantId, publisher: &DataPublisher) {
        let id = publisher.id();
        self.meta().data.insert(
            id.clone(),
            DataMeta {
                owner,
                publisher: publisher.clone(),
            },
        );
        if let Some(c) = &self.cluster {
            c.announce(&self.name, Carried::Data, &id, data_announced());
        }
    }

    /// Data channel `id` is no longer published.
    pub fn data_unpublished(&self, id: &str) {
        let was_local = self.meta().data.remove(id).is_some();
        if let (true, Some(c)) = (was_local, &self.cluster) {
            c.withdraw(&self.name, Carried::Data, id);
        }
    }

    /// Set `who`'s display name; returns its published tracks (to tell the others).
    pub fn set_name(&self, who: ParticipantId, name: String) -> Vec<String> {
        let mut meta = self.meta();
        meta.names.insert(who, name);
        let mut tracks: Vec<String> = meta
            .tracks
            .iter()
            .filter(|(_, t)| t.owner == who)
            .map(|(id, _)| id.clone())
            .collect();
        tracks.sort();
        for id in &tracks {
            self.announce(&meta, id);
        }
        tracks
    }

    /// The cluster this room's tracks are announced in (`--redis`).
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// The local publisher of track `id` (not a relayed copy).
    pub fn local_publisher(&self, id: &str) -> Option<Publisher> {
        self.meta().tracks.get(id).map(|t| t.publisher.clone())
    }

    /// The local publisher of data channel `id` (not a relayed copy).
    pub fn local_data_publisher(&self, id: &str) -> Option<DataPublisher> {
        self.meta().data.get(id).map(|d| d.publisher.clone())
    }

    /// The tracks and data channels published by this node's participants, as announced.
    pub fn local_publishers(&self) -> Vec<(Carried, String, Announced)> {
        let meta = self.meta();
        let tracks = meta
            .tracks
            .keys()
            .filter_map(|id| Some((Carried::Track, id.clone(), meta.announced(id)?)));
        let data = meta
            .data
            .keys()
            .map(|id| (Carried::Data, id.clone(), data_announced()));
        tracks.chain(data).collect()
    }

    /// The node of track (or data channel) `id` if it is published on another node.
    pub fn remote_node(&self, carried: Carried, id: &str) -> Option<String> {
        let meta = self.meta();
        match carried {
            Carried::Track => meta.remote.get(id).map(|t| t.node.clone()),
            Carried::Data => meta.remote_data.get(id).cloned(),
        }
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

    /// Every data channel a participant of this room can subscribe to: the router's, or
    /// with `--redis` those published on this node and on the others (not the router's
    /// relayed copies).
    pub fn data_ids(&self) -> Vec<String> {
        if self.cluster.is_none() {
            return self.router.data_publisher_ids();
        }
        let meta = self.meta();
        let ids: BTreeSet<String> = meta
            .data
            .keys()
            .chain(meta.remote_data.keys())
            .cloned()
            .collect();
        ids.into_iter().collect()
    }

    /// Replace the tracks and data channels (label → node) published on other nodes; what
    /// changed, to tell the participants.
    pub fn set_remote(
        &self,
        remote: BTreeMap<String, RemoteTrack>,
        remote_data: BTreeMap<String, String>,
    ) -> RemoteChanges {
        let mut meta = self.meta();
        let old = std::mem::replace(&mut meta.remote, remote);
        let mut changes = RemoteChanges::default();
        let mut renamed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, t) in &meta.remote {
            let Some(o) = old.get(id) else {
                changes.added.push(id.clone());
                continue;
            };
            if o.name != t.name {
                if let Some(name) = &t.name {
                    renamed.entry(name.clone()).or_default().push(id.clone());
                }
            }
            if o.muted != t.muted {
                changes.muted.push((id.clone(), t.muted));
            }
        }
        changes.removed = old
            .into_keys()
            .filter(|id| !meta.remote.contains_key(id))
            .collect();
        changes.renamed = renamed.into_iter().map(|(n, ids)| (ids, n)).collect();
        let old_data = std::mem::replace(&mut meta.remote_data, remote_data);
        changes.data_added = meta
            .remote_data
            .keys()
            .filter(|id| !old_data.contains_key(*id))
            .cloned()
            .collect();
        changes.data_removed = old_data
            .into_keys()
            .filter(|id| !meta.remote_data.contains_key(id))
            .collect();
        changes
    }

    /// Mark `who`'s track `id` muted or not: whether that changed, or an error if `id` is
    /// not a track `who` published.
    pub fn set_muted(&self, who: ParticipantId, id: &str, muted: bool) -> Result<bool, String> {
        let mut meta = self.meta();
        let changed = match meta.tracks.get_mut(id) {
            Some(t) if t.owner == who => std::mem::replace(&mut t.muted, muted) != muted,
            _ => return Err(format!("{id:?} is not published by you")),
        };
        if changed {
            self.announce(&meta, id);
        }
        Ok(changed)
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

/// What the cluster is told about a local data channel.
fn data_announced() -> Announced {
    Announced {
        kind: Some("data".into()),
        ..Announced::default()
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
        let (gone, data_gone): (Vec<String>, Vec<String>) = {
            let mut meta = room.meta();
            meta.names.remove(&id);
            let gone = meta
                .tracks
                .iter()
                .filter(|(_, t)| t.owner == id)
                .map(|(k, _)| k.clone())
                .collect();
            meta.tracks.retain(|_, t| t.owner != id);
            let data_gone = meta
                .data
                .iter()
                .filter(|(_, d)| d.owner == id)
                .map(|(k, _)| k.clone())
                .collect();
            meta.data.retain(|_, d| d.owner != id);
            (gone, data_gone)
        };
        if let Some(c) = &room.cluster {
            for track in gone {
                c.withdraw(&room.name, Carried::Track, &track);
            }
            for label in data_gone {
                c.withdraw(&room.name, Carried::Data, &label);
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
