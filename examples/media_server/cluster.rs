//! Cluster of media servers on Redis (`--redis URL --node-id ID`): a participant on any node
//! sees and can subscribe to every track of its room, wherever it is published. Tracks stay
//! where they were published; a node relays one into its own router of the room
//! (`Publisher::relay_to`, the library's relay between workers) when a participant of it
//! subscribes.
//!
//! What is in Redis:
//! - `rheomesh:node:{node}`: JSON `{"instance", "relayAddr", "startedMs"}`, set with a 3 s
//!   TTL and refreshed every second. `instance` is random per process: a node restarted
//!   under the same id is a new instance, whose predecessor's tracks are dead.
//! - `rheomesh:room:{room}:tracks`: hash, publisher id → JSON `{"node", "instance",
//!   "name", "kind"}`, written by the node whose participant published the track, removed
//!   when it is unpublished. An entry whose node key is missing (expired: the node died) or
//!   names another instance is stale: every node ignores it and deletes it.
//!
//! Pub/sub channels:
//! - `rheomesh:events`: `{"room", "node"}` after a node changed a room's hash: the nodes
//!   that have that room read the hash again.
//! - `rheomesh:to:{node}`: requests to one node, `{"type": "relay", "room", "publisherId",
//!   "relayAddr", "routerId", "from"}`: relay that local publisher into router `routerId`
//!   of the worker whose relay port is `relayAddr`.
//!
//! Every node also reads the hash of each of its rooms every second, so a dead node's
//! tracks are unpublished (`Unpublished` to the room's participants) within 3 s (TTL) + 1 s,
//! and a lost pub/sub message only delays a change by a second. The relayed copies of a
//! dead node's tracks go by themselves (the relay link dies, the library unpublishes them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::protocol::ServerMessage;
use crate::room::{RemoteTrack, Room, Rooms};

/// How long a node's registration lives without a heartbeat.
const NODE_TTL: Duration = Duration::from_secs(3);
/// Heartbeat and resync period.
const TICK: Duration = Duration::from_secs(1);
/// Longest wait for one Redis command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a relayed track to be published in the local router.
const RELAY_WAIT: Duration = Duration::from_secs(5);

const EVENTS: &str = "rheomesh:events";

fn node_key(node: &str) -> String {
    format!("rheomesh:node:{node}")
}

fn tracks_key(room: &str) -> String {
    format!("rheomesh:room:{room}:tracks")
}

fn inbox(node: &str) -> String {
    format!("rheomesh:to:{node}")
}

/// A node id: 1 to 64 characters of `[A-Za-z0-9._-]` (it is part of Redis keys).
pub fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "--node-id {id:?}: use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'"
        ));
    }
    Ok(())
}

/// The value of `rheomesh:node:{node}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeInfo {
    instance: String,
    relay_addr: SocketAddr,
    #[serde(default)]
    started_ms: u64,
}

/// A field of `rheomesh:room:{room}:tracks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrackEntry {
    node: String,
    instance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RoomEvent {
    room: String,
    node: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum NodeMessage {
    #[serde(rename_all = "camelCase")]
    Relay {
        room: String,
        publisher_id: String,
        relay_addr: SocketAddr,
        router_id: String,
        from: String,
    },
}

/// A change to this node's entries in Redis, applied in order by one task.
enum Write {
    Announce {
        room: String,
        publisher_id: String,
        name: Option<String>,
        kind: Option<String>,
    },
    Withdraw {
        room: String,
        publisher_id: String,
    },
}

/// This node's handle on the cluster.
#[derive(Clone)]
pub struct Cluster(Arc<Inner>);

struct Inner {
    node: String,
    instance: String,
    relay_addr: SocketAddr,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    writes: mpsc::UnboundedSender<Write>,
    /// One resync at a time (so a change is broadcast once).
    sync: tokio::sync::Mutex<()>,
    /// Relays this node was asked for and is setting up: (publisher, address, router).
    relaying: StdMutex<HashSet<(String, SocketAddr, String)>>,
    /// Set by [`Cluster::leave`]: no more heartbeats.
    leaving: AtomicBool,
}

impl Cluster {
    /// Connect to Redis at `url` (fails if it does not answer), register as `node` and
    /// start the heartbeat, the subscriber and the resync loop over `rooms`.
    pub async fn start(
        url: &str,
        node: String,
        relay_addr: SocketAddr,
        rooms: Rooms,
    ) -> Result<Cluster, String> {
        let url_shown = redact(url);
        let client = redis::Client::open(url).map_err(|e| format!("--redis {url_shown}: {e}"))?;
        let conn = tokio::time::timeout(COMMAND_TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| format!("--redis {url_shown}: no answer within {COMMAND_TIMEOUT:?}"))?
            .map_err(|e| format!("--redis {url_shown}: {e}"))?;
        let (writes, write_rx) = mpsc::unbounded_channel();
        let instance = format!("{:016x}", rand::random::<u64>());
        let cluster = Cluster(Arc::new(Inner {
            node,
            instance,
            relay_addr,
            client,
            conn: tokio::sync::Mutex::new(Some(conn)),
            writes,
            sync: tokio::sync::Mutex::new(()),
            relaying: StdMutex::default(),
            leaving: AtomicBool::new(false),
        }));
        let previous: Option<String> = cluster
            .query(redis::cmd("GET").arg(node_key(&cluster.0.node)))
            .await
            .map_err(|e| format!("--redis {url_shown}: {e}"))?;
        if previous.is_some() {
            tracing::warn!(
                node = cluster.0.node,
                "cluster: this node id is registered already (a restart within {NODE_TTL:?}, \
                 or another node with the same id): taking it over"
            );
        }
        cluster
            .heartbeat()
            .await
            .map_err(|e| format!("--redis {url_shown}: registering the node: {e}"))?;
        rooms.set_cluster(cluster.clone());
        tokio::spawn(cluster.clone().run_writes(write_rx));
        tokio::spawn(cluster.clone().run_ticks(rooms.clone()));
        tokio::spawn(cluster.clone().run_subscriber(rooms));
        tracing::info!(
            node = cluster.0.node,
            instance = cluster.0.instance,
            relay = %relay_addr,
            "cluster node registered in Redis"
        );
        Ok(cluster)
    }

    pub fn node(&self) -> &str {
        &self.0.node
    }

    /// Run one Redis command (reconnecting if the last one failed).
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut conn = {
            let mut slot = self.0.conn.lock().await;
            match slot.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = tokio::time::timeout(
                        COMMAND_TIMEOUT,
                        self.0.client.get_multiplexed_async_connection(),
                    )
                    .await
                    .map_err(|_| "connecting to Redis timed out".to_string())?
                    .map_err(|e| format!("connecting to Redis: {e}"))?;
                    *slot = Some(c.clone());
                    c
                }
            }
        };
        let result = match tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async(&mut conn)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => format!("Redis: {e}"),
            Err(_) => "Redis: no answer in time".to_string(),
        };
        // Reconnect next time.
        *self.0.conn.lock().await = None;
        Err(result)
    }

    async fn heartbeat(&self) -> Result<(), String> {
        let info = NodeInfo {
            instance: self.0.instance.clone(),
            relay_addr: self.0.relay_addr,
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        let value = serde_json::to_string(&info).map_err(|e| e.to_string())?;
        self.query::<()>(
            redis::cmd("SET")
                .arg(node_key(&self.0.node))
                .arg(value)
                .arg("PX")
                .arg(NODE_TTL.as_millis() as u64),
        )
        .await
    }

    /// The node is shutting down: remove its registration so the others drop its tracks at
    /// their next resync (at most a second) instead of after the TTL.
    pub async fn leave(&self) {
        self.0.leaving.store(true, Ordering::SeqCst);
        let _ = self
            .query::<()>(redis::cmd("DEL").arg(node_key(&self.0.node)))
            .await;
    }

    /// A local participant published `publisher_id` in `room`.
    pub fn announce(
        &self,
        room: &str,
        publisher_id: &str,
        name: Option<String>,
        kind: Option<String>,
    ) {
        let _ = self.0.writes.send(Write::Announce {
            room: room.to_owned(),
            publisher_id: publisher_id.to_owned(),
            name,
            kind,
        });
    }

    /// A local publisher of `room` is gone.
    pub fn withdraw(&self, room: &str, publisher_id: &str) {
        let _ = self.0.writes.send(Write::Withdraw {
            room: room.to_owned(),
            publisher_id: publisher_id.to_owned(),
        });
    }

    /// A room was created on this node: learn its remote tracks now.
    pub fn room_created(&self, room: Arc<Room>) {
        let cluster = self.clone();
        tokio::spawn(async move { cluster.sync_room(&room).await });
    }

    async fn run_writes(self, mut rx: mpsc::UnboundedReceiver<Write>) {
        while let Some(w) = rx.recv().await {
            let (room, result) = match w {
                Write::Announce {
                    room,
                    publisher_id,
                    name,
                    kind,
                } => {
                    let entry = TrackEntry {
                        node: self.0.node.clone(),
                        instance: self.0.instance.clone(),
                        name,
                        kind,
                    };
                    let value = serde_json::to_string(&entry).unwrap_or_default();
                    let r = self
                        .query::<()>(
                            redis::cmd("HSET")
                                .arg(tracks_key(&room))
                                .arg(&publisher_id)
                                .arg(value),
                        )
                        .await;
                    (room, r)
                }
                Write::Withdraw { room, publisher_id } => {
                    let r = self
                        .query::<()>(redis::cmd("HDEL").arg(tracks_key(&room)).arg(&publisher_id))
                        .await;
                    (room, r)
                }
            };
            if let Err(e) = result {
                tracing::warn!(room, "cluster: updating the room's tracks: {e}");
                continue;
            }
            self.notify_room(&room).await;
        }
    }

    async fn notify_room(&self, room: &str) {
        let event = RoomEvent {
            room: room.to_owned(),
            node: self.0.node.clone(),
        };
        let payload = serde_json::to_string(&event).unwrap_or_default();
        if let Err(e) = self
            .query::<()>(redis::cmd("PUBLISH").arg(EVENTS).arg(payload))
            .await
        {
            tracing::warn!(room, "cluster: publishing a room event: {e}");
        }
    }

    /// Heartbeat and resync of every room, every second. After Redis was unreachable (it
    /// may have restarted empty), this node's tracks are announced again.
    async fn run_ticks(self, rooms: Rooms) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut healthy = true;
        loop {
            tick.tick().await;
            if self.0.leaving.load(Ordering::SeqCst) {
                return;
            }
            match self.heartbeat().await {
                Ok(()) if !healthy => {
                    tracing::info!("cluster: Redis is back; announcing this node's tracks again");
                    healthy = true;
                    for room in rooms.all().await {
                        for (id, name, kind) in room.local_tracks() {
                            self.announce(&room.name, &id, name, kind);
                        }
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    if healthy {
                        tracing::warn!("cluster: heartbeat failed: {e}");
                    }
                    healthy = false;
                    continue;
                }
            }
            for room in rooms.all().await {
                self.sync_room(&room).await;
            }
        }
    }

    /// Pub/sub: room events and requests to this node; reconnects when the connection drops
    /// (and resyncs every room then).
    async fn run_subscriber(self, rooms: Rooms) {
        loop {
            match self.subscribe_once(&rooms).await {
                Ok(()) => tracing::warn!("cluster: Redis pub/sub connection closed"),
                Err(e) => tracing::warn!("cluster: Redis pub/sub: {e}"),
            }
            tokio::time::sleep(TICK).await;
        }
    }

    async fn subscribe_once(&self, rooms: &Rooms) -> Result<(), String> {
        let mut pubsub = tokio::time::timeout(COMMAND_TIMEOUT, self.0.client.get_async_pubsub())
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let mine = inbox(&self.0.node);
        pubsub.subscribe(EVENTS).await.map_err(|e| e.to_string())?;
        pubsub.subscribe(&mine).await.map_err(|e| e.to_string())?;
        // Whatever changed while not subscribed.
        for room in rooms.all().await {
            self.sync_room(&room).await;
        }
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            if msg.get_channel_name() == EVENTS {
                let Ok(event) = serde_json::from_str::<RoomEvent>(&payload) else {
                    continue;
                };
                if event.node == self.0.node {
                    continue;
                }
                if let Some(room) = rooms.find(&event.room).await {
                    let cluster = self.clone();
                    tokio::spawn(async move { cluster.sync_room(&room).await });
                }
            } else if msg.get_channel_name() == mine {
                match serde_json::from_str::<NodeMessage>(&payload) {
                    Ok(NodeMessage::Relay {
                        room,
                        publisher_id,
                        relay_addr,
                        router_id,
                        from,
                    }) => {
                        self.relay(rooms, room, publisher_id, relay_addr, router_id, from)
                            .await
                    }
                    Err(e) => tracing::debug!("cluster: bad message {payload:?}: {e}"),
                }
            }
        }
        Ok(())
    }

    /// Another node asks for a local publisher of `room`, relayed into its router.
    async fn relay(
        &self,
        rooms: &Rooms,
        room: String,
        publisher_id: String,
        addr: SocketAddr,
        router_id: String,
        from: String,
    ) {
        let publisher = match rooms.find(&room).await {
            Some(r) => r.local_publisher(&publisher_id),
            None => None,
        };
        let Some(publisher) = publisher else {
            tracing::info!(
                room,
                publisher = publisher_id,
                from,
                "cluster: relay asked for a track not published here"
            );
            return;
        };
        let key = (publisher_id.clone(), addr, router_id.clone());
        if !lock(&self.0.relaying).insert(key.clone()) {
            return; // already on its way
        }
        let cluster = self.clone();
        tokio::spawn(async move {
            let result = publisher.relay_to(addr, &router_id).await;
            lock(&cluster.0.relaying).remove(&key);
            match result {
                Ok(()) => {
                    tracing::info!(room, publisher = publisher_id, to = from, %addr, "cluster: relaying")
                }
                Err(e) => {
                    tracing::warn!(room, publisher = publisher_id, to = from, %addr, "cluster: relay failed: {e}")
                }
            }
        });
    }

    /// Make `publisher_id` (a track of `room` published on another node) available in this
    /// node's router of the room: ask its node to relay it, wait until it is published here.
    pub async fn ensure_relayed(&self, room: &Room, publisher_id: &str) -> Result<(), String> {
        let published_here = || {
            room.router
                .publisher_ids()
                .iter()
                .any(|p| p == publisher_id)
        };
        if published_here() {
            return Ok(());
        }
        let Some(remote) = room.remote_track(publisher_id) else {
            return Err("no such track in this room".into());
        };
        let request = NodeMessage::Relay {
            room: room.name.clone(),
            publisher_id: publisher_id.to_owned(),
            relay_addr: self.0.relay_addr,
            router_id: room.router.id().to_owned(),
            from: self.0.node.clone(),
        };
        let payload = serde_json::to_string(&request).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + RELAY_WAIT;
        // Asked again every 2 s in case the request was lost (the other node ignores a
        // request for a relay already on its way).
        let mut next_ask = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_ask {
                let receivers = self
                    .query::<i64>(redis::cmd("PUBLISH").arg(inbox(&remote.node)).arg(&payload))
                    .await?;
                if receivers == 0 {
                    tracing::debug!(node = remote.node, "cluster: relay request reached nobody");
                }
                next_ask += Duration::from_secs(2);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            if published_here() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "node {} did not relay it within {RELAY_WAIT:?}",
                    remote.node
                ));
            }
        }
    }

    /// Read `room`'s tracks from Redis and tell the room's participants what changed.
    async fn sync_room(&self, room: &Arc<Room>) {
        let _one = self.0.sync.lock().await;
        let entries: HashMap<String, String> = match self
            .query(redis::cmd("HGETALL").arg(tracks_key(&room.name)))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(room = room.name, "cluster: reading the room's tracks: {e}");
                return;
            }
        };
        let entries: Vec<(String, TrackEntry)> = entries
            .into_iter()
            .filter_map(|(id, v)| serde_json::from_str(&v).ok().map(|e| (id, e)))
            .collect();
        let nodes: Vec<String> = entries
            .iter()
            .map(|(_, e)| e.node.clone())
            .filter(|n| *n != self.0.node)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut alive: HashMap<String, String> = HashMap::new();
        alive.insert(self.0.node.clone(), self.0.instance.clone());
        if !nodes.is_empty() {
            let keys: Vec<String> = nodes.iter().map(|n| node_key(n)).collect();
            let values: Vec<Option<String>> = match self.query(redis::cmd("MGET").arg(&keys)).await
            {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!("cluster: reading nodes: {e}");
                    return;
                }
            };
            for (node, value) in nodes.into_iter().zip(values) {
                if let Some(info) = value.and_then(|v| serde_json::from_str::<NodeInfo>(&v).ok()) {
                    alive.insert(node, info.instance);
                }
            }
        }
        let mut remote = BTreeMap::new();
        let mut stale = Vec::new();
        for (id, e) in entries {
            if alive.get(&e.node) != Some(&e.instance) {
                stale.push(id);
            } else if e.node != self.0.node {
                remote.insert(
                    id,
                    RemoteTrack {
                        node: e.node,
                        name: e.name,
                    },
                );
            }
        }
        let changes = room.set_remote_tracks(remote);
        if !changes.added.is_empty() {
            room.broadcast(&room.published(changes.added));
        }
        for (publisher_ids, name) in changes.renamed {
            room.broadcast(&ServerMessage::NameChanged {
                publisher_ids,
                name,
            });
        }
        for publisher_id in changes.removed {
            tracing::info!(
                room = room.name,
                publisher = publisher_id,
                "cluster: remote track gone"
            );
            room.broadcast(&ServerMessage::Unpublished { publisher_id });
        }
        if !stale.is_empty() {
            tracing::info!(room = room.name, tracks = ?stale, "cluster: removing tracks of nodes that are gone");
            let _ = self
                .query::<()>(redis::cmd("HDEL").arg(tracks_key(&room.name)).arg(&stale))
                .await;
        }
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_checked() {
        assert!(check_node_id("node-1").is_ok());
        assert!(check_node_id("a.b_C-9").is_ok());
        assert!(check_node_id("").is_err());
        assert!(check_node_id("a:b").is_err());
        assert!(check_node_id(&"x".repeat(65)).is_err());
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redact("redis://:pw@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
    }

    #[test]
    fn messages_have_the_documented_shape() {
        let m = NodeMessage::Relay {
            room: "r".into(),
            publisher_id: "p".into(),
            relay_addr: "127.0.0.1:9".parse().unwrap(),
            router_id: "x".into(),
            from: "n2".into(),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"relay","room":"r","publisherId":"p","relayAddr":"127.0.0.1:9","routerId":"x","from":"n2"}"#
        );
    }
}
