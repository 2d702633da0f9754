import assert from "node:assert/strict";
import { beforeEach, mock, test } from "node:test";
import { DEFAULT_SUBSCRIBE_TIMEOUT_MS, PublishTransport, SubscribeTransport } from "../src/index.js";
import { parseMediaSections } from "../src/sdp.js";
import { FakeDataChannel, FakeDataChannelEvent, FakePeerConnection, FakeTrack, delay, installFakeWebRTC, serverOffer } from "./fake-webrtc.js";

const asTrack = (t: FakeTrack) => t as unknown as MediaStreamTrack;
const asChannel = (c: FakeDataChannel) => c as unknown as RTCDataChannel;
const ANSWER = { type: "answer" as const, sdp: "v=0\r\no=str0m 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" };
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

beforeEach(() => installFakeWebRTC());

// --- PublishTransport.publishData ---

test("publishData returns a channel labelled with a fresh UUID equal to its id, ordered, and the offer that is the local description", async () => {
  const transport = new PublishTransport();
  const pc = FakePeerConnection.last;
  const data = await transport.publishData();
  assert.match(data.id, UUID_V4);
  assert.equal(data.channel.label, data.id);
  assert.equal(data.channel, asChannel(pc.dataChannels[0]), "the channel comes from createDataChannel");
  assert.equal(data.channel.ordered, true, "ordered by default");
  assert.equal(data.offer.type, "offer");
  assert.equal(data.offer.sdp, pc.localDescription?.sdp, "the offer is the local description");
  assert.equal(pc.signalingState, "have-local-offer");
  const sections = parseMediaSections(data.offer.sdp!);
  assert.deepEqual(sections.map((s) => s.kind), ["application"], "the offer carries the SCTP m-line");
  assert.doesNotThrow(() => JSON.parse(JSON.stringify(data.offer)));

  await transport.setAnswer(ANSWER);
  const second = await transport.publishData();
  assert.notEqual(second.id, data.id, "every channel gets its own id");
  assert.equal(second.channel.label, second.id);
  assert.equal(parseMediaSections(second.offer.sdp!).length, 1, "still one SCTP m-line for both channels");
});

test("publishData applies RTCDataChannelInit overrides; ordered stays the default; bad inits fail cleanly", async () => {
  const transport = new PublishTransport();
  const pc = FakePeerConnection.last;
  const unordered = await transport.publishData({ ordered: false, maxRetransmits: 0, protocol: "chat" });
  assert.equal(unordered.channel.ordered, false);
  assert.equal(unordered.channel.maxRetransmits, 0);
  assert.equal(unordered.channel.protocol, "chat");
  await transport.setAnswer(ANSWER);

  const lifetime = await transport.publishData({ maxPacketLifeTime: 500 });
  assert.equal(lifetime.channel.ordered, true, "fields not given keep ordered: true");
  assert.equal(lifetime.channel.maxPacketLifeTime, 500);
  await transport.setAnswer(ANSWER);

  await assert.rejects(transport.publishData({ negotiated: true, id: 3 }), /publishData: negotiated channels are not supported/);
  await assert.rejects(
    transport.publishData({ maxRetransmits: 1, maxPacketLifeTime: 1 }),
    { message: "publishData: maxRetransmits and maxPacketLifeTime are exclusive" },
  );
  assert.equal(pc.dataChannels.length, 2, "the refused inits created no channel");
  // A failed publishData released the negotiation: the next offer is made at once.
  const next = await transport.publishData();
  assert.equal(next.channel.label, next.id);
});

test("publishData waits for the answer to a publish in progress, and publish waits for publishData's", async () => {
  const transport = new PublishTransport();
  const pc = FakePeerConnection.last;
  const video = new FakeTrack("video");
  const audio = new FakeTrack("audio");
  await transport.publish(asTrack(video));

  let dataDone = false;
  const pendingData = transport.publishData().then((d) => ((dataDone = true), d));
  await delay(20);
  assert.equal(dataDone, false, "publishData waits for the answer to the publish offer");
  assert.equal(pc.dataChannels.length, 0, "no channel is created before the lock is held");

  await transport.setAnswer(ANSWER);
  const data = await pendingData;

  let publishDone = false;
  const pendingPublish = transport.publish(asTrack(audio)).then((p) => ((publishDone = true), p));
  await delay(20);
  assert.equal(publishDone, false, "publish waits for the answer to the publishData offer");
  await transport.setAnswer(ANSWER);
  const published = await pendingPublish;
  assert.equal(published.id, audio.id);
  const kinds = parseMediaSections(published.offer.sdp!).map((s) => s.kind).sort();
  assert.deepEqual(kinds, ["application", "audio", "video"], "the later offer keeps the SCTP m-line");

  assert.deepEqual(
    pc.log.filter((l) => !l.startsWith("addIce")),
    [
      `addTransceiver:${video.id}`, "createOffer", "setLocalDescription:offer",
      "setRemoteDescription:answer:start", "setRemoteDescription:answer:done",
      `createDataChannel:${data.id}`, "createOffer", "setLocalDescription:offer",
      "setRemoteDescription:answer:start", "setRemoteDescription:answer:done",
      `addTransceiver:${audio.id}`, "createOffer", "setLocalDescription:offer",
    ],
  );
});

test("publishData makes a v4 UUID without crypto.randomUUID (insecure context); close fails a waiting publishData", async () => {
  const descriptor = Object.getOwnPropertyDescriptor(globalThis, "crypto")!;
  const real = globalThis.crypto;
  Object.defineProperty(globalThis, "crypto", {
    value: { getRandomValues: <T extends ArrayBufferView>(array: T) => real.getRandomValues(array) },
    configurable: true,
    writable: true,
  });
  const transport = new PublishTransport();
  try {
    const data = await transport.publishData();
    assert.match(data.id, UUID_V4);
    assert.equal(data.channel.label, data.id);
  } finally {
    Object.defineProperty(globalThis, "crypto", descriptor);
  }
  const blocked = transport.publishData();
  transport.close();
  await assert.rejects(blocked, { message: "publishData: the transport is closed" });
  await assert.rejects(transport.publishData(), /publishData: the transport is closed/);
});

// --- SubscribeTransport.subscribeData ---

test("subscribeData resolves at once for a channel that arrived before the call", async () => {
  const transport = new SubscribeTransport();
  const pc = FakePeerConnection.last;
  await transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-a" }]));
  const channel = pc.receiveDataChannel("data-1");
  const subscriber = await transport.subscribeData("data-1", { timeoutMs: 1 });
  assert.equal(subscriber.publisherId, "data-1");
  assert.equal(subscriber.channel, asChannel(channel));
});

test("subscribeData resolves when the channel arrives after the call; the application's ondatachannel still fires", async () => {
  const transport = new SubscribeTransport();
  const pc = FakePeerConnection.last;
  const seenByApp: string[] = [];
  transport.peerConnection.ondatachannel = (event) => seenByApp.push(event.channel.label);
  const first = transport.subscribeData("data-2");
  const second = transport.subscribeData("data-2");
  await transport.setOffer(serverOffer([{ mid: "0", publisherId: "pub-a" }]));
  await delay(5);
  pc.receiveDataChannel("other");
  const channel = pc.receiveDataChannel("data-2");
  const [a, b] = await Promise.all([first, second]);
  assert.equal(a.channel, asChannel(channel));
  assert.equal(b.channel, asChannel(channel));
  assert.equal(a.publisherId, "data-2");
  assert.deepEqual(seenByApp, ["other", "data-2"], "the transport's listener does not replace ondatachannel");
});

test("subscribeData rejects after the timeout with a message naming the publisher id; default is 10 s", async () => {
  const transport = new SubscribeTransport();
  const pc = FakePeerConnection.last;
  pc.receiveDataChannel("someone-else");
  const started = Date.now();
  await assert.rejects(transport.subscribeData("data-missing", { timeoutMs: 30 }), (error: Error) => {
    assert.match(error.message, /^subscribeData timeout: data-missing /);
    assert.match(error.message, /within 30 ms/);
    return true;
  });
  assert.ok(Date.now() - started >= 25);
  // A late channel after the timeout is still recorded for the next call.
  const late = pc.receiveDataChannel("data-missing");
  assert.equal((await transport.subscribeData("data-missing", { timeoutMs: 1 })).channel, asChannel(late));

  const timers = mock.method(globalThis, "setTimeout");
  let pending: Promise<unknown>;
  try {
    pending = transport.subscribeData("data-default");
  } finally {
    timers.mock.restore();
  }
  assert.equal(DEFAULT_SUBSCRIBE_TIMEOUT_MS, 10_000);
  assert.deepEqual(timers.mock.calls.map((c) => c.arguments[1]), [DEFAULT_SUBSCRIBE_TIMEOUT_MS]);
  transport.close();
  await assert.rejects(pending, { message: "subscribeData: the transport was closed: data-default" });
});

test("a closed channel is forgotten; a replaced channel's close does not drop the new one", async () => {
  const transport = new SubscribeTransport();
  const pc = FakePeerConnection.last;
  const first = pc.receiveDataChannel("data-3");
  assert.equal((await transport.subscribeData("data-3")).channel, asChannel(first));
  first.close();
  await assert.rejects(transport.subscribeData("data-3", { timeoutMs: 10 }), /subscribeData timeout: data-3/);

  const pending = transport.subscribeData("data-3");
  const second = pc.receiveDataChannel("data-3");
  assert.equal((await pending).channel, asChannel(second), "a re-opened channel resolves a new call");
  const third = pc.receiveDataChannel("data-3");
  second.close();
  assert.equal((await transport.subscribeData("data-3", { timeoutMs: 1 })).channel, asChannel(third));

  // A channel that arrives already closed is not recorded.
  const dead = new FakeDataChannel("data-4");
  dead.close();
  pc.dispatchEvent(new FakeDataChannelEvent(dead));
  await assert.rejects(transport.subscribeData("data-4", { timeoutMs: 5 }), /subscribeData timeout: data-4/);
});

test("subscribeData: an empty id is an error; close rejects pending calls and later calls throw", async () => {
  const transport = new SubscribeTransport();
  await assert.rejects(transport.subscribeData(""), { message: "subscribeData: publisherId must be a non-empty string" });
  const pending = transport.subscribeData("data-5");
  transport.close();
  await assert.rejects(pending, { message: "subscribeData: the transport was closed: data-5" });
  assert.throws(() => transport.subscribeData("data-5"), /subscribeData: the transport is closed/);
  FakePeerConnection.last.receiveDataChannel("data-5");
  assert.throws(() => transport.subscribeData("data-5"), /closed/);
});
