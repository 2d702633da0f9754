// Rheomesh example page: joins a room over the example server's WebSocket protocol
// (PROTOCOL.md), publishes camera/microphone or screen, and shows every remote track.
// Plain ES module, no build step. State for tests: window.rheomeshApp.
import { PublishTransport, SubscribeTransport } from "/rheomesh.js";

const params = new URLSearchParams(location.search);
const rtcConfig = { iceServers: [] }; // the server announces its own reachable candidates
const $ = (id) => document.getElementById(id);

const state = {
  joined: false,
  room: null,
  published: [], // our publisher ids
  subscribed: [], // remote publisher ids whose track we receive
  subscriberIds: [], // server subscriber ids (Subscribed)
  tiles: 0, // remote tiles
  stats: {}, // publisherId -> { kind, codec, width, height, kbps, lossPct, framesDecoded, packetsReceived }
  publishState: "new",
  subscribeState: "new",
  lastError: null,
  errors: [],
};
window.rheomeshApp = state;

let ws = null;
let pub = null;
let sub = null;
let statsTimer = null;
const remote = new Map(); // publisherId -> { tile, track, stats: overlay element, prev }
const pending = new Set(); // publisher ids being subscribed
const local = new Map(); // publisherId -> { track, tile }

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
  $("publish").disabled = false;
}

// ---- joining and leaving ----

function join(room) {
  if (ws) return Promise.resolve();
  state.room = room;
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
      setStatus(`Joined room "${room}"`);
      const u = new URL(location.href);
      u.searchParams.set("room", room);
      history.replaceState(null, "", u);
      send({ action: "PublisherInit" });
      send({ action: "SubscriberInit" });
      statsTimer = setInterval(() => updateStats().catch((e) => console.warn("stats", e)), 1000);
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
  for (const id of [...remote.keys()]) removeRemote(id);
  pending.clear();
  Object.assign(state, {
    joined: false,
    published: [],
    subscribed: [],
    subscriberIds: [],
    tiles: 0,
    stats: {},
    publishState: "new",
    subscribeState: "new",
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
      for (const id of msg.publisherIds) subscribeTo(id);
      return;
    case "Unpublished":
      removeRemote(msg.publisherId);
      return;
    case "Subscribed":
      state.subscriberIds.push(msg.subscriberId);
      return;
    case "Error":
      return fail("server", msg.message);
    case "RecordingError":
      return fail("recording", msg.error);
    default:
      console.warn("unhandled server message", msg);
  }
}

// ---- subscribing ----

async function subscribeTo(id) {
  if (!sub || remote.has(id) || pending.has(id) || local.has(id)) return;
  pending.add(id);
  const transport = sub;
  send({ action: "Subscribe", publisherId: id });
  try {
    const { track } = await transport.subscribe(id, { timeoutMs: 15000 });
    if (!pending.has(id) || transport !== sub) return; // unpublished or left meanwhile
    addRemote(id, track);
  } catch (e) {
    if (pending.has(id) && transport === sub) fail(`subscribe ${id}`, e);
  } finally {
    pending.delete(id);
  }
}

function addRemote(id, track) {
  const tile = document.createElement("div");
  tile.className = `tile remote ${track.kind}`;
  tile.dataset.publisherId = id;
  const el = document.createElement(track.kind === "video" ? "video" : "audio");
  el.autoplay = true;
  el.playsInline = true;
  el.srcObject = new MediaStream([track]);
  tile.append(el, label(`${track.kind} ${id}`));
  const stats = document.createElement("div");
  stats.className = "stats";
  tile.append(stats);
  $("remote").append(tile);
  el.play?.().catch(() => setStatus("Click the page to start audio playback"));
  track.addEventListener("ended", () => removeRemote(id));
  remote.set(id, { tile, track, stats, prev: null });
  state.subscribed.push(id);
  state.tiles = remote.size;
}

function removeRemote(id) {
  pending.delete(id);
  try {
    sub?.unsubscribe(id);
  } catch {}
  const entry = remote.get(id);
  if (!entry) return;
  entry.tile.remove();
  remote.delete(id);
  state.subscribed = state.subscribed.filter((x) => x !== id);
  delete state.stats[id];
  state.tiles = remote.size;
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
  tile.className = `tile local ${video ? "video" : "audio"}`;
  if (video) {
    const el = document.createElement("video");
    el.autoplay = true;
    el.muted = true;
    el.playsInline = true;
    el.srcObject = new MediaStream([video]);
    tile.append(el);
  }
  tile.append(label(`you: ${what}`));
  $("local").append(tile);
  for (const track of stream.getTracks()) {
    const codec = track.kind === "video" ? $("codec").value : undefined;
    const { id, offer } = await transport.publish(track, codec ? { codec } : {});
    if (transport !== pub) return;
    send({ action: "Offer", sdp: offer });
    send({ action: "Publish", publisherId: id });
    local.set(id, { track, tile });
    state.published.push(id);
    track.addEventListener("ended", () => unpublish(id).catch((e) => fail("unpublish", e)));
  }
}

async function unpublish(id) {
  const entry = local.get(id);
  if (!entry || !pub) return;
  local.delete(id);
  state.published = state.published.filter((x) => x !== id);
  entry.track.stop();
  if (![...local.values()].some((e) => e.tile === entry.tile)) entry.tile.remove();
  send({ action: "StopPublish", publisherId: id });
  const offer = await pub.unpublish(id);
  send({ action: "Offer", sdp: offer });
}

async function publishCamera() {
  $("publish").disabled = true;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    await publishStream(stream, "camera + microphone");
  } catch (e) {
    $("publish").disabled = false;
    fail("publish camera", e);
  }
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

async function updateStats() {
  if (!sub || remote.size === 0) return;
  const report = await sub.getStats();
  const byTrack = new Map([...remote].map(([id, e]) => [e.track.id, id]));
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
    };
    state.stats[id] = s;
    const size = s.kind === "video" ? `${s.width}x${s.height} ${Math.round(s.fps)}fps` : "audio";
    entry.stats.textContent = `${codec} ${size}\n${kbps} kbit/s  loss ${lossPct.toFixed(1)}%`;
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
  transports: () => ({ publish: pub, subscribe: sub }),
};

const codecParam = params.get("codec");
if (codecParam && [...$("codec").options].some((o) => o.value === codecParam)) {
  $("codec").value = codecParam;
}
const roomParam = params.get("room");
if (roomParam) {
  $("room").value = roomParam;
  join(roomParam)
    .then(() => {
      if (params.get("autopublish") === "1") return publishCamera();
    })
    .catch((e) => fail("join", e));
}
