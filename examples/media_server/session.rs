//! One WebSocket = one participant: its publish and subscribe transports, the tracks it
//! published, and the translation between protocol messages and rheomesh calls.
//!
//! The read loop never waits on the browser: calls that may wait for a later message
//! (`try_publish` waits for the offer carrying the track, `subscribe` and `restart_ice`
//! wait for the answer to the previous offer) run on their own tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use rheomesh::config::WebRTCTransportConfig;
use rheomesh::data::DataPublisher;
use rheomesh::publisher::Publisher;
use rheomesh::subscriber::Subscriber;
use rheomesh::transport::{PublishTransport, SubscribeTransport};
use rheomesh::SdpType;
use tokio::sync::{oneshot, watch, Notify};

use crate::cluster::{Carried, RelayLease};
use crate::protocol::{self, ClientMessage, ServerMessage};
use crate::record::Recorder;
use crate::room::{Outbox, ParticipantId, Room, Rooms, OUTBOX_CAPACITY};

/// The server pings every participant this often (browsers answer pings by themselves).
const PING_EVERY: Duration = Duration::from_secs(5);
/// `Publish` requests of one participant that may wait for their track at once.
const MAX_PENDING_PUBLISH: usize = 32;
/// A participant from whom nothing (not even a pong) arrived for this long is removed: its
/// network is gone, and TCP alone would take minutes to notice.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(15);

/// The sessions that are running, so that shutdown can wait for them to end.
#[derive(Clone, Default)]
pub struct Live(Arc<LiveInner>);

#[derive(Default)]
struct LiveInner {
    count: AtomicUsize,
    idle: Notify,
}

/// One running session; dropping it ends the session's count.
pub struct LiveGuard(Live);

impl Live {
    pub fn enter(&self) -> LiveGuard {
        self.0.count.fetch_add(1, Ordering::SeqCst);
        LiveGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.0.count.load(Ordering::SeqCst)
    }

    /// Wait until no session runs.
    pub async fn wait_idle(&self) {
        loop {
            let idle = self.0.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0 .0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0 .0.idle.notify_waiters();
        }
    }
}

/// Run one participant until its WebSocket closes or the server shuts down.
pub async fn run(
    socket: WebSocket,
    rooms: Rooms,
    room_name: String,
    transport_config: WebRTCTransportConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut outgoing) = Outbox::new();
    let overflow = outbox.clone();
    let (room, id) = rooms.join(&room_name, outbox.clone()).await;
    tracing::info!(room = room.name, participant = %id, "joined");

    // Sent when the session ends: true if the server is shutting down.
    let (done, mut writer_done) = oneshot::channel::<bool>();
    let mut writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let going_away = loop {
            let msg = tokio::select! {
                msg = outgoing.recv() => msg,
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                    continue;
                }
                done = &mut writer_done => break done.unwrap_or(false),
            };
            let Some(msg) = msg else { break false };
            let text = msg.to_json();
            if sink.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        };
        if going_away {
            let frame = CloseFrame {
                code: close_code::AWAY,
                reason: "server shutting down".into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
    });

    let mut participant = Participant {
        id,
        room: room.clone(),
        outbox,
        config: transport_config,
        publish: None,
        subscribe: None,
        published: Arc::default(),
        recorder: Recorder::new(rooms.record.clone(), &room.name),
        data_published: Arc::default(),
        publishing: Arc::default(),
    };

    let mut going_away = false;
    let mut last_heard = tokio::time::Instant::now();
    let mut keepalive = tokio::time::interval(PING_EVERY);
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = keepalive.tick() => {
                if last_heard.elapsed() > KEEPALIVE_TIMEOUT {
                    tracing::info!(participant = %id, "disconnected: no pong for {KEEPALIVE_TIMEOUT:?}");
                    metrics::counter!("rheomesh_ws_disconnected_total", "reason" => "keepalive")
                        .increment(1);
                    break;
                }
                continue;
            }
            _ = shutdown.wait_for(|stop| *stop) => {
                going_away = true;
                break;
            }
            _ = overflow.overflowed() => {
                // The client does not read what it is sent: let it go rather than buffer.
                tracing::warn!(
                    participant = %id,
                    "disconnected: {OUTBOX_CAPACITY} messages waiting, the client does not read"
                );
                metrics::counter!("rheomesh_ws_disconnected_total", "reason" => "not_reading")
                    .increment(1);
                break;
            }
        };
        last_heard = tokio::time::Instant::now();
        match frame {
            Some(Ok(Message::Text(text))) => match protocol::parse(&text) {
                Ok(msg) => participant.handle(msg).await,
                Err(reason) => participant.send(ServerMessage::error(reason)),
            },
            Some(Ok(Message::Binary(_))) => {
                participant.send(ServerMessage::error("binary frames are not supported"))
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {} // ping/pong are answered by axum
            Some(Err(e)) => {
                tracing::debug!(participant = %id, "websocket error: {e}");
                break;
            }
        }
    }

    participant.close().await;
    rooms.leave(&room, id).await;
    // Outbox clones may live on in callbacks and tasks: stop the writer explicitly (it sends
    // a Close frame if the socket is still open, e.g. on server shutdown).
    let _ = done.send(going_away);
    // A client that does not read can keep the writer waiting on TCP (or on the closing
    // handshake) forever: after a second, end it, which closes the connection.
    if tokio::time::timeout(Duration::from_secs(1), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    tracing::info!(room = room.name, participant = %id, "left");
}

struct Participant {
    id: ParticipantId,
    room: Arc<Room>,
    outbox: Outbox,
    config: WebRTCTransportConfig,
    publish: Option<PublishTransport>,
    subscribe: Option<SubscribeTransport>,
    /// Tracks this participant published and that are still published.
    published: Arc<StdMutex<HashMap<String, Publisher>>>,
    /// What this participant records (`Record`, `StartRecording`).
    recorder: Recorder,
    /// Data channels this participant published and that are still published.
    data_published: Arc<StdMutex<HashMap<String, DataPublisher>>>,
    /// `Publish` requests still waiting for their track, and whether `SetMuted` came for
    /// them meanwhile (applied when the track is published).
    publishing: Arc<StdMutex<HashMap<String, bool>>>,
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Participant {
    fn send(&self, msg: ServerMessage) {
        let _ = self.outbox.send(msg);
    }

    fn publish_transport(&self) -> Option<&PublishTransport> {
        if self.publish.is_none() {
            self.send(ServerMessage::error(
                "no publish transport: send PublisherInit first",
            ));
        }
        self.publish.as_ref()
    }

    fn subscribe_transport(&self) -> Option<&SubscribeTransport> {
        if self.subscribe.is_none() {
            self.send(ServerMessage::error(
                "no subscribe transport: send SubscriberInit first",
            ));
        }
        self.subscribe.as_ref()
    }

    async fn handle(&mut self, msg: ClientMessage) {
        match msg {
            ClientMessage::Ping => self.send(ServerMessage::Pong),
            ClientMessage::PublisherInit => self.publisher_init().await,
            ClientMessage::SubscriberInit => self.subscriber_init().await,
            ClientMessage::PublisherIce { candidate } => {
                if let Some(t) = self.publish_transport() {
                    if let Err(e) = t.add_ice_candidate(candidate).await {
                        self.send(ServerMessage::error(format!("PublisherIce: {e}")));
                    }
                }
            }
            ClientMessage::SubscriberIce { candidate } => {
                if let Some(t) = self.subscribe_transport() {
                    if let Err(e) = t.add_ice_candidate(candidate).await {
                        self.send(ServerMessage::error(format!("SubscriberIce: {e}")));
                    }
                }
            }
            ClientMessage::Offer { sdp } => {
                // Applied in order, inline: each offer builds on the previous one.
                if let Some(t) = self.publish_transport() {
                    match t.get_answer(sdp.into_description(SdpType::Offer)).await {
                        Ok(answer) => self.send(ServerMessage::Answer { sdp: answer }),
                        Err(e) => self.send(ServerMessage::error(format!("Offer: {e}"))),
                    }
                }
            }
            ClientMessage::Publish { publisher_id } => self.publish(publisher_id),
            ClientMessage::StopPublish { publisher_id } => {
                let publisher = lock(&self.published).get(&publisher_id).cloned();
                match publisher {
                    // The task spawned by `publish` announces `Unpublished`.
                    Some(p) => p.close().await,
                    None => self.send(ServerMessage::error(format!(
                        "StopPublish: {publisher_id:?} is not published by you"
                    ))),
                }
            }
            ClientMessage::Subscribe { publisher_id } => self.subscribe(publisher_id),
            ClientMessage::Answer { sdp } => {
                if let Some(t) = self.subscribe_transport() {
                    if let Err(e) = t.set_answer(sdp.into_description(SdpType::Answer)).await {
                        self.send(ServerMessage::error(format!("Answer: {e}")));
                    }
                }
            }
            ClientMessage::StopSubscribe { subscriber_id } => {
                let Some(t) = self.subscribe_transport() else {
                    return;
                };
                match t
                    .subscribers()
                    .into_iter()
                    .find(|s| s.id() == subscriber_id)
                {
                    // Closing renegotiates: the new offer comes through on_negotiation_needed.
                    Some(s) => s.close().await,
                    None => self.send(ServerMessage::error(format!(
                        "StopSubscribe: no subscriber {subscriber_id:?} on your transport"
                    ))),
                }
            }
            ClientMessage::SetPreferredLayer {
                subscriber_id,
                sid,
                tid,
            } => {
                let found = self.subscribe_transport().and_then(|t| {
                    t.subscribers()
                        .into_iter()
                        .find(|s| s.id() == subscriber_id)
                });
                let Some(s) = found else {
                    return self.send(ServerMessage::error(format!(
                        "SetPreferredLayer: no subscriber {subscriber_id:?} on your transport"
                    )));
                };
                // No sid: no ceiling (the best layer the publisher sends).
                if let Err(e) = s.set_preferred_layer(sid.unwrap_or(u8::MAX), tid).await {
                    self.send(ServerMessage::error(format!("SetPreferredLayer: {e}")));
                }
            }
            ClientMessage::RestartIce => {
                if let Some(t) = self.subscribe_transport() {
                    let t = t.clone();
                    let outbox = self.outbox.clone();
                    tokio::spawn(async move {
                        let msg = match t.restart_ice().await {
                            Ok(offer) => ServerMessage::Offer { sdp: offer },
                            Err(e) => ServerMessage::error(format!("RestartICE: {e}")),
                        };
                        let _ = outbox.send(msg);
                    });
                }
            }
            ClientMessage::Record {
                publisher_id,
                publisher_ids,
            } => {
                let ids: Vec<String> = publisher_ids
                    .unwrap_or_default()
                    .into_iter()
                    .chain(publisher_id)
                    .collect();
                let msg = if ids.is_empty() {
                    ServerMessage::RecordingError {
                        error: "Record: give publisherId (or publisherIds)".into(),
                    }
                } else {
                    match self.recorder.describe(&self.room.router, &ids).await {
                        Ok(sdp) => ServerMessage::RecordingSdp { sdp },
                        Err(error) => ServerMessage::RecordingError {
                            error: format!("Record {ids:?}: {error}"),
                        },
                    }
                };
                self.send(msg);
            }
            ClientMessage::StartRecording { publisher_id } => {
                match self.recorder.start(&self.room.router, &publisher_id).await {
                    Ok(file) => self.send(ServerMessage::RecordingStarted { publisher_id, file }),
                    Err(error) => self.send(ServerMessage::RecordingError {
                        error: format!("StartRecording {publisher_id:?}: {error}"),
                    }),
                }
            }
            ClientMessage::PublishData { label } => self.publish_data(label),
            ClientMessage::StopPublishData { publisher_id } => {
                let found = lock(&self.data_published).get(&publisher_id).cloned();
                match found {
                    Some(p) => p.close(),
                    None => self.send(ServerMessage::error(format!(
                        "StopPublishData: {publisher_id:?} is not one of your data channels"
                    ))),
                }
            }
            ClientMessage::SubscribeData { publisher_id } => self.subscribe_data(publisher_id),
            ClientMessage::StopSubscribeData { subscriber_id } => {
                let found = self.subscribe_transport().and_then(|t| {
                    t.data_subscribers()
                        .into_iter()
                        .find(|s| s.id() == subscriber_id)
                });
                match found {
                    Some(s) => s.close(),
                    None => self.send(ServerMessage::error(format!(
                        "StopSubscribeData: no data subscriber {subscriber_id:?} on your transport"
                    ))),
                }
            }
            ClientMessage::StopRecording { publisher_id } => {
                match self.recorder.stop(&publisher_id).await {
                    Ok(()) => self.send(ServerMessage::RecordingStopped { publisher_id }),
                    Err(error) => self.send(ServerMessage::RecordingError {
                        error: format!("StopRecording {publisher_id:?}: {error}"),
                    }),
                }
            }
            ClientMessage::SetName { name } => match crate::room::check_name(&name) {
                Ok(name) => {
                    let publisher_ids = self.room.set_name(self.id, name.clone());
                    self.room.broadcast_except(
                        self.id,
                        &ServerMessage::NameChanged {
                            publisher_ids,
                            name,
                        },
                    );
                }
                Err(e) => self.send(ServerMessage::error(format!("SetName: {e}"))),
            },
            ClientMessage::SetMuted {
                publisher_id,
                muted,
            } => {
                // A track whose Publish is still waiting gets the state when it is published.
                if let Some(m) = lock(&self.publishing).get_mut(&publisher_id) {
                    *m = muted;
                    return;
                }
                match self.room.set_muted(self.id, &publisher_id, muted) {
                    Ok(true) => self.room.broadcast_except(
                        self.id,
                        &ServerMessage::Muted {
                            publisher_id,
                            muted,
                        },
                    ),
                    Ok(false) => {}
                    Err(e) => self.send(ServerMessage::error(format!("SetMuted: {e}"))),
                }
            }
        }
    }

    async fn publisher_init(&mut self) {
        if self.publish.is_some() {
            self.send(ServerMessage::error(
                "PublisherInit: this participant already has a publish transport",
            ));
            return;
        }
        let t = self
            .room
            .router
            .create_publish_transport(self.config.clone())
            .await;
        let outbox = self.outbox.clone();
        t.on_ice_candidate(Box::new(move |c| {
            if let Ok(candidate) = c.to_json() {
                let _ = outbox.send(ServerMessage::PublisherIce { candidate });
            }
        }))
        .await;
        let id = self.id;
        t.on_closed(Box::new(
            move || tracing::debug!(participant = %id, "publish transport closed"),
        ))
        .await;
        self.publish = Some(t);
    }

    async fn subscriber_init(&mut self) {
        if self.subscribe.is_none() {
            let t = self
                .room
                .router
                .create_subscribe_transport(self.config.clone())
                .await;
            let outbox = self.outbox.clone();
            t.on_ice_candidate(Box::new(move |c| {
                if let Ok(candidate) = c.to_json() {
                    let _ = outbox.send(ServerMessage::SubscriberIce { candidate });
                }
            }))
            .await;
            let outbox = self.outbox.clone();
            t.on_negotiation_needed(Box::new(move |offer| {
                let _ = outbox.send(ServerMessage::Offer { sdp: offer });
            }))
            .await;
            let id = self.id;
            t.on_closed(Box::new(
                move || tracing::debug!(participant = %id, "subscribe transport closed"),
            ))
            .await;
            self.subscribe = Some(t);
        }
        // Repeating SubscriberInit just lists the room again.
        let own = lock(&self.published);
        // The router's tracks, and with --redis those of the room on other nodes.
        let publisher_ids = self
            .room
            .track_ids()
            .into_iter()
            .filter(|id| !own.contains_key(id))
            .collect();
        drop(own);
        self.send(self.room.published(publisher_ids));
        // And the data channels already published (PROTOCOL.md), with --redis those on the
        // other nodes too.
        let own = lock(&self.data_published);
        let publisher_ids: Vec<String> = self
            .room
            .data_ids()
            .into_iter()
            .filter(|id| !own.contains_key(id))
            .collect();
        drop(own);
        if !publisher_ids.is_empty() {
            self.send(ServerMessage::DataPublished { publisher_ids });
        }
    }

    fn publish_data(&self, label: String) {
        let Some(t) = self.publish_transport() else {
            return;
        };
        let (t, room, me, outbox, published) = (
            t.clone(),
            self.room.clone(),
            self.id,
            self.outbox.clone(),
            self.data_published.clone(),
        );
        // `data_publish` waits for the channel to open, which needs the Offer carrying it
        // applied and SCTP up: on a task, not this participant's read loop.
        tokio::spawn(async move {
            let publisher = match t.data_publish(label.clone()).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = outbox.send(ServerMessage::error(format!("PublishData: {e}")));
                    return;
                }
            };
            tracing::info!(room = room.name, participant = %me, data_publisher = label, "data published");
            lock(&published).insert(label.clone(), publisher.clone());
            room.data_published(me, &publisher);
            room.broadcast_except(
                me,
                &ServerMessage::DataPublished {
                    publisher_ids: vec![label.clone()],
                },
            );
            publisher.closed().await;
            lock(&published).remove(&label);
            room.data_unpublished(&label);
            tracing::info!(room = room.name, participant = %me, data_publisher = label, "data unpublished");
            room.broadcast_except(
                me,
                &ServerMessage::DataUnpublished {
                    publisher_id: label,
                },
            );
        });
    }

    fn subscribe_data(&self, publisher_id: String) {
        let Some(t) = self.subscribe_transport() else {
            return;
        };
        let (t, outbox, room) = (t.clone(), self.outbox.clone(), self.room.clone());
        tokio::spawn(async move {
            // With --redis, a data channel published on another node is relayed here first,
            // and the relay is held while this subscription lasts (as for tracks).
            let lease = match relay_lease(&room, Carried::Data, &publisher_id).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = outbox.send(ServerMessage::error(format!(
                        "SubscribeData {publisher_id:?}: {e}"
                    )));
                    return;
                }
            };
            match t.data_subscribe(publisher_id.clone()).await {
                Ok((subscriber, offer)) => {
                    // No offer when the connection already carries data channels.
                    if let Some(sdp) = offer {
                        let _ = outbox.send(ServerMessage::Offer { sdp });
                    }
                    let _ = outbox.send(ServerMessage::DataSubscribed {
                        subscriber_id: subscriber.id(),
                        publisher_id,
                    });
                    if let Some(lease) = lease {
                        tokio::spawn(async move {
                            subscriber.closed().await;
                            drop(lease);
                        });
                    }
                }
                Err(e) => {
                    let _ = outbox.send(ServerMessage::error(format!(
                        "SubscribeData {publisher_id:?}: {e}"
                    )));
                }
            }
        });
    }

    fn publish(&self, publisher_id: String) {
        let Some(t) = self.publish_transport() else {
            return;
        };
        let (t, room, me, outbox, published, publishing) = (
            t.clone(),
            self.room.clone(),
            self.id,
            self.outbox.clone(),
            self.published.clone(),
            self.publishing.clone(),
        );
        {
            let mut p = lock(&publishing);
            if p.len() >= MAX_PENDING_PUBLISH && !p.contains_key(&publisher_id) {
                drop(p);
                return self.send(ServerMessage::error(format!(
                    "Publish: {MAX_PENDING_PUBLISH} publishes are already waiting for their track"
                )));
            }
            p.insert(publisher_id.clone(), false);
        }
        // `try_publish` may wait for the Offer carrying the track, which this
        // participant's read loop has yet to apply.
        tokio::spawn(async move {
            let result = t.try_publish(publisher_id.clone()).await;
            let publisher = {
                // Under the lock `SetMuted` checks first: it finds the track either waiting
                // here or in the room.
                let mut waiting = lock(&publishing);
                let muted = waiting.remove(&publisher_id).unwrap_or(false);
                match result {
                    Ok(p) => {
                        room.track_published(me, &p, muted, None);
                        p
                    }
                    Err(e) => {
                        drop(waiting);
                        let _ = outbox.send(ServerMessage::error(format!("Publish: {e}")));
                        return;
                    }
                }
            };
            tracing::info!(room = room.name, participant = %me, publisher = publisher_id, kind = ?publisher.kind(), codec = publisher.track().codec(), "published");
            lock(&published).insert(publisher_id.clone(), publisher.clone());
            room.broadcast_except(me, &room.published(vec![publisher_id.clone()]));
            publisher.closed().await;
            lock(&published).remove(&publisher_id);
            room.track_unpublished(&publisher_id);
            tracing::info!(room = room.name, participant = %me, publisher = publisher_id, "unpublished");
            room.broadcast_except(me, &ServerMessage::Unpublished { publisher_id });
        });
    }

    fn subscribe(&self, publisher_id: String) {
        let Some(t) = self.subscribe_transport() else {
            return;
        };
        let (t, outbox, room) = (t.clone(), self.outbox.clone(), self.room.clone());
        // `subscribe` waits for the answer to any outstanding offer, which arrives on this
        // participant's read loop.
        tokio::spawn(async move {
            // With --redis, a track published on another node is relayed here first, and
            // the relay is held while this subscription lasts (however it ends: its
            // subscriber closes).
            let lease = match relay_lease(&room, Carried::Track, &publisher_id).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = outbox.send(ServerMessage::error(format!(
                        "Subscribe {publisher_id:?}: {e}"
                    )));
                    return;
                }
            };
            match t.subscribe(publisher_id.clone()).await {
                Ok((subscriber, offer)) => {
                    let _ = outbox.send(ServerMessage::Offer { sdp: offer });
                    let _ = outbox.send(ServerMessage::Subscribed {
                        subscriber_id: subscriber.id(),
                        publisher_id: publisher_id.clone(),
                    });
                    if let Some(lease) = lease {
                        let subscriber = subscriber.clone();
                        tokio::spawn(async move {
                            subscriber.closed().await;
                            drop(lease);
                        });
                    }
                    tokio::spawn(report_layers(subscriber, outbox));
                }
                Err(e) => {
                    let _ = outbox.send(ServerMessage::error(format!(
                        "Subscribe {publisher_id:?}: {e}"
                    )));
                }
            }
        });
    }

    /// Close both transports: this participant's publishers are unpublished (the tasks
    /// spawned by `publish` tell the others).
    async fn close(&mut self) {
        self.recorder.close().await;
        if let Some(t) = self.publish.take() {
            t.close().await;
        }
        if let Some(t) = self.subscribe.take() {
            t.close().await;
        }
    }
}

/// With `--redis`, for a subscription to `publisher_id` of `room`: if it is published on
/// another node, relay it here and hold the relay until the lease is dropped (`None`: a
/// local publisher, or no cluster).
async fn relay_lease(
    room: &Arc<Room>,
    carried: Carried,
    publisher_id: &str,
) -> Result<Option<RelayLease>, String> {
    let Some(cluster) = room.cluster() else {
        return Ok(None);
    };
    if room.remote_node(carried, publisher_id).is_none() {
        return Ok(None);
    }
    cluster
        .use_relayed(room, carried, publisher_id)
        .await
        .map(Some)
}

/// Tell the participant each time the layer forwarded to `subscriber` changes
/// (`LayerChanged`, an extension), until it closes.
async fn report_layers(subscriber: Subscriber, outbox: Outbox) {
    let mut last = None;
    let mut watch = subscriber.layer_watch();
    while let Some(state) = watch.changed().await {
        let Some(layer) = state.current else {
            continue;
        };
        if last == Some(layer) {
            continue;
        }
        last = Some(layer);
        let tid = (layer.temporal != u8::MAX).then_some(layer.temporal);
        let msg = ServerMessage::LayerChanged {
            subscriber_id: subscriber.id(),
            sid: layer.spatial,
            tid,
        };
        if !outbox.send(msg) && outbox.is_closed() {
            return;
        }
    }
}
