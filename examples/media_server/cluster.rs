//! Cluster of media servers on Redis (`--redis URL --node-id ID`): a participant on any node
//! sees and can subscribe to every track and data channel of its room, wherever it is
//! published, and sees its mute state. Tracks and data channels stay where they were
//! published; a node relays one into its own router of the room (`Publisher::relay_to`,
//! `DataPublisher::relay_to`: the library's relay between workers) when a participant of it
//! subscribes, or a WHEP viewer of it plays it, and asks for the relay to stop
//! (`stop_relay`) when its last local subscription to it ended 2 s ago
//! (`--relay-linger-ms`; a page reloaded within that finds it still relayed).
//!
//! What is in Redis:
//! - `rheomesh:node:{node}`: JSON `{"instance", "relayAddr", "startedMs"}`, set with a 3 s
//!   TTL and refreshed every second. `instance` is random per process: a node restarted
//!   under the same id is a new instance, whose predecessor's tracks are dead.
//! - `rheomesh:room:{room}:tracks`: hash, publisher id → JSON `{"node", "instance",
//!   "name", "kind", "muted", "stream"}` (`muted` only when true; `stream` only for a track
//!   of a WHIP session: its `{stream}`, which a WHEP viewer on another node names), written
//!   by the node whose participant published the track (again when its name or mute state
//!   changes), removed when it is unpublished.
//! - `rheomesh:room:{room}:data`: hash, data publisher id (the channel's label) → JSON
//!   `{"node", "instance", "kind": "data"}`, the same for the room's data channels (a hash
//!   of their own: a label may equal a track id).
//!
//! An entry whose node key is missing (expired: the node died) or names another instance is
//! stale: every node ignores it and deletes it.
//!
//! Pub/sub channels:
//! - `rheomesh:events`: `{"room", "node"}` after a node changed a room's hashes: the nodes
//!   that have that room read them again.
//! - `rheomesh:to:{node}`: requests to one node, `{"type": "relay", "room", "publisherId",
//!   "relayAddr", "routerId", "from"}`: relay that local publisher into router `routerId`
//!   of the worker whose relay port is `relayAddr`; `{"type": "unrelay", ...}` with the same
//!   fields: stop that relay. Both with `"data": true` for a data channel. A node runs the
//!   requests for one (publisher, relay port, router) in the order they came, one at a
//!   time, and skips one that repeats the request before it.
//!
//! The subscribing node counts, per relayed track or data channel, the local uses of it (a
//! subscription ends however its subscriber closes: `StopSubscribe`/`StopSubscribeData`,
//! the participant leaving, its transport closing, the relayed copy going; a WHEP session
//! uses its tracks until it ends). When the count stays at 0 for
//! the linger time, the track is *stopping*: `unrelay` goes to its node (asked again
//! every 2 s) until the relayed copy is unpublished from the local router (at most 5 s;
//! tried 3 times). A subscription that comes while a track is stopping waits for that end,
//! then asks for a new relay, so it never subscribes to a copy about to be unpublished.
//! (Unless the track's node stays silent through the whole stop: after it the waiting
//! subscriptions take the copy still here, and an `unrelay` that node runs later still ends
//! them.)
//! A stopped relay changes nothing for the room's participants (the track is still
//! published on its node, and nobody here subscribed to the copy): no `Unpublished`.
//!
//! Every node also reads the hashes of each of its rooms every second, so a dead node's
//! tracks and data channels are unpublished (`Unpublished`, `DataUnpublished` to the room's
//! participants) within 3 s (TTL) + 1 s, and a lost pub/sub message only delays a change by
//! a second. A change of a remote track's name or mute state reaches the room's
//! participants the same way (`NameChanged`, `Muted`). The relayed copies of a dead node's
//! tracks go by themselves (the relay link dies, the library unpublishes them).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

use rheomesh::data::DataPublisher;
use rheomesh::publisher::Publisher;

use crate::protocol::ServerMessage;
use crate::room::{RemoteTrack, Room, Rooms};

/// How long a node's registration lives without a heartbeat.
const NODE_TTL: Duration = Duration::from_secs(3);
/// Heartbeat and resync period.
const TICK: Duration = Duration::from_secs(1);
/// Longest wait for one Redis command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a relayed track to be published in the local router, or for a
/// stopped one to be unpublished from it.
const RELAY_WAIT: Duration = Duration::from_secs(5);
/// A request to another node is repeated this often while its effect is not seen (pub/sub
/// may lose a message).
const ASK_AGAIN: Duration = Duration::from_secs(2);
/// Attempts at stopping a relay whose copy does not go away, before leaving it be.
const MAX_STOP_ATTEMPTS: u32 = 3;

const EVENTS: &str = "rheomesh:events";

fn node_key(node: &str) -> String {
    format!("rheomesh:node:{node}")
}

fn tracks_key(room: &str) -> String {
    format!("rheomesh:room:{room}:tracks")
}

fn data_key(room: &str) -> String {
    format!("rheomesh:room:{room}:data")
}

/// The hash of `room` that holds publishers of kind `carried`.
fn hash_key(room: &str, carried: Carried) -> String {
    match carried {
        Carried::Track => tracks_key(room),
        Carried::Data => data_key(room),
    }
}

/// What a publisher of a room is: a media track or a data channel (the router keeps them
/// apart: a label may equal a track id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Carried {
    Track,
    Data,
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

/// A field of `rheomesh:room:{room}:tracks` or `rheomesh:room:{room}:data`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrackEntry {
    node: String,
    instance: String,
    #[serde(flatten)]
    about: Announced,
}

/// What a node tells about one of its local publishers (beside where it is).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announced {
    /// Its participant's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `audio`, `video`, or `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Muted at the source (`SetMuted`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub muted: bool,
    /// The WHIP stream (`/whip/{room}/{stream}`) whose session published it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Serialize, Deserialize)]
struct RoomEvent {
    room: String,
    node: String,
}

/// A message on `rheomesh:to:{node}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum NodeMessage {
    /// Relay a local publisher into a router of the sender.
    Relay(RelayRequest),
    /// Stop that relay.
    Unrelay(RelayRequest),
}

/// Publisher `publisher_id` of `room` (a data channel if `data`), relayed into router
/// `router_id` of the worker whose relay port is `relay_addr`, for node `from`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RelayRequest {
    room: String,
    publisher_id: String,
    relay_addr: SocketAddr,
    router_id: String,
    from: String,
    #[serde(default, skip_serializing_if = "is_false")]
    data: bool,
}

impl RelayRequest {
    fn carried(&self) -> Carried {
        if self.data {
            Carried::Data
        } else {
            Carried::Track
        }
    }
}

/// A request of another node about one of this node's publishers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelayOp {
    Relay,
    Unrelay,
}

/// (kind, publisher, relay port, router): one relay of a local publisher.
type RelayTarget = (Carried, String, SocketAddr, String);

/// The requests for one [`RelayTarget`]: the one running and those waiting, run in order.
struct OpQueue {
    running: RelayOp,
    waiting: VecDeque<RelayOp>,
}

/// (router id, kind, publisher id): a remote track or data channel relayed into one of this
/// node's routers. A router id names one room for its lifetime (a room closed and created
/// again has another).
type RelayKey = (String, Carried, String);

/// The subscribing side's state of one relayed track.
#[derive(Debug)]
struct RelayedTrack {
    /// The track's node.
    node: String,
    /// Local subscriptions using it (or waiting for it).
    uses: usize,
    /// Changed whenever `uses` leaves or reaches 0: a grace timer started for an earlier
    /// idle period does nothing.
    seq: u64,
    /// `unrelay` was sent; the copy has yet to be unpublished here.
    stopping: bool,
    /// Stops that ended with the copy still here.
    failed_stops: u32,
}

/// Every relayed track's state on this node (the subscribing side), under one lock.
#[derive(Debug, Default)]
struct RelayUses(HashMap<RelayKey, RelayedTrack>);

impl RelayUses {
    /// A local subscription will use `key` (relayed from `node`).
    fn acquire(&mut self, key: &RelayKey, node: &str) {
        let t = self.0.entry(key.clone()).or_insert_with(|| RelayedTrack {
            node: node.to_owned(),
            uses: 0,
            seq: 0,
            stopping: false,
            failed_stops: 0,
        });
        node.clone_into(&mut t.node);
        t.uses += 1;
        t.seq += 1;
    }

    /// A subscription using `key` ended: `Some(seq)` if it was the last one (start the
    /// grace timer with `seq`). Not while stopping: [`Self::end_stop`] decides then.
    fn release(&mut self, key: &RelayKey) -> Option<u64> {
        let t = self.0.get_mut(key)?;
        t.uses = t.uses.saturating_sub(1);
        if t.uses > 0 || t.stopping {
            return None;
        }
        t.seq += 1;
        Some(t.seq)
    }

    /// The grace timer `seq` ran out: if `key` is still unused since, it is stopping from
    /// now on; returns its node.
    fn begin_stop(&mut self, key: &RelayKey, seq: u64) -> Option<String> {
        let t = self.0.get_mut(key)?;
        if t.uses > 0 || t.stopping || t.seq != seq {
            return None;
        }
        t.stopping = true;
        Some(t.node.clone())
    }

    fn is_stopping(&self, key: &RelayKey) -> bool {
        self.0.get(key).is_some_and(|t| t.stopping)
    }

    /// The stop of `key` ended, with its copy unpublished here (`gone`) or not: `Some(seq)`
    /// to try again after a grace period (nobody uses it and it is still here).
    fn end_stop(&mut self, key: &RelayKey, gone: bool) -> Option<u64> {
        let t = self.0.get_mut(key)?;
        t.stopping = false;
        if t.uses > 0 {
            // Subscriptions came meanwhile: they relay it again (or use the copy still here).
            t.failed_stops = 0;
            return None;
        }
        if gone {
            self.0.remove(key);
            return None;
        }
        t.failed_stops += 1;
        if t.failed_stops >= MAX_STOP_ATTEMPTS {
            self.0.remove(key);
            return None;
        }
        t.seq += 1;
        Some(t.seq)
    }
}

/// The relayed tracks and data channels of a node (its subscribing side), for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayCensus {
    /// Remote tracks and data channels relayed here (or being relayed, or stopped).
    pub tracks: usize,
    /// Local subscriptions using them.
    pub uses: usize,
    /// Of `tracks`, those whose relay is being stopped.
    pub stopping: usize,
    /// Stops begun so far.
    pub unrelays: u64,
    /// Subscriptions that came while their track's relay was stopping (and waited).
    pub waited_for_stop: u64,
}

/// One local subscription's use of a relayed track ([`Cluster::use_relayed`]); dropping it
/// ends the use.
pub struct RelayLease {
    cluster: Cluster,
    room: Arc<Room>,
    key: RelayKey,
}

impl Drop for RelayLease {
    fn drop(&mut self) {
        let Some(seq) = lock(&self.cluster.0.relays).release(&self.key) else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (cluster, room, key) = (self.cluster.clone(), self.room.clone(), self.key.clone());
            rt.spawn(cluster.stop_when_unused(room, key, seq));
        }
    }
}

/// A local publisher another node asks to relay: a track or a data channel.
enum LocalPublisher {
    Track(Publisher),
    Data(DataPublisher),
}

impl LocalPublisher {
    /// Publisher `id` of kind `carried` of a local participant of `room` (not a relayed copy).
    fn find(room: &Room, carried: Carried, id: &str) -> Option<LocalPublisher> {
        match carried {
            Carried::Track => room.local_publisher(id).map(LocalPublisher::Track),
            Carried::Data => room.local_data_publisher(id).map(LocalPublisher::Data),
        }
    }

    async fn relay_to(&self, addr: SocketAddr, router_id: &str) -> Result<(), String> {
        match self {
            LocalPublisher::Track(p) => p.relay_to(addr, router_id).await,
            LocalPublisher::Data(p) => p.relay_to(addr, router_id).await,
        }
        .map_err(|e| e.to_string())
    }

    async fn stop_relay(&self, addr: SocketAddr, router_id: &str) -> bool {
        match self {
            LocalPublisher::Track(p) => p.stop_relay(addr, router_id).await,
            LocalPublisher::Data(p) => p.stop_relay(addr, router_id).await,
        }
    }
}

/// Whether publisher `id` of kind `carried` is in `room`'s router (local or a relayed copy).
fn in_router(room: &Room, carried: Carried, id: &str) -> bool {
    let ids = match carried {
        Carried::Track => room.router.publisher_ids(),
        Carried::Data => room.router.data_publisher_ids(),
    };
    ids.iter().any(|p| p == id)
}

/// A change to this node's entries in Redis, applied in order by one task.
enum Write {
    Announce {
        room: String,
        carried: Carried,
        publisher_id: String,
        about: Announced,
    },
    Withdraw {
        room: String,
        carried: Carried,
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
    /// Hosting side: the relay requests of other nodes being run, per relay.
    relay_ops: StdMutex<HashMap<RelayTarget, OpQueue>>,
    /// Subscribing side: the remote tracks relayed here and their local uses.
    relays: StdMutex<RelayUses>,
    /// Woken when a relayed track stops stopping.
    relays_changed: Notify,
    /// How long a relayed track stays without a local subscriber before its relay is
    /// stopped (`--relay-linger-ms`).
    linger: Duration,
    /// Stops of relays begun by this node.
    unrelays: AtomicU64,
    /// Subscriptions that waited for a stop of their track to end.
    waited_for_stop: AtomicU64,
    /// Set by [`Cluster::leave`]: no more heartbeats.
    leaving: AtomicBool,
}

impl Cluster {
    /// Connect to Redis at `url` (fails if it does not answer), register as `node` and
    /// start the heartbeat, the subscriber and the resync loop over `rooms`. A remote track
    /// relayed here is unrelayed `linger` after its last local subscriber left.
    pub async fn start(
        url: &str,
        node: String,
        relay_addr: SocketAddr,
        linger: Duration,
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
            relay_ops: StdMutex::default(),
            relays: StdMutex::default(),
            relays_changed: Notify::new(),
            linger,
            unrelays: AtomicU64::new(0),
            waited_for_stop: AtomicU64::new(0),
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

    /// A local participant published `publisher_id` in `room` (or its name or mute state
    /// changed): written in the order of the calls.
    pub fn announce(&self, room: &str, carried: Carried, publisher_id: &str, about: Announced) {
        let _ = self.0.writes.send(Write::Announce {
            room: room.to_owned(),
            carried,
            publisher_id: publisher_id.to_owned(),
            about,
        });
    }

    /// A local publisher of `room` is gone.
    pub fn withdraw(&self, room: &str, carried: Carried, publisher_id: &str) {
        let _ = self.0.writes.send(Write::Withdraw {
            room: room.to_owned(),
            carried,
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
                    carried,
                    publisher_id,
                    about,
                } => {
                    let entry = TrackEntry {
                        node: self.0.node.clone(),
                        instance: self.0.instance.clone(),
                        about,
                    };
                    let value = serde_json::to_string(&entry).unwrap_or_default();
                    let r = self
                        .query::<()>(
                            redis::cmd("HSET")
                                .arg(hash_key(&room, carried))
                                .arg(&publisher_id)
                                .arg(value),
                        )
                        .await;
                    (room, r)
                }
                Write::Withdraw {
                    room,
                    carried,
                    publisher_id,
                } => {
                    let r = self
                        .query::<()>(
                            redis::cmd("HDEL")
                                .arg(hash_key(&room, carried))
                                .arg(&publisher_id),
                        )
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
                        for (carried, id, about) in room.local_publishers() {
                            self.announce(&room.name, carried, &id, about);
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
                    Ok(NodeMessage::Relay(r)) => self.request(rooms, RelayOp::Relay, r),
                    Ok(NodeMessage::Unrelay(r)) => self.request(rooms, RelayOp::Unrelay, r),
                    Err(e) => tracing::debug!("cluster: bad message {payload:?}: {e}"),
                }
            }
        }
        Ok(())
    }

    /// Another node asks to relay a local publisher of `room` into its router, or to stop
    /// that relay: queued behind the requests for the same relay still running.
    fn request(&self, rooms: &Rooms, op: RelayOp, request: RelayRequest) {
        let carried = request.carried();
        let RelayRequest {
            room,
            publisher_id,
            relay_addr,
            router_id,
            from,
            ..
        } = request;
        let target: RelayTarget = (carried, publisher_id, relay_addr, router_id);
        {
            let mut ops = lock(&self.0.relay_ops);
            if let Some(q) = ops.get_mut(&target) {
                // The same request twice in a row (asked again meanwhile) is one.
                if q.waiting.back().copied().unwrap_or(q.running) != op {
                    q.waiting.push_back(op);
                }
                return;
            }
            ops.insert(
                target.clone(),
                OpQueue {
                    running: op,
                    waiting: VecDeque::new(),
                },
            );
        }
        let (cluster, rooms) = (self.clone(), rooms.clone());
        tokio::spawn(async move {
            let mut op = op;
            loop {
                cluster.run_op(&rooms, op, &room, &target, &from).await;
                let next = {
                    let mut ops = lock(&cluster.0.relay_ops);
                    let next = ops.get_mut(&target).and_then(|q| {
                        let next = q.waiting.pop_front()?;
                        q.running = next;
                        Some(next)
                    });
                    if next.is_none() {
                        ops.remove(&target);
                    }
                    next
                };
                match next {
                    Some(n) => op = n,
                    None => return,
                }
            }
        });
    }

    /// Run one request of node `from`.
    async fn run_op(
        &self,
        rooms: &Rooms,
        op: RelayOp,
        room: &str,
        (carried, publisher_id, addr, router_id): &RelayTarget,
        from: &str,
    ) {
        let publisher = match rooms.find(room).await {
            Some(r) => LocalPublisher::find(&r, *carried, publisher_id),
            None => None,
        };
        let Some(publisher) = publisher else {
            // An unrelay may come after the track was unpublished here (which ended the
            // relay): expected. A relay request for it is worth a line.
            if op == RelayOp::Relay {
                tracing::info!(
                    room,
                    publisher = publisher_id,
                    ?carried,
                    from,
                    "cluster: relay asked for a publisher not published here"
                );
            }
            return;
        };
        match op {
            RelayOp::Relay => match publisher.relay_to(*addr, router_id).await {
                Ok(()) => {
                    tracing::info!(room, publisher = publisher_id, to = from, %addr, "cluster: relaying")
                }
                Err(e) => {
                    tracing::warn!(room, publisher = publisher_id, to = from, %addr, "cluster: relay failed: {e}")
                }
            },
            RelayOp::Unrelay => {
                if publisher.stop_relay(*addr, router_id).await {
                    tracing::info!(room, publisher = publisher_id, to = from, %addr, "cluster: relay stopped")
                } else {
                    tracing::debug!(room, publisher = publisher_id, to = from, %addr, "cluster: unrelay of a relay not running")
                }
            }
        }
    }

    /// The subscribing side's relays right now, for `/metrics`.
    pub fn relay_census(&self) -> RelayCensus {
        let relays = lock(&self.0.relays);
        RelayCensus {
            tracks: relays.0.len(),
            uses: relays.0.values().map(|t| t.uses).sum(),
            stopping: relays.0.values().filter(|t| t.stopping).count(),
            unrelays: self.0.unrelays.load(Ordering::Relaxed),
            waited_for_stop: self.0.waited_for_stop.load(Ordering::Relaxed),
        }
    }

    /// A local subscription to `publisher_id`, a track (or data channel: `carried`) of
    /// `room` published on another node: make it available in this node's router of the
    /// room (relayed from its node) and count the use until the returned lease is dropped.
    /// Once no lease is left for the linger time, the relay is stopped.
    pub async fn use_relayed(
        &self,
        room: &Arc<Room>,
        carried: Carried,
        publisher_id: &str,
    ) -> Result<RelayLease, String> {
        let Some(node) = room.remote_node(carried, publisher_id) else {
            return Err(not_here(carried));
        };
        let key: RelayKey = (
            room.router.id().to_owned(),
            carried,
            publisher_id.to_owned(),
        );
        // Counted from here on: no stop of it begins before the lease is dropped.
        lock(&self.0.relays).acquire(&key, &node);
        let lease = RelayLease {
            cluster: self.clone(),
            room: room.clone(),
            key: key.clone(),
        };
        // A stop begun before: wait until it ended (the copy unpublished here, at most
        // RELAY_WAIT), then relay anew; never subscribe to a copy about to go.
        let deadline = tokio::time::Instant::now() + RELAY_WAIT + TICK;
        let mut waited = false;
        loop {
            let changed = self.0.relays_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let stopping = lock(&self.0.relays).is_stopping(&key);
            if !stopping {
                break;
            }
            if !waited {
                waited = true;
                self.0.waited_for_stop.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    room = room.name,
                    publisher = publisher_id,
                    "cluster: subscribing to a track whose relay is stopping: waiting for the stop"
                );
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err("its previous relay did not stop in time".into());
            }
        }
        self.ensure_relayed(room, carried, publisher_id).await?;
        Ok(lease)
    }

    /// The last lease of `key` was dropped (grace timer `seq`): after the linger time
    /// without a new one, stop the relay; again (up to [`MAX_STOP_ATTEMPTS`]) if the copy
    /// stays.
    async fn stop_when_unused(self, room: Arc<Room>, key: RelayKey, mut seq: u64) {
        loop {
            tokio::time::sleep(self.0.linger).await;
            let node = lock(&self.0.relays).begin_stop(&key, seq);
            let Some(node) = node else {
                return; // used again meanwhile
            };
            self.0.unrelays.fetch_add(1, Ordering::Relaxed);
            let gone = self.unrelay(&room, &key, &node).await;
            let again = lock(&self.0.relays).end_stop(&key, gone);
            self.0.relays_changed.notify_waiters();
            match again {
                Some(next) => {
                    tracing::warn!(
                        room = room.name,
                        publisher = key.2,
                        carried = ?key.1,
                        node,
                        "cluster: the relay did not stop within {RELAY_WAIT:?}; trying again"
                    );
                    seq = next;
                }
                None => return,
            }
        }
    }

    /// Ask `node` to stop relaying track `key` into this node's router of `room`, and wait
    /// (at most [`RELAY_WAIT`]) until the copy is unpublished here: whether it is gone. Asked
    /// at least once, even if the copy is gone already (the room closed: the other node's
    /// relay session would otherwise stay).
    async fn unrelay(
        &self,
        room: &Room,
        (router_id, carried, publisher_id): &RelayKey,
        node: &str,
    ) -> bool {
        let here = || in_router(room, *carried, publisher_id);
        if here() {
            tracing::info!(
                room = room.name,
                publisher = publisher_id,
                ?carried,
                node,
                "cluster: no local subscriber left; stopping the relay"
            );
        }
        let request = NodeMessage::Unrelay(RelayRequest {
            room: room.name.clone(),
            publisher_id: publisher_id.clone(),
            relay_addr: self.0.relay_addr,
            router_id: router_id.clone(),
            from: self.0.node.clone(),
            data: *carried == Carried::Data,
        });
        let payload = serde_json::to_string(&request).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + RELAY_WAIT;
        let mut next_ask = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_ask {
                if let Err(e) = self
                    .query::<i64>(redis::cmd("PUBLISH").arg(inbox(node)).arg(&payload))
                    .await
                {
                    tracing::debug!(node, "cluster: unrelay request: {e}");
                }
                next_ask += ASK_AGAIN;
            }
            if !here() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Make `publisher_id` (a track or data channel of `room` published on another node)
    /// available in this node's router of the room: ask its node to relay it, wait until it
    /// is published here.
    async fn ensure_relayed(
        &self,
        room: &Room,
        carried: Carried,
        publisher_id: &str,
    ) -> Result<(), String> {
        let published_here = || in_router(room, carried, publisher_id);
        if published_here() {
            return Ok(());
        }
        let Some(node) = room.remote_node(carried, publisher_id) else {
            return Err(not_here(carried));
        };
        let request = NodeMessage::Relay(RelayRequest {
            room: room.name.clone(),
            publisher_id: publisher_id.to_owned(),
            relay_addr: self.0.relay_addr,
            router_id: room.router.id().to_owned(),
            from: self.0.node.clone(),
            data: carried == Carried::Data,
        });
        let payload = serde_json::to_string(&request).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + RELAY_WAIT;
        // Asked again every 2 s in case the request was lost (the other node skips a
        // request that repeats the one before it).
        let mut next_ask = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_ask {
                let receivers = self
                    .query::<i64>(redis::cmd("PUBLISH").arg(inbox(&node)).arg(&payload))
                    .await?;
                if receivers == 0 {
                    tracing::debug!(node, "cluster: relay request reached nobody");
                }
                next_ask += ASK_AGAIN;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            if published_here() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "node {node} did not relay it within {RELAY_WAIT:?}"
                ));
            }
        }
    }

    /// Read `room`'s entries in Redis: those of other nodes that are alive, and the stale
    /// ones (of any node).
    async fn read_room(&self, room: &str) -> Result<RoomEntries, String> {
        let mut all = Vec::new();
        for carried in [Carried::Track, Carried::Data] {
            let entries: HashMap<String, String> = self
                .query(redis::cmd("HGETALL").arg(hash_key(room, carried)))
                .await?;
            all.extend(entries.into_iter().filter_map(|(id, v)| {
                serde_json::from_str::<TrackEntry>(&v)
                    .ok()
                    .map(|e| (carried, id, e))
            }));
        }
        let nodes: Vec<String> = all
            .iter()
            .map(|(_, _, e)| e.node.clone())
            .filter(|n| *n != self.0.node)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut alive: HashMap<String, String> = HashMap::new();
        alive.insert(self.0.node.clone(), self.0.instance.clone());
        if !nodes.is_empty() {
            let keys: Vec<String> = nodes.iter().map(|n| node_key(n)).collect();
            let values: Vec<Option<String>> = self
                .query(redis::cmd("MGET").arg(&keys))
                .await
                .map_err(|e| format!("reading nodes: {e}"))?;
            for (node, value) in nodes.into_iter().zip(values) {
                if let Some(info) = value.and_then(|v| serde_json::from_str::<NodeInfo>(&v).ok()) {
                    alive.insert(node, info.instance);
                }
            }
        }
        let mut read = RoomEntries::default();
        for (carried, id, e) in all {
            if alive.get(&e.node) != Some(&e.instance) {
                read.stale.push((carried, id));
            } else if e.node != self.0.node {
                match carried {
                    Carried::Track => {
                        read.tracks.insert(
                            id,
                            RemoteTrack {
                                node: e.node,
                                name: e.about.name,
                                muted: e.about.muted,
                                stream: e.about.stream,
                            },
                        );
                    }
                    Carried::Data => {
                        read.data.insert(id, e.node);
                    }
                }
            }
        }
        Ok(read)
    }

    /// Read `room`'s tracks and data channels now (not at the next tick).
    pub async fn refresh(&self, room: &Arc<Room>) {
        self.sync_room(room).await
    }

    /// The tracks a WHEP viewer of `stream` in `room` gets from other nodes: those of the
    /// WHIP session `stream` published there, or else the track whose id is `stream` (none
    /// if Redis does not answer).
    pub async fn remote_stream(&self, room: &str, stream: &str) -> Vec<String> {
        let tracks = match self.read_room(room).await {
            Ok(read) => read.tracks,
            Err(e) => {
                tracing::debug!(room, "cluster: reading the room's tracks: {e}");
                return Vec::new();
            }
        };
        let of_session: Vec<String> = tracks
            .iter()
            .filter(|(_, t)| t.stream.as_deref() == Some(stream))
            .map(|(id, _)| id.clone())
            .collect();
        if !of_session.is_empty() {
            return of_session;
        }
        if tracks.contains_key(stream) {
            return vec![stream.to_owned()];
        }
        Vec::new()
    }

    /// Read `room`'s entries from Redis and tell the room's participants what changed.
    async fn sync_room(&self, room: &Arc<Room>) {
        let _one = self.0.sync.lock().await;
        let read = match self.read_room(&room.name).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(room = room.name, "cluster: reading the room's entries: {e}");
                return;
            }
        };
        let changes = room.set_remote(read.tracks, read.data);
        if !changes.added.is_empty() {
            room.broadcast(&room.published(changes.added));
        }
        for (publisher_ids, name) in changes.renamed {
            room.broadcast(&ServerMessage::NameChanged {
                publisher_ids,
                name,
            });
        }
        for (publisher_id, muted) in changes.muted {
            room.broadcast(&ServerMessage::Muted {
                publisher_id,
                muted,
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
        if !changes.data_added.is_empty() {
            room.broadcast(&ServerMessage::DataPublished {
                publisher_ids: changes.data_added,
            });
        }
        for publisher_id in changes.data_removed {
            tracing::info!(
                room = room.name,
                data_publisher = publisher_id,
                "cluster: remote data channel gone"
            );
            room.broadcast(&ServerMessage::DataUnpublished { publisher_id });
        }
        if !read.stale.is_empty() {
            tracing::info!(room = room.name, entries = ?read.stale, "cluster: removing entries of nodes that are gone");
            for carried in [Carried::Track, Carried::Data] {
                let ids: Vec<&String> = read
                    .stale
                    .iter()
                    .filter(|(c, _)| *c == carried)
                    .map(|(_, id)| id)
                    .collect();
                if !ids.is_empty() {
                    let _ = self
                        .query::<()>(
                            redis::cmd("HDEL")
                                .arg(hash_key(&room.name, carried))
                                .arg(ids),
                        )
                        .await;
                }
            }
        }
    }
}

/// What [`Cluster::read_room`] found.
#[derive(Default)]
struct RoomEntries {
    /// Tracks published on other (live) nodes.
    tracks: BTreeMap<String, RemoteTrack>,
    /// Data channels published on other (live) nodes: label → node.
    data: BTreeMap<String, String>,
    /// Entries of dead nodes (or dead instances).
    stale: Vec<(Carried, String)>,
}

/// Why a publisher of `carried` is not relayed: not (or no longer) published on another node.
fn not_here(carried: Carried) -> String {
    match carried {
        Carried::Track => "no such track in this room".into(),
        Carried::Data => "no such data channel in this room".into(),
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

    /// A request of node "n2" for publisher `id` of room "r" into router "x".
    fn request(id: &str, data: bool) -> RelayRequest {
        RelayRequest {
            room: "r".into(),
            publisher_id: id.into(),
            relay_addr: "127.0.0.1:9".parse().unwrap(),
            router_id: "x".into(),
            from: "n2".into(),
            data,
        }
    }

    #[test]
    fn messages_have_the_documented_shape() {
        let m = NodeMessage::Relay(request("p", false));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"relay","room":"r","publisherId":"p","relayAddr":"127.0.0.1:9","routerId":"x","from":"n2"}"#
        );
        let m = NodeMessage::Unrelay(request("p", false));
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"type":"unrelay","room":"r","publisherId":"p","relayAddr":"127.0.0.1:9","routerId":"x","from":"n2"}"#
        );
        assert!(matches!(
            serde_json::from_str::<NodeMessage>(&text).unwrap(),
            NodeMessage::Unrelay(RelayRequest { ref publisher_id, data: false, .. }) if publisher_id == "p"
        ));
        // A data channel's relay says so.
        let m = NodeMessage::Relay(request("chat", true));
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"type":"relay","room":"r","publisherId":"chat","relayAddr":"127.0.0.1:9","routerId":"x","from":"n2","data":true}"#
        );
        let NodeMessage::Relay(back) = serde_json::from_str::<NodeMessage>(&text).unwrap() else {
            panic!("{text}");
        };
        assert_eq!(back.carried(), Carried::Data);
    }

    #[test]
    fn entries_have_the_documented_shape() {
        let e = TrackEntry {
            node: "n1".into(),
            instance: "i".into(),
            about: Announced {
                name: Some("Ada".into()),
                kind: Some("video".into()),
                muted: true,
                stream: Some("cam".into()),
            },
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"node":"n1","instance":"i","name":"Ada","kind":"video","muted":true,"stream":"cam"}"#
        );
        // Unmuted and not of a WHIP session: as before (older entries read the same).
        let e = TrackEntry {
            node: "n1".into(),
            instance: "i".into(),
            about: Announced {
                name: None,
                kind: Some("data".into()),
                muted: false,
                stream: None,
            },
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"node":"n1","instance":"i","kind":"data"}"#
        );
        let old: TrackEntry =
            serde_json::from_str(r#"{"node":"n1","instance":"i","name":"A","kind":"audio"}"#)
                .unwrap();
        assert!(!old.about.muted);
        assert_eq!(old.about.name.as_deref(), Some("A"));
        assert_eq!(hash_key("r", Carried::Track), "rheomesh:room:r:tracks");
        assert_eq!(hash_key("r", Carried::Data), "rheomesh:room:r:data");
    }

    fn key() -> RelayKey {
        ("router".into(), Carried::Track, "track".into())
    }

    #[test]
    fn a_relay_stops_only_after_its_last_use_and_a_quiet_grace_period() {
        let mut r = RelayUses::default();
        r.acquire(&key(), "n1");
        r.acquire(&key(), "n1");
        assert_eq!(r.release(&key()), None, "one use left");
        let seq = r.release(&key()).expect("the last use ended");
        // A subscription during the grace period cancels that timer.
        r.acquire(&key(), "n1");
        assert_eq!(r.begin_stop(&key(), seq), None);
        let seq2 = r.release(&key()).unwrap();
        assert_eq!(
            r.begin_stop(&key(), seq),
            None,
            "an earlier timer does nothing"
        );
        assert_eq!(r.begin_stop(&key(), seq2).as_deref(), Some("n1"));
        assert!(r.is_stopping(&key()));
        assert_eq!(r.begin_stop(&key(), seq2), None, "one stop at a time");
        assert_eq!(r.end_stop(&key(), true), None);
        assert!(r.0.is_empty(), "a stopped relay is forgotten");
    }

    #[test]
    fn a_subscription_during_a_stop_waits_for_it_and_keeps_the_track() {
        let mut r = RelayUses::default();
        r.acquire(&key(), "n1");
        let seq = r.release(&key()).unwrap();
        assert!(r.begin_stop(&key(), seq).is_some());
        // A new subscription: counted, sees the stop (and waits for its end).
        r.acquire(&key(), "n1");
        assert!(r.is_stopping(&key()));
        assert_eq!(r.end_stop(&key(), true), None, "in use: no new stop");
        assert!(!r.is_stopping(&key()));
        assert_eq!(r.0[&key()].uses, 1);
        // Its lease dropped while a stop runs: the stop's end decides.
        let seq = r.release(&key()).unwrap();
        assert!(r.begin_stop(&key(), seq).is_some());
        r.acquire(&key(), "n1");
        assert_eq!(r.release(&key()), None, "stopping: no second timer");
        assert_eq!(r.end_stop(&key(), true), None);
        assert!(r.0.is_empty());
    }

    #[test]
    fn a_stop_that_fails_is_tried_again_a_few_times() {
        let mut r = RelayUses::default();
        r.acquire(&key(), "n1");
        let mut seq = r.release(&key()).unwrap();
        for _ in 1..MAX_STOP_ATTEMPTS {
            assert!(r.begin_stop(&key(), seq).is_some());
            seq = r.end_stop(&key(), false).expect("tried again");
        }
        assert!(r.begin_stop(&key(), seq).is_some());
        assert_eq!(r.end_stop(&key(), false), None, "given up");
        assert!(r.0.is_empty());
    }
}
