// Rheomesh example page: joins a room over the example server's WebSocket protocol
// (PROTOCOL.md) under a display name, publishes camera/microphone (devices to pick, mute and
// unmute) or screen, shows a tile per remote participant stream (its camera and microphone
// together, tied by the msid stream id of the server's offer) with its name, mute state and a
// speaking indicator, records its own tracks, and chats over data channels.
// Plain ES module, no build step. State for tests: window.rheomeshApp.
//
// URL parameters: room=NAME (join at load), name=NAME (display name), autopublish=1,
// codec=VP8|VP9|H264|AV1,
// simulcast=1 (publish the camera as three simulcast layers; prefers VP8 unless codec= is
// given), svc=MODE (publish the camera as one SVC encoding with that scalability mode, e.g.
// L3T3_KEY; VP9 unless codec= is given), video=WIDTHxHEIGHT (camera resolution to ask for;
// simulcast and SVC ask for 1280x720).
import { PublishTransport, SubscribeTransport, SVCEncodings, simulcastEncodings } from "/rheomesh.js";

const params = new URLSearchParams(location.search);
const rtcConfig = { iceServers: [] }; // the server announces its own reachable candidates
const $ = (id) => document.getElementById(id);

const state = {
  joined: false,
  room: null,
  published: [], // our publisher ids
  subscribed: [], // remote publisher ids whose track we receive
  subscriberIds: [], // server subscriber ids (Subscribed)
  tracks: 0, // remote tracks received
  tiles: 0, // remote tiles: one per participant stream (camera and microphone together)
  name: null, // our display name
  names: {}, // remote publisherId -> display name (Published.names, NameChanged)
  muted: {}, // remote publisherId -> true while muted at the source (Published.muted, Muted)
  localMuted: { audio: false, video: false }, // our microphone / camera muted
  speaking: {}, // publisherId (remote, or ours) -> audio level (RMS over the last stats interval)
  speakingAt: {}, // publisherId -> when (Date.now()) its level last reached SPEAKING_LEVEL
  // our publisherId -> { kind, label, deviceId, enabled } of the track it sends now
  localTracks: {},
  devices: { camera: [], microphone: [] }, // { deviceId, label } choices
  // publisherId -> { file } while the server records our track (RecordingStarted)
  recording: {},
  recordingSdp: null, // the SDP of our tracks as recorded (RecordingSDP)
  // publisherId -> { kind, codec, width, height, fps, kbps, lossPct, framesDecoded, packetsReceived,
  //   freezeCount, totalFreezesDuration, nackCount, pliCount, firCount, keyFramesDecoded }
  stats: {},
  simulcast: false, // the camera was published as simulcast
  subscriberIdOf: {}, // remote publisherId -> our subscriberId (from Subscribed)
  preferredLayers: {}, // publisherId -> { sid, tid, sentAt } last SetPreferredLayer sent (sentAt: Date.now())
  layers: {}, // publisherId -> { sid, tid, at } layer the server forwards (LayerChanged)
  layerChanges: [], // every LayerChanged: { publisherId, subscriberId, sid, tid, at } (last 200)
  // our video publisherId -> { [rid, or "-" without simulcast]: { rid, frameWidth, frameHeight,
  //   framesSent, framesEncoded, keyFramesEncoded, pliCount, firCount, nackCount, active,
  //   qualityLimitationReason, kbps } } from the publish transport's outbound-rtp
  outbound: {},
  publishState: "new",
  subscribeState: "new",
  // The room chat over data channels: our data publisher id, whether our channel is open, the
  // data publishers we receive, and every message shown ({ from, text, at }; last 500).
  chat: { id: null, ready: false, peers: [], messages: [] },
  lastError: null,
  errors: [],
};
window.rheomeshApp = state;

let ws = null;
let pub = null;
let sub = null;
let statsTimer = null;
// publisherId -> { group, track, media: element holding its video/audio, layer, picker, prev,
//   statsLine, energy: { total, duration } }
const remote = new Map();
const groups = new Map(); // tile key (msid stream id, else publisherId) -> { tile, members: Set, stats, name, badges }
const pending = new Set(); // publisher ids being subscribed
const local = new Map(); // publisherId -> { track, tile }
const layerBySubscriber = new Map(); // subscriberId -> last LayerChanged, until it is mapped
const outboundPrev = new Map(); // outbound-rtp id -> { timestamp, bytesSent }
let chatChannel = null; // our published data channel
const chatPeers = new Map(); // remote data publisher id -> RTCDataChannel

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function fail(where, error) {
  const message = `${where}: ${error?.message ?? error}`;
  state.lastError = message;
  state.errors.push(message);
  console.error(message);
  setStatus(message, true);
}

function showJoined(joined) {
  $("join-form").classList.toggle("hidden", joined);
  $("controls").classList.toggle("hidden", !joined);
  $("chat").classList.toggle("hidden", !joined);
  $("chat-input").disabled = !state.chat.ready;
  $("publish").disabled = false;
  showLocalControls();
}

/** Mute and record buttons follow what we publish. */
function showLocalControls() {
  const kinds = new Set([...local.values()].map((e) => e.track.kind));
  $("mute-audio").disabled = !kinds.has("audio");
  $("mute-video").disabled = !kinds.has("video");
  $("mute-audio").textContent = state.localMuted.audio ? "Unmute microphone" : "Mute microphone";
  $("mute-video").textContent = state.localMuted.video ? "Camera on" : "Camera off";
  $("mute-audio").setAttribute("aria-pressed", String(state.localMuted.audio));
  $("mute-video").setAttribute("aria-pressed", String(state.localMuted.video));
  const recording = Object.keys(state.recording).length > 0;
  $("record").disabled = local.size === 0 && !recording;
  $("record").textContent = recording ? "Stop recording" : "Record";
  $("record").classList.toggle("recording", recording);
}

// ---- joining and leaving ----

function join(room, name = $("name").value) {
  if (ws) return Promise.resolve();
  state.room = room;
  state.name = (name ?? "").trim().slice(0, 64) || `guest-${Math.random().toString(36).slice(2, 6)}`;
  const url = new URL("/socket", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("room", room);
  ws = new WebSocket(url);
  pub = new PublishTransport(rtcConfig);
  sub = new SubscribeTransport(rtcConfig);
  pub.on("icecandidate", (candidate) => send({ action: "PublisherIce", candidate }));
  sub.on("icecandidate", (candidate) => send({ action: "SubscriberIce", candidate }));
  pub.on("connectionstatechange", (s) => (state.publishState = s));
  sub.on("connectionstatechange", (s) => (state.subscribeState = s));

  const socket = ws;
  return new Promise((resolve, reject) => {
    socket.onopen = () => {
      state.joined = true;
      showJoined(true);
      setStatus(`Joined room "${room}" as ${state.name}`);
      const u = new URL(location.href);
      u.searchParams.set("room", room);
      u.searchParams.set("name", state.name);
      history.replaceState(null, "", u);
      // Before anything is published, so that every Published about us carries the name.
      send({ action: "SetName", name: state.name });
      send({ action: "PublisherInit" });
      send({ action: "SubscriberInit" });
      startChat().catch((e) => fail("chat", e));
      let busy = false; // a slow getStats must not pile up calls
      statsTimer = setInterval(() => {
        if (busy) return;
        busy = true;
        Promise.all([
          updateStats().catch((e) => console.warn("stats", e)),
          updateOutboundStats().catch((e) => console.warn("outbound stats", e)),
        ]).finally(() => (busy = false));
      }, STATS_INTERVAL_MS);
      resolve();
    };
    socket.onmessage = (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (e) {
        return fail("bad server message", e);
      }
      handle(msg).catch((e) => fail(msg.action, e));
    };
    socket.onclose = () => {
      if (ws !== socket) return;
      const wasJoined = state.joined;
      leave();
      if (wasJoined) setStatus("Disconnected", true);
      else reject(new Error("could not connect"));
    };
  });
}

function leave() {
  const socket = ws;
  ws = null;
  socket?.close();
  clearInterval(statsTimer);
  pub?.close();
  sub?.close();
  pub = sub = null;
  for (const { track, tile } of local.values()) {
    track.stop();
    tile?.remove();
  }
  local.clear();
  $("local").replaceChildren();
  chatChannel = null;
  chatPeers.clear();
  $("chat-log").replaceChildren();
  for (const id of [...remote.keys()]) removeRemote(id);
  pending.clear();
  groups.clear();
  $("remote").replaceChildren();
  layerBySubscriber.clear();
  outboundPrev.clear();
  localEnergy.clear();
  Object.assign(state, {
    joined: false,
    published: [],
    subscribed: [],
    subscriberIds: [],
    tracks: 0,
    tiles: 0,
    names: {},
    muted: {},
    localMuted: { audio: false, video: false },
    speaking: {},
    speakingAt: {},
    localTracks: {},
    recording: {},
    recordingSdp: null,
    stats: {},
    simulcast: false,
    subscriberIdOf: {},
    preferredLayers: {},
    layers: {},
    layerChanges: [],
    outbound: {},
    publishState: "new",
    subscribeState: "new",
    chat: { id: null, ready: false, peers: [], messages: [] },
  });
  showJoined(false);
  setStatus("Not connected");
}

// ---- server messages ----

async function handle(msg) {
  switch (msg.action) {
    case "Pong":
      return;
    case "PublisherIce":
      return pub?.addIceCandidate(msg.candidate);
    case "SubscriberIce":
      return sub?.addIceCandidate(msg.candidate);
    case "Answer":
      return pub?.setAnswer(msg.sdp);
    case "Offer": {
      if (!sub) return;
      const answer = await sub.setOffer(msg.sdp);
      send({ action: "Answer", sdp: answer });
      return;
    }
    case "Published":
      Object.assign(state.names, msg.names ?? {});
      for (const id of msg.muted ?? []) state.muted[id] = true;
      for (const id of msg.publisherIds) subscribeTo(id);
      return;
    case "NameChanged":
      for (const id of msg.publisherIds) state.names[id] = msg.name;
      for (const id of msg.publisherIds) showGroup(remote.get(id)?.group);
      return;
    case "Muted":
      if (msg.muted) state.muted[msg.publisherId] = true;
      else delete state.muted[msg.publisherId];
      showGroup(remote.get(msg.publisherId)?.group);
      return;
    case "RecordingStarted":
      state.recording[msg.publisherId] = { file: msg.file ?? null };
      showLocalControls();
      showRecording();
      return;
    case "RecordingStopped":
      delete state.recording[msg.publisherId];
      showLocalControls();
      showRecording();
      return;
    case "RecordingSDP":
      state.recordingSdp = msg.sdp;
      showRecording();
      return;
    case "Unpublished":
      removeRemote(msg.publisherId);
      return;
    case "Subscribed":
      state.subscriberIds.push(msg.subscriberId);
      mapSubscriber(msg.subscriberId, msg.publisherId);
      return;
    case "LayerChanged":
      return layerChanged(msg);
    case "DataPublished":
      for (const id of msg.publisherIds) subscribeChat(id);
      return;
    case "DataSubscribed":
      return;
    case "DataUnpublished": {
      chatPeers.get(msg.publisherId)?.close();
      chatPeers.delete(msg.publisherId);
      state.chat.peers = [...chatPeers.keys()];
      return;
    }
    case "Error":
      return fail("server", msg.message);
    case "RecordingError":
      showLocalControls();
      return fail("recording", msg.error);
    default:
      console.warn("unhandled server message", msg);
  }
}

// ---- the room chat (data channels) ----

/** Publishes our chat channel: the offer carrying it, then PublishData with its id. */
async function startChat() {
  const transport = pub;
  const { id, channel, offer } = await transport.publishData();
  if (pub !== transport) return channel.close();
  chatChannel = channel;
  state.chat.id = id;
  channel.onopen = () => {
    state.chat.ready = true;
    $("chat-input").disabled = false;
  };
  channel.onclose = () => (state.chat.ready = false);
  send({ action: "Offer", sdp: offer });
  send({ action: "PublishData", label: id });
}

/** Receives another participant's chat channel. */
async function subscribeChat(id) {
  if (!sub || id === state.chat.id || chatPeers.has(id)) return;
  const transport = sub;
  chatPeers.set(id, null);
  send({ action: "SubscribeData", publisherId: id });
  try {
    const { channel } = await transport.subscribeData(id);
    if (sub !== transport) return;
    chatPeers.set(id, channel);
    state.chat.peers = [...chatPeers.keys()];
    channel.onmessage = (e) => {
      if (typeof e.data === "string") showChat(id, e.data);
    };
  } catch (e) {
    chatPeers.delete(id);
    fail("chat subscribe", e);
  }
}

/** Sends `text` to the room; false if our channel is not open. */
function sendChat(text) {
  if (!chatChannel || chatChannel.readyState !== "open" || !text) return false;
  chatChannel.send(text);
  showChat(state.chat.id, text);
  return true;
}

function showChat(from, text) {
  state.chat.messages.push({ from, text, at: Date.now() });
  if (state.chat.messages.length > 500) state.chat.messages.shift();
  const li = document.createElement("li");
  const who = document.createElement("span");
  who.className = "from";
  who.textContent = from === state.chat.id ? "me" : from.slice(0, 8);
  li.append(who, document.createTextNode(text));
  $("chat-log").append(li);
  li.scrollIntoView({ block: "nearest" });
}

// ---- subscribing ----

async function subscribeTo(id) {
  if (!sub || remote.has(id) || pending.has(id) || local.has(id)) return;
  pending.add(id);
  const transport = sub;
  send({ action: "Subscribe", publisherId: id });
  try {
    const { track, streamId } = await transport.subscribe(id, { timeoutMs: 15000 });
    if (!pending.has(id) || transport !== sub) return; // unpublished or left meanwhile
    addRemote(id, track, streamId);
  } catch (e) {
    if (pending.has(id) && transport === sub) fail(`subscribe ${id}`, e);
  } finally {
    pending.delete(id);
  }
}

/**
 * Shows remote track `id` in the tile of its msid stream (`streamId`: the publisher's camera
 * and microphone share one), creating the tile for the stream's first track.
 */
function addRemote(id, track, streamId) {
  const key = streamId ?? id;
  let group = groups.get(key);
  if (!group) {
    const tile = document.createElement("div");
    tile.className = "tile remote audio";
    tile.dataset.stream = key;
    const name = label("");
    const badges = document.createElement("div");
    badges.className = "badges";
    const stats = document.createElement("div");
    stats.className = "stats";
    tile.append(name, badges, stats);
    $("remote").append(tile);
    group = { key, tile, members: new Set(), name, badges, stats };
    groups.set(key, group);
  }
  const media = document.createElement("div");
  media.className = `media ${track.kind}`;
  media.dataset.publisherId = id;
  const el = document.createElement(track.kind === "video" ? "video" : "audio");
  el.autoplay = true;
  el.playsInline = true;
  el.srcObject = new MediaStream([track]);
  media.append(el);
  let picker = null;
  let layer = null;
  if (track.kind === "video") {
    picker = layerPicker(id);
    layer = document.createElement("div");
    layer.className = "layer";
    media.append(picker, layer);
    group.tile.prepend(media); // the video first: the tile's picture
  } else {
    group.tile.append(media);
  }
  group.members.add(id);
  el.play?.().catch(() => setStatus("Click the page to start audio playback"));
  track.addEventListener("ended", () => removeRemote(id));
  remote.set(id, { group, track, media, layer, picker, prev: null, statsLine: "", energy: null });
  state.subscribed.push(id);
  state.tracks = remote.size;
  state.tiles = groups.size;
  showGroup(group);
  showLayer(id);
}

/** Updates a tile's label, kind, mute badges and speaking outline from the state. */
function showGroup(group) {
  if (!group) return;
  const ids = [...group.members];
  const kinds = ids.map((id) => remote.get(id)?.track.kind);
  const named = ids.find((id) => state.names[id]);
  group.name.textContent = named ? state.names[named] : "participant";
  const hasVideo = kinds.includes("video");
  const micMuted = ids.some((id, i) => kinds[i] === "audio" && state.muted[id]);
  const camMuted = ids.some((id, i) => kinds[i] === "video" && state.muted[id]);
  const speaking = !micMuted && ids.some((id) => (state.speaking[id] ?? 0) >= SPEAKING_LEVEL);
  group.tile.classList.toggle("video", hasVideo);
  group.tile.classList.toggle("audio", !hasVideo);
  group.tile.classList.toggle("mic-muted", micMuted);
  group.tile.classList.toggle("cam-muted", camMuted);
  group.tile.classList.toggle("speaking", speaking);
  group.tile.dataset.name = group.name.textContent;
  const badges = [];
  if (micMuted) badges.push("mic off");
  if (camMuted) badges.push("camera off");
  group.badges.textContent = badges.join(" · ");
  group.badges.classList.toggle("hidden", badges.length === 0);
  group.stats.textContent = ids
    .map((id) => remote.get(id))
    .filter((e) => e?.statsLine)
    .sort((x, y) => (x.track.kind === "video" ? -1 : 1) - (y.track.kind === "video" ? -1 : 1))
    .map((e) => e.statsLine)
    .join("\n");
}

function removeRemote(id) {
  pending.delete(id);
  try {
    sub?.unsubscribe(id);
  } catch {}
  delete state.names[id];
  delete state.muted[id];
  delete state.speaking[id];
  delete state.speakingAt[id];
  const entry = remote.get(id);
  if (!entry) return;
  entry.media.remove();
  remote.delete(id);
  const group = entry.group;
  group.members.delete(id);
  if (group.members.size === 0) {
    group.tile.remove();
    groups.delete(group.key);
  } else {
    showGroup(group);
  }
  state.subscribed = state.subscribed.filter((x) => x !== id);
  delete state.stats[id];
  delete state.subscriberIdOf[id];
  delete state.preferredLayers[id];
  delete state.layers[id];
  state.tracks = remote.size;
  state.tiles = groups.size;
}

// ---- simulcast / SVC layers of what we receive ----

// Picker value -> SetPreferredLayer ceiling. "auto" is no ceiling below the top layer, so
// the server's bandwidth estimation alone chooses.
const LAYER_CHOICES = {
  auto: { sid: 2, tid: null },
  low: { sid: 0, tid: null },
  mid: { sid: 1, tid: null },
  high: { sid: 2, tid: null },
};
const LAYER_NAMES = ["low", "mid", "high"];

function layerPicker(id) {
  const picker = document.createElement("select");
  picker.className = "layer-picker";
  picker.title = "Preferred layer (a ceiling: the server may forward a lower one)";
  picker.dataset.publisherId = id;
  for (const value of Object.keys(LAYER_CHOICES)) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = value;
    picker.append(option);
  }
  picker.addEventListener("change", () => {
    const { sid, tid } = LAYER_CHOICES[picker.value];
    setPreferredLayer(id, sid, tid);
  });
  return picker;
}

/**
 * Asks the server to forward at most spatial layer `sid` (0 = lowest resolution) and temporal
 * layer `tid` (null = all) of publisher `id`. Sent as soon as our subscriber id for it is known.
 */
function setPreferredLayer(id, sid, tid = null) {
  if (!Number.isInteger(sid) || sid < 0) throw new Error(`setPreferredLayer: bad sid ${sid}`);
  if (tid !== null && (!Number.isInteger(tid) || tid < 0)) throw new Error(`setPreferredLayer: bad tid ${tid}`);
  state.preferredLayers[id] = { sid, tid, sentAt: null };
  const picker = remote.get(id)?.picker;
  if (picker && LAYER_CHOICES[picker.value]?.sid !== sid) picker.value = LAYER_NAMES[sid] ?? "auto";
  flushPreferredLayer(id);
}

function flushPreferredLayer(id) {
  const preferred = state.preferredLayers[id];
  const subscriberId = state.subscriberIdOf[id];
  if (!preferred || preferred.sentAt !== null || subscriberId === undefined) return;
  preferred.sentAt = Date.now();
  send({ action: "SetPreferredLayer", subscriberId, sid: preferred.sid, tid: preferred.tid });
}

/** Which of our outstanding Subscribe requests a `Subscribed` answers. */
/** `Subscribed` names the publisher too (this server's extension of the protocol). */
function mapSubscriber(subscriberId, id) {
  if (typeof id !== "string" || !(remote.has(id) || pending.has(id))) return; // unpublished meanwhile
  state.subscriberIdOf[id] = subscriberId;
  const early = layerBySubscriber.get(subscriberId);
  if (early) {
    layerBySubscriber.delete(subscriberId);
    applyLayer(id, early);
  }
  flushPreferredLayer(id);
}

function layerChanged(msg) {
  const change = { sid: msg.sid, tid: msg.tid ?? null, at: Date.now() };
  const id = Object.keys(state.subscriberIdOf).find((p) => state.subscriberIdOf[p] === msg.subscriberId) ?? null;
  state.layerChanges.push({ publisherId: id, subscriberId: msg.subscriberId, ...change });
  if (state.layerChanges.length > 200) state.layerChanges.splice(0, state.layerChanges.length - 200);
  if (id === null) layerBySubscriber.set(msg.subscriberId, change);
  else applyLayer(id, change);
}

function applyLayer(id, change) {
  state.layers[id] = change;
  showLayer(id);
}

function showLayer(id) {
  const el = remote.get(id)?.layer;
  if (!el) return;
  const layer = state.layers[id];
  el.textContent = layer ? `layer ${LAYER_NAMES[layer.sid] ?? `s${layer.sid}`} (s${layer.sid} t${layer.tid ?? "*"})` : "";
  el.classList.toggle("hidden", !layer);
}

function label(text) {
  const el = document.createElement("div");
  el.className = "label";
  el.textContent = text;
  return el;
}

// Browsers may block audio autoplay until a user gesture.
document.addEventListener("click", () => {
  for (const el of document.querySelectorAll("#remote audio, #remote video")) el.play?.().catch(() => {});
});

// ---- publishing ----

async function publishStream(stream, what) {
  if (!pub) throw new Error("not joined");
  const transport = pub;
  const tile = document.createElement("div");
  const video = stream.getVideoTracks()[0];
  const simulcast = video !== undefined && what === "camera + microphone" && $("simulcast").checked;
  tile.className = `tile local ${video ? "video" : "audio"}`;
  tile.dataset.name = `${state.name} (you)`;
  if (video) {
    const el = document.createElement("video");
    el.autoplay = true;
    el.muted = true;
    el.playsInline = true;
    el.srcObject = new MediaStream([video]);
    tile.append(el);
  }
  tile.append(label(`${state.name} (you): ${what}${simulcast ? " (simulcast)" : ""}`));
  if (video) {
    const stats = document.createElement("div");
    stats.className = "stats hidden"; // per-encoding send stats (updateOutboundStats)
    tile.append(stats);
  }
  $("local").append(tile);
  for (const track of stream.getTracks()) {
    const codec = track.kind === "video" ? $("codec").value : undefined;
    const options = codec ? { codec } : {};
    if (track.kind === "video" && simulcast) options.encodings = simulcastEncodings();
    else if (track.kind === "video" && svcMode && what === "camera + microphone") {
      options.encodings = SVCEncodings(svcMode);
    }
    // One stream for the camera and the microphone: subscribers see them as one participant.
    options.stream = stream;
    const { id, offer } = await transport.publish(track, options);
    if (transport !== pub) return;
    send({ action: "Offer", sdp: offer });
    send({ action: "Publish", publisherId: id });
    const source = what === "camera + microphone" ? (track.kind === "video" ? "camera" : "microphone") : what;
    local.set(id, { track, tile, source });
    state.published.push(id);
    if (track.kind === "video" && simulcast) state.simulcast = true;
    watchEnded(id, track);
    showLocalTrack(id);
    // Muted before publishing: publish muted.
    if ((source === "camera" || source === "microphone") && state.localMuted[track.kind]) applyMute(track.kind);
  }
  showLocalControls();
  listDevices().catch((e) => console.warn("devices", e));
}

function watchEnded(id, track) {
  track.addEventListener("ended", () => {
    if (local.get(id)?.track === track) unpublish(id).catch((e) => fail("unpublish", e));
  });
}

function showLocalTrack(id) {
  const { track } = local.get(id);
  state.localTracks[id] = {
    kind: track.kind,
    label: track.label,
    deviceId: track.getSettings?.().deviceId ?? null,
    enabled: track.enabled,
  };
}

// ---- mute, devices ----

/** Mutes or unmutes our microphone ("audio") or camera ("video"): the track stops sending
 * sound or picture (silence, black frames) and the others are told (SetMuted). */
function setMuted(kind, muted) {
  state.localMuted[kind] = muted;
  applyMute(kind);
  showLocalControls();
}

function applyMute(kind) {
  const muted = state.localMuted[kind];
  for (const [id, e] of local) {
    if (e.track.kind !== kind || (e.source !== "camera" && e.source !== "microphone")) continue;
    e.track.enabled = !muted;
    e.tile.classList.toggle(kind === "audio" ? "mic-muted" : "cam-muted", muted);
    send({ action: "SetMuted", publisherId: id, muted });
    showLocalTrack(id);
  }
}

/** Fills the camera and microphone pickers (labels are known once a device was granted). */
async function listDevices() {
  const all = await navigator.mediaDevices.enumerateDevices();
  const pick = (kind) =>
    all.filter((d) => d.kind === kind && d.deviceId).map((d, i) => ({ deviceId: d.deviceId, label: d.label || `${kind} ${i + 1}` }));
  state.devices = { camera: pick("videoinput"), microphone: pick("audioinput") };
  for (const [select, list, kind] of [
    [$("camera-select"), state.devices.camera, "video"],
    [$("mic-select"), state.devices.microphone, "audio"],
  ]) {
    const current = [...local.values()].find((e) => e.track.kind === kind && (e.source === "camera" || e.source === "microphone"));
    const selected = current?.track.getSettings?.().deviceId ?? select.value;
    select.replaceChildren(
      ...list.map((d) => {
        const o = document.createElement("option");
        o.value = d.deviceId;
        o.textContent = d.label;
        return o;
      }),
    );
    if (list.some((d) => d.deviceId === selected)) select.value = selected;
    select.disabled = list.length === 0;
  }
}

/**
 * Uses another camera ("video") or microphone ("audio"): while publishing, the new device's
 * track replaces the old one on the same publisher (no renegotiation, subscribers keep their
 * subscription); otherwise it is used at the next publish.
 */
async function useDevice(kind, deviceId) {
  $(kind === "video" ? "camera-select" : "mic-select").value = deviceId;
  const entry = [...local].find(([, e]) => e.track.kind === kind && (e.source === "camera" || e.source === "microphone"));
  if (!entry || !pub) return;
  const [id, e] = entry;
  const constraints = { deviceId: { exact: deviceId } };
  if (kind === "video") Object.assign(constraints, cameraSize());
  const stream = await navigator.mediaDevices.getUserMedia({ [kind]: constraints });
  const track = stream.getTracks()[0];
  track.enabled = !state.localMuted[kind];
  try {
    await pub.replaceTrack(id, track);
  } catch (err) {
    track.stop();
    throw err;
  }
  const old = e.track;
  e.track = track;
  old.stop();
  watchEnded(id, track);
  const video = kind === "video" && e.tile.querySelector("video");
  if (video) video.srcObject = new MediaStream([track]);
  showLocalTrack(id);
}

// ---- recording our tracks ----

/** Starts recording what we publish (the server records it, or sends it as plain RTP to its
 * --record-host: the SDP to receive it with is offered for download), or stops it. */
function toggleRecording() {
  const ids = Object.keys(state.recording);
  if (ids.length > 0) {
    for (const id of ids) send({ action: "StopRecording", publisherId: id });
    return;
  }
  const mine = [...local.keys()];
  if (mine.length === 0) return;
  $("record").disabled = true;
  send({ action: "Record", publisherIds: mine });
  for (const id of mine) send({ action: "StartRecording", publisherId: id });
}

function showRecording() {
  const el = $("recording");
  const files = Object.values(state.recording).map((r) => r.file).filter(Boolean);
  const on = Object.keys(state.recording).length > 0;
  el.classList.toggle("hidden", !on);
  const text = files.length > 0 ? `● REC ${files.join(", ")}` : "● REC (plain RTP to the server's --record-host)";
  el.querySelector(".what").textContent = text;
  const link = el.querySelector("a");
  link.classList.toggle("hidden", !state.recordingSdp || files.length > 0);
  if (state.recordingSdp) link.href = URL.createObjectURL(new Blob([state.recordingSdp], { type: "application/sdp" }));
}

async function unpublish(id) {
  const entry = local.get(id);
  if (!entry || !pub) return;
  local.delete(id);
  delete state.localTracks[id];
  delete state.speaking[id];
  state.published = state.published.filter((x) => x !== id);
  entry.track.stop();
  if (![...local.values()].some((e) => e.tile === entry.tile)) entry.tile.remove();
  showLocalControls();
  send({ action: "StopPublish", publisherId: id });
  const offer = await pub.unpublish(id);
  send({ action: "Offer", sdp: offer });
}

async function publishCamera() {
  $("publish").disabled = true;
  try {
    const camera = $("camera-select").value;
    const mic = $("mic-select").value;
    const video = { ...cameraSize(), ...(camera ? { deviceId: { exact: camera } } : {}) };
    const audio = mic ? { deviceId: { exact: mic } } : true;
    const stream = await navigator.mediaDevices.getUserMedia({ video, audio });
    await publishStream(stream, "camera + microphone");
  } catch (e) {
    $("publish").disabled = false;
    fail("publish camera", e);
  }
}

// The camera size asked for: `video=WIDTHxHEIGHT`, else 1280x720 for simulcast (three layers
// need a large enough picture), else the browser's default.
function cameraSize() {
  const size = /^(\d{2,4})x(\d{2,4})$/.exec(params.get("video") ?? "");
  if (size) return { width: { ideal: Number(size[1]) }, height: { ideal: Number(size[2]) } };
  if ($("simulcast").checked || svcMode) return { width: { ideal: 1280 }, height: { ideal: 720 } };
  return {};
}

async function shareScreen() {
  try {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    await publishStream(stream, "screen");
  } catch (e) {
    fail("share screen", e);
  }
}

// ---- stats overlay ----

const STATS_INTERVAL_MS = 500;

// An audio level (RMS, 0..1, over one stats interval) from which a participant is shown speaking.
const SPEAKING_LEVEL = 0.01;

/** RMS level over the interval since `prev` from a stats entry's totalAudioEnergy and
 * totalSamplesDuration (which, unlike audioLevel, cover every sample in between). */
function levelSince(prev, r) {
  if (!prev || r.totalSamplesDuration === undefined) return 0;
  const duration = r.totalSamplesDuration - prev.duration;
  const energy = (r.totalAudioEnergy ?? 0) - prev.total;
  return duration > 0 && energy > 0 ? Math.sqrt(energy / duration) : 0;
}

async function updateStats() {
  await updateLocalLevels();
  if (!sub || remote.size === 0) return;
  const report = await sub.getStats();
  const byTrack = new Map([...remote].map(([id, e]) => [e.track.id, id]));
  const touched = new Set();
  for (const r of report.values()) {
    if (r.type !== "inbound-rtp") continue;
    const id = byTrack.get(r.trackIdentifier);
    const entry = id && remote.get(id);
    if (!entry) continue;
    const codec = report.get(r.codecId)?.mimeType?.split("/")[1] ?? "?";
    const prev = entry.prev;
    const kbps =
      prev && r.timestamp > prev.timestamp
        ? Math.round(((r.bytesReceived - prev.bytesReceived) * 8) / (r.timestamp - prev.timestamp))
        : 0;
    entry.prev = { timestamp: r.timestamp, bytesReceived: r.bytesReceived };
    const lost = Math.max(0, r.packetsLost ?? 0);
    const total = lost + (r.packetsReceived ?? 0);
    const lossPct = total > 0 ? (100 * lost) / total : 0;
    const s = {
      kind: r.kind,
      codec,
      width: r.frameWidth ?? 0,
      height: r.frameHeight ?? 0,
      fps: r.framesPerSecond ?? 0,
      kbps,
      lossPct,
      framesDecoded: r.framesDecoded ?? 0,
      packetsReceived: r.packetsReceived ?? 0,
      freezeCount: r.freezeCount ?? 0,
      totalFreezesDuration: r.totalFreezesDuration ?? 0,
      nackCount: r.nackCount ?? 0,
      pliCount: r.pliCount ?? 0,
      firCount: r.firCount ?? 0,
      keyFramesDecoded: r.keyFramesDecoded ?? 0,
    };
    if (r.kind === "audio") {
      state.speaking[id] = levelSince(entry.energy, r);
      if (state.speaking[id] >= SPEAKING_LEVEL) state.speakingAt[id] = Date.now();
      entry.energy = { total: r.totalAudioEnergy ?? 0, duration: r.totalSamplesDuration ?? 0 };
    }
    state.stats[id] = s;
    const size = s.kind === "video" ? `${s.width}x${s.height} ${Math.round(s.fps)}fps` : "audio";
    entry.statsLine = `${codec} ${size} ${kbps} kbit/s  loss ${lossPct.toFixed(1)}%`;
    touched.add(entry.group);
  }
  for (const group of touched) showGroup(group);
}

// Our own microphone's level (the publish transport's media-source stats), for our tile.
const localEnergy = new Map(); // media-source id -> { total, duration }
async function updateLocalLevels() {
  const transport = pub;
  const mic = [...local].find(([, e]) => e.track.kind === "audio");
  if (!transport || !mic) return;
  const report = await transport.getStats();
  for (const r of report.values()) {
    if (r.type !== "media-source" || r.kind !== "audio" || r.trackIdentifier !== mic[1].track.id) continue;
    const level = levelSince(localEnergy.get(r.id), r);
    localEnergy.set(r.id, { total: r.totalAudioEnergy ?? 0, duration: r.totalSamplesDuration ?? 0 });
    state.speaking[mic[0]] = mic[1].track.enabled ? level : 0;
    if (state.speaking[mic[0]] >= SPEAKING_LEVEL) state.speakingAt[mic[0]] = Date.now();
    mic[1].tile.classList.toggle("speaking", mic[1].track.enabled && level >= SPEAKING_LEVEL);
  }
}

// Per-encoding (rid) send statistics of our published video, for the console and tests.
async function updateOutboundStats() {
  const transport = pub;
  if (!transport || ![...local.values()].some((e) => e.track.kind === "video")) {
    state.outbound = {};
    return;
  }
  const report = await transport.getStats();
  if (transport !== pub) return;
  const byMid = new Map();
  for (const t of transport.peerConnection.getTransceivers()) {
    const track = t.sender.track;
    if (t.mid !== null && track?.kind === "video") {
      const id = [...local].find(([, e]) => e.track === track)?.[0];
      if (id) byMid.set(t.mid, id);
    }
  }
  const outbound = {};
  for (const r of report.values()) {
    if (r.type !== "outbound-rtp" || r.kind !== "video") continue;
    const id = byMid.get(r.mid);
    if (!id) continue;
    const prev = outboundPrev.get(r.id);
    const kbps =
      prev && r.timestamp > prev.timestamp
        ? Math.round(((r.bytesSent - prev.bytesSent) * 8) / (r.timestamp - prev.timestamp))
        : 0;
    outboundPrev.set(r.id, { timestamp: r.timestamp, bytesSent: r.bytesSent ?? 0 });
    (outbound[id] ??= {})[r.rid ?? "-"] = {
      rid: r.rid ?? null,
      frameWidth: r.frameWidth ?? 0,
      frameHeight: r.frameHeight ?? 0,
      framesSent: r.framesSent ?? 0,
      framesEncoded: r.framesEncoded ?? 0,
      keyFramesEncoded: r.keyFramesEncoded ?? 0,
      pliCount: r.pliCount ?? 0,
      firCount: r.firCount ?? 0,
      nackCount: r.nackCount ?? 0,
      active: r.active ?? true,
      qualityLimitationReason: r.qualityLimitationReason ?? null,
      kbps,
    };
  }
  state.outbound = outbound;
  for (const [id, encodings] of Object.entries(outbound)) {
    const el = local.get(id)?.tile.querySelector(".stats");
    if (!el) continue;
    const lines = Object.values(encodings)
      .sort((x, y) => x.frameWidth - y.frameWidth)
      .map((e) => `${e.rid ?? "sending"} ${e.frameWidth}x${e.frameHeight} ${e.kbps} kbit/s${e.active ? "" : " (off)"}`);
    el.textContent = lines.join("\n");
    el.classList.toggle("hidden", lines.length === 0);
  }
}

// ---- page ----

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const room = $("room").value.trim();
  if (room) join(room).catch((e) => fail("join", e));
});
$("publish").addEventListener("click", () => publishCamera());
$("share").addEventListener("click", () => shareScreen());
$("leave").addEventListener("click", () => leave());
$("mute-audio").addEventListener("click", () => setMuted("audio", !state.localMuted.audio));
$("mute-video").addEventListener("click", () => setMuted("video", !state.localMuted.video));
$("camera-select").addEventListener("change", () => useDevice("video", $("camera-select").value).catch((e) => fail("camera", e)));
$("mic-select").addEventListener("change", () => useDevice("audio", $("mic-select").value).catch((e) => fail("microphone", e)));
$("record").addEventListener("click", () => toggleRecording());
navigator.mediaDevices?.addEventListener?.("devicechange", () => listDevices().catch(() => {}));
$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("chat-input");
  if (sendChat(input.value.trim())) input.value = "";
});
// Simulcast is sent as VP8 by default (the codec every browser simulcasts); another codec may
// still be picked afterwards.
$("simulcast").addEventListener("change", () => {
  if ($("simulcast").checked) $("codec").value = "VP8";
});

// ICE restart of the publish transport: a new offer with fresh credentials; the server answers.
async function restartPublisherIce() {
  if (!pub) throw new Error("not joined");
  const offer = await pub.restartIce();
  send({ action: "Offer", sdp: offer });
}

// For tests and the console: drive the page without clicking.
window.rheomeshControls = {
  join,
  leave,
  publishCamera,
  shareScreen,
  unpublish,
  restartPublisherIce,
  setPreferredLayer,
  sendChat,
  setMuted,
  useDevice,
  listDevices,
  toggleRecording,
  transports: () => ({ publish: pub, subscribe: sub }),
};

if (params.get("simulcast") === "1") {
  $("simulcast").checked = true;
  $("codec").value = "VP8";
}
// SVC (a scalability mode such as L3T3_KEY): one encoding carrying every layer, VP9 by default.
const svcMode = /^L\dT\d(_KEY)?$/.test(params.get("svc") ?? "") ? params.get("svc") : null;
if (svcMode) $("codec").value = "VP9";
const codecParam = params.get("codec");
if (codecParam && [...$("codec").options].some((o) => o.value === codecParam)) {
  $("codec").value = codecParam;
}
const nameParam = params.get("name");
if (nameParam) $("name").value = nameParam;
const roomParam = params.get("room");
if (roomParam) {
  $("room").value = roomParam;
  join(roomParam)
    .then(() => {
      if (params.get("autopublish") === "1") return publishCamera();
    })
    .catch((e) => fail("join", e));
}
