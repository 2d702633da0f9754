// Protocol smoke test for the example server: errors keep the socket open, Ping/Pong,
// PublisherInit, SubscriberInit -> Published, unsupported actions, room isolation.
//   cargo run --example media_server -- --port 3077 &
//   node --experimental-websocket examples/media_server/smoke/protocol.mjs ws://127.0.0.1:3077
// (Node >= 22 needs no flag.) Exit code 1 if a check fails.
const base = process.argv[2] ?? "ws://127.0.0.1:3077";
function open(room) {
  const ws = new WebSocket(`${base}/socket?room=${room}`);
  const queue = [], waiters = [];
  ws.onmessage = (e) => { const m = JSON.parse(e.data); const w = waiters.shift(); w ? w(m) : queue.push(m); };
  const next = (ms = 3000) => queue.length ? Promise.resolve(queue.shift()) :
    new Promise((res, rej) => { const w = (m) => { clearTimeout(t); res(m); }; const t = setTimeout(() => { waiters.splice(waiters.indexOf(w), 1); rej(new Error("timeout")); }, ms); waiters.push(w); });
  return new Promise((res) => (ws.onopen = () => res({ ws, next, send: (o) => ws.send(typeof o === "string" ? o : JSON.stringify(o)) })));
}
const check = (cond, what) => { console.log(`${cond ? "ok  " : "FAIL"} ${what}`); if (!cond) process.exitCode = 1; };
const a = await open("t1");
a.send({ action: "Ping" }); let m = await a.next(); check(m.action === "Pong", `Ping -> ${JSON.stringify(m)}`);
a.send("{not json"); m = await a.next(); check(m.action === "Error", `malformed -> ${JSON.stringify(m)}`);
a.send({ action: "Dance" }); m = await a.next(); check(m.action === "Error", `unknown -> ${JSON.stringify(m)}`);
a.send({ action: "Publish" }); m = await a.next(); check(m.action === "Error", `missing field -> ${JSON.stringify(m)}`);
a.send({ action: "Subscribe", publisherId: "x" }); m = await a.next(); check(m.action === "Error", `Subscribe before init -> ${JSON.stringify(m)}`);
a.send({ action: "PublisherInit" }); a.send({ action: "PublisherInit" }); m = await a.next(); check(m.action === "Error", `PublisherInit twice -> ${JSON.stringify(m)}`);
a.send({ action: "SubscriberInit" }); m = await a.next(); check(m.action === "Published" && Array.isArray(m.publisherIds) && m.publisherIds.length === 0, `SubscriberInit -> ${JSON.stringify(m)}`);
a.send({ action: "Subscribe", publisherId: "nope" }); m = await a.next(); check(m.action === "Error", `Subscribe unknown -> ${JSON.stringify(m)}`);
a.send({ action: "StopSubscribe", subscriberId: "42" }); m = await a.next(); check(m.action === "Error", `StopSubscribe unknown -> ${JSON.stringify(m)}`);
a.send({ action: "StopPublish", publisherId: "nope" }); m = await a.next(); check(m.action === "Error", `StopPublish unknown -> ${JSON.stringify(m)}`);
a.send({ action: "Answer", sdp: { type: "answer", sdp: "v=0\r\n" } }); m = await a.next(); check(m.action === "Error", `Answer w/o offer -> ${JSON.stringify(m)}`);
a.send({ action: "Offer", sdp: { type: "offer", sdp: "garbage" } }); m = await a.next(); check(m.action === "Error", `bad Offer -> ${JSON.stringify(m)}`);
a.send({ action: "Publish", publisherId: "ghost" }); m = await a.next(15000); check(m.action === "Error", `Publish unknown track -> ${JSON.stringify(m)}`);
a.send({ action: "SetPreferredLayer", subscriberId: "1", sid: 1, tid: null }); m = await a.next(); check(m.action === "Error", `SetPreferredLayer -> ${JSON.stringify(m)}`);
for (const action of ["Record", "StartRecording", "StopRecording"]) {
  a.send({ action, publisherId: "x" }); m = await a.next(); check(m.action === "RecordingError", `${action} -> ${JSON.stringify(m)}`);
}
a.send({ action: "RestartICE" }); m = await a.next(); check(m.action === "Offer" && m.sdp.type === "offer", `RestartICE -> Offer ${m.action}`);
m = await a.next().catch(() => null); check(m === null || m.action === "SubscriberIce", `after RestartICE: ${JSON.stringify(m)?.slice(0, 120)}`);
a.send({ action: "Ping" }); while ((m = await a.next()).action === "SubscriberIce"); check(m.action === "Pong", "still alive after errors");
// Two participants: a subscribe -> Offer, answer garbage, room isolation.
const b = await open("t1");
b.send({ action: "SubscriberInit" }); m = await b.next(); check(m.action === "Published" && m.publisherIds.length === 0, `B SubscriberInit -> ${JSON.stringify(m)}`);
const c = await open("other");
c.send({ action: "Ping" }); m = await c.next(); check(m.action === "Pong", "other room alive");
a.ws.close(); b.ws.close(); c.ws.close();
await new Promise((r) => setTimeout(r, 300));
process.exit();
