import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";
import { SubscribeTransport } from "../src/index.js";
import { FakePeerConnection, FakeTrack, delay, installFakeWebRTC, serverOffer } from "./fake-webrtc.js";

beforeEach(() => installFakeWebRTC());

const trackOfMid = (pc: FakePeerConnection, mid: string) =>
  pc.transceivers.find((t) => t.mid === mid)!.receiver.track as unknown as MediaStreamTrack;

test("subscribe resolves when the track arrives after the call, mapped by msid, not track.id", async () => {
  const transport = new SubscribeTransport();
  const pc = FakePeerConnection.last;
  const pending = transport.subscribe("pub-video");
  const answer = await transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-audio", kind: "audio" }, { mid: "1", publisherId: "pub-video" }]));
  assert.equal(answer.type, "answer");
  const subscriber = await pending;
  assert.equal(subscriber.id, "pub-video");
  assert.equal(subscriber.track, trackOfMid(pc, "1"));
  assert.notEqual(subscriber.track.id, "pub-video", "the fake, like Chrome, randomizes received track ids");
});

test("subscribe resolves immediately when the track has already arrived", async () => {
  const transport = new SubscribeTransport();
  const pc = FakePeerConnection.last;
  await transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-a" }, { mid: "1", publisherId: "pub-b", kind: "audio" }]));
  const a = await transport.subscribe("pub-a");
  const b = await transport.subscribe("pub-b", { timeoutMs: 1 });
  assert.equal(a.track, trackOfMid(pc, "0"));
  assert.equal(b.track, trackOfMid(pc, "1"));
  assert.equal((b.track as unknown as FakeTrack).kind, "audio");
  assert.equal(transport.trackOf("pub-a"), a.track);
  assert.equal(transport.trackOf("nobody"), null);
});

test("subscribe resolves from ontrack, before setOffer has finished answering", async () => {
  const transport = new SubscribeTransport();
  const pc = FakePeerConnection.last;
  const order: string[] = [];
  const subscribed = transport.subscribe("pub-a").then(() => order.push("subscribed"));
  const answered = transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-a" }])).then(() => order.push("answered"));
  await Promise.all([subscribed, answered]);
  assert.deepEqual(order, ["subscribed", "answered"]);
  assert.ok(pc.log.indexOf("createAnswer") > pc.log.indexOf("setRemoteDescription:offer:done"));
});

test("subscribe rejects with a clear error after the timeout", async () => {
  const transport = new SubscribeTransport();
  await transport.setOffer(serverOffer([{ mid: "0", publisherId: "someone-else" }]));
  const started = Date.now();
  await assert.rejects(transport.subscribe("pub-missing", { timeoutMs: 30 }), { message: "subscribe timeout: pub-missing" });
  assert.ok(Date.now() - started >= 25);
});

test("an m-line the server renegotiated away (inactive or port 0) does not resolve", async () => {
  const transport = new SubscribeTransport();
  await transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-a" }, { mid: "1", publisherId: "pub-b" }]));
  assert.ok(transport.trackOf("pub-a"));
  await transport.setOffer(
    serverOffer([{ mid: "0", publisherId: "pub-a", direction: "inactive" }, { mid: "1", publisherId: "pub-b", port: 0 }]),
  );
  assert.equal(transport.trackOf("pub-a"), null);
  assert.equal(transport.trackOf("pub-b"), null);
  await assert.rejects(transport.subscribe("pub-a", { timeoutMs: 10 }), /subscribe timeout: pub-a/);
});

test("a renegotiation that adds a publisher resolves its pending subscribe", async () => {
  const transport = new SubscribeTransport();
  await transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-a" }]));
  const pending = transport.subscribe("pub-b");
  await transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-a" }, { mid: "1", publisherId: "pub-b" }]));
  assert.equal((await pending).track, trackOfMid(FakePeerConnection.last, "1"));
});

test("setOffer calls are serialized: a second offer waits until the first is answered", async () => {
  installFakeWebRTC({ remoteDelayMs: 15 });
  const transport = new SubscribeTransport();
  const pc = FakePeerConnection.last;
  const first = transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-a" }]));
  const second = transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-a" }, { mid: "1", publisherId: "pub-b" }]));
  const [a1, a2] = await Promise.all([first, second]);
  assert.equal(a1.type, "answer");
  assert.equal(a2.type, "answer");
  assert.deepEqual(pc.log, [
    "setRemoteDescription:offer:start", "setRemoteDescription:offer:done", "createAnswer", "setLocalDescription:answer",
    "setRemoteDescription:offer:start", "setRemoteDescription:offer:done", "createAnswer", "setLocalDescription:answer",
  ]);
  assert.ok(transport.trackOf("pub-b"));
});

test("a failed setOffer does not block the next one", async () => {
  const transport = new SubscribeTransport();
  const pc = FakePeerConnection.last;
  const original = pc.setRemoteDescription.bind(pc);
  let calls = 0;
  pc.setRemoteDescription = async (d) => {
    if (calls++ === 0) throw new Error("InvalidAccessError: boom");
    return original(d);
  };
  const failed = transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-a" }]));
  const next = transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-a" }]));
  await assert.rejects(failed, { message: "setOffer: the browser rejected the offer: InvalidAccessError: boom" });
  assert.equal((await next).type, "answer");
  await assert.rejects(transport.setOffer({ type: "answer", sdp: "v=0" }), /expected a description of type "offer"/);
  await assert.rejects(transport.setOffer(null as never), /expected a \{type, sdp\} object/);
});

test("candidates that arrive before the offer are queued, then applied in order after it", async () => {
  const transport = new SubscribeTransport();
  const pc = FakePeerConnection.last;
  await transport.addIceCandidate({ candidate: "candidate:1", sdpMid: "0", sdpMLineIndex: 0 });
  await transport.addIceCandidate({ candidate: "bad", sdpMid: "0", sdpMLineIndex: 0 });
  await transport.addIceCandidate({ candidate: "candidate:2", sdpMid: "0", sdpMLineIndex: 0 });
  assert.equal(pc.candidates.length, 0);
  const warn = console.warn;
  const warnings: unknown[] = [];
  console.warn = (...args: unknown[]) => warnings.push(args);
  try {
    await transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-a" }]));
  } finally {
    console.warn = warn;
  }
  assert.deepEqual(pc.candidates.map((c) => c.candidate), ["candidate:1", "candidate:2"]);
  assert.equal(warnings.length, 1, "the rejected queued candidate is reported, not fatal");
  const srd = pc.log.indexOf("setRemoteDescription:offer:done");
  assert.ok(pc.log.indexOf("addIceCandidate:candidate:1") > srd);
  await transport.addIceCandidate({ candidate: "candidate:3", sdpMid: "0", sdpMLineIndex: 0 });
  await transport.addIceCandidate({ candidate: "candidate:4", sdpMid: null, sdpMLineIndex: null });
  await transport.addIceCandidate({ candidate: "", sdpMid: null, sdpMLineIndex: null });
  assert.deepEqual(pc.candidates.map((c) => c.candidate), ["candidate:1", "candidate:2", "candidate:3", "candidate:4", ""]);
  assert.equal(pc.candidates[3].sdpMLineIndex, 0, "a candidate naming no m-line goes to the first (bundled) one");
  assert.equal(pc.candidates[4].sdpMLineIndex, null, "end-of-candidates is passed as is");
});

test("unsubscribe rejects pending subscribes; close rejects the rest and later calls", async () => {
  const transport = new SubscribeTransport();
  const a = transport.subscribe("pub-a");
  const b = transport.subscribe("pub-b");
  transport.unsubscribe("pub-a");
  await assert.rejects(a, { message: "unsubscribed: pub-a" });
  transport.close();
  await assert.rejects(b, /transport was closed: pub-b/);
  assert.equal(FakePeerConnection.last.closed, true);
  assert.throws(() => transport.subscribe("pub-c"), /subscribe: the transport is closed/);
  await assert.rejects(transport.setOffer(serverOffer([{ mid: "0", publisherId: "x" }])), /closed/);
  transport.close();
});

test("restartIce marks the connection; icecandidate and connectionstatechange are emitted", async () => {
  const transport = new SubscribeTransport();
  const pc = FakePeerConnection.last;
  const candidates: RTCIceCandidateInit[] = [];
  const states: string[] = [];
  transport.on("icecandidate", (c) => candidates.push(c)).on("connectionstatechange", (s) => states.push(s));
  await transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-a" }]));
  await delay(10);
  assert.equal(candidates.length, 1);
  pc.setConnectionState("connected");
  assert.deepEqual(states, ["connected"]);
  assert.equal(transport.connectionState, "connected");
  transport.restartIce();
  assert.ok(pc.log.includes("restartIce"));
});

test("subscribe reports the msid stream id, shared by tracks the publisher sent together", async () => {
  const transport = new SubscribeTransport();
  await transport.setOffer(
    serverOffer([
      { mid: "0", publisherId: "cam", stream: "alice" },
      { mid: "1", publisherId: "mic", kind: "audio", stream: "alice" },
      { mid: "2", publisherId: "other", stream: "-" },
    ]),
  );
  assert.equal((await transport.subscribe("cam")).streamId, "alice");
  assert.equal((await transport.subscribe("mic")).streamId, "alice");
  assert.equal((await transport.subscribe("other")).streamId, null, "'-' is no stream");
});
