import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";
import { PublishTransport, preferCodec, simulcastEncodings } from "../src/index.js";
import { parseMediaSections } from "../src/sdp.js";
import { FakeMediaStream, FakePeerConnection, FakeTrack, FakeTransceiver, VIDEO_CODECS, delay, installFakeWebRTC } from "./fake-webrtc.js";

const asTrack = (t: FakeTrack) => t as unknown as MediaStreamTrack;
const ANSWER = { type: "answer" as const, sdp: "v=0\r\no=str0m 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" };

beforeEach(() => installFakeWebRTC());

test("publish returns the track id and an offer whose m-line carries it in a=msid", async () => {
  const transport = new PublishTransport({ iceServers: [] });
  const track = new FakeTrack("video");
  const publisher = await transport.publish(asTrack(track));
  assert.equal(publisher.id, track.id);
  assert.equal(publisher.offer.type, "offer");
  const [section] = parseMediaSections(publisher.offer.sdp!);
  assert.equal(section.msid?.trackId, track.id);
  assert.equal(section.direction, "sendonly");
  const pc = FakePeerConnection.last;
  assert.equal(pc.transceivers[0].direction, "sendonly");
  assert.equal(pc.transceivers[0].streams.length, 1, "a stream is given so msid names the track");
  assert.doesNotThrow(() => JSON.parse(JSON.stringify(publisher.offer)));
});

test("the publisher id is the msid track id even when the browser writes its own (Firefox-like)", async () => {
  installFakeWebRTC({ ownMsidTrackIds: true });
  const transport = new PublishTransport();
  const track = new FakeTrack("audio");
  const publisher = await transport.publish(asTrack(track));
  assert.notEqual(publisher.id, track.id);
  assert.equal(parseMediaSections(publisher.offer.sdp!)[0].msid?.trackId, publisher.id);
});

test("preferCodec moves every entry of the codec to the front and keeps the rest in order", () => {
  const ordered = preferCodec(VIDEO_CODECS, "video/h264")!;
  assert.deepEqual(
    ordered.map((c) => c.mimeType),
    ["video/H264", "video/H264", "video/VP8", "video/rtx", "video/VP9", "video/AV1", "video/red", "video/ulpfec"],
  );
  assert.equal(ordered[0].sdpFmtpLine, VIDEO_CODECS[2].sdpFmtpLine, "H264 profiles keep their order");
  assert.equal(preferCodec(VIDEO_CODECS, "video/H265"), null);
});

test("publish with a codec sets codec preferences so the offer lists it first", async () => {
  const transport = new PublishTransport();
  const publisher = await transport.publish(asTrack(new FakeTrack("video")), { codec: "VP9" });
  const transceiver = FakePeerConnection.last.transceivers[0];
  assert.equal(transceiver.codecPreferences?.[0].mimeType, "video/VP9");
  assert.equal(transceiver.codecPreferences?.length, VIDEO_CODECS.length, "no codec is dropped");
  const firstRtpmap = publisher.offer.sdp!.split("\r\n").find((l) => l.startsWith("a=rtpmap:"));
  assert.match(firstRtpmap!, /VP9\/90000/);
});

test("opus for audio; a codec of the wrong kind or an unknown codec is a clear error and adds nothing", async () => {
  const transport = new PublishTransport();
  await transport.publish(asTrack(new FakeTrack("audio")), { codec: "opus" });
  transport.setAnswer(ANSWER);
  const pc = FakePeerConnection.last;
  assert.equal(pc.transceivers[0].codecPreferences?.[0].mimeType, "audio/opus");
  await assert.rejects(transport.publish(asTrack(new FakeTrack("audio")), { codec: "VP8" }), {
    message: "publish: codec VP8 is for video but the track is audio",
  });
  await assert.rejects(transport.publish(asTrack(new FakeTrack("video")), { codec: "H265" as never }), /unknown codec "H265"/);
  assert.equal(pc.transceivers.length, 1);
});

test("encodings are passed as sendEncodings (options object or bare array)", async () => {
  const transport = new PublishTransport();
  let seen: unknown[] = [];
  const pc = FakePeerConnection.last;
  const original = pc.addTransceiver.bind(pc);
  pc.addTransceiver = (track, init) => {
    seen.push((init as { sendEncodings?: unknown }).sendEncodings);
    return original(track, init);
  };
  await transport.publish(asTrack(new FakeTrack("video")), { encodings: [{ rid: "h" }] });
  await transport.setAnswer(ANSWER);
  await transport.publish(asTrack(new FakeTrack("video")), [{ scalabilityMode: "L1T3" } as RTCRtpEncodingParameters]);
  assert.deepEqual(seen, [[{ rid: "h" }], [{ scalabilityMode: "L1T3" }]]);
});

test("simulcast: simulcastEncodings() reach addTransceiver and the offer keeps its a=rid / a=simulcast lines", async () => {
  const encodings = simulcastEncodings();
  assert.deepEqual(encodings.map((e) => e.rid), ["low", "mid", "high"], "lowest layer first");
  assert.deepEqual(encodings.map((e) => e.scaleResolutionDownBy), [4, 2, 1]);
  const bitrates = encodings.map((e) => e.maxBitrate!);
  assert.ok(bitrates[0] < bitrates[1] && bitrates[1] < bitrates[2], `bitrates grow with the layer: ${bitrates}`);
  assert.notEqual(simulcastEncodings(), encodings, "a fresh array each call (callers may edit it)");

  const transport = new PublishTransport();
  const pc = FakePeerConnection.last;
  const track = new FakeTrack("video");
  const publisher = await transport.publish(asTrack(track), { codec: "VP8", encodings });
  const transceiver = pc.transceivers[0];
  assert.deepEqual(transceiver.sendEncodings, encodings, "sendEncodings given to addTransceiver as is");
  assert.equal(transceiver.codecPreferences?.[0].mimeType, "video/VP8");
  // The offer handed back is the browser's own, unmodified: nothing strips the simulcast lines.
  assert.equal(publisher.offer.sdp, pc.localDescription?.sdp);
  const lines = publisher.offer.sdp!.split("\r\n");
  assert.deepEqual(lines.filter((l) => l.startsWith("a=rid:")), ["a=rid:low send", "a=rid:mid send", "a=rid:high send"]);
  assert.ok(lines.includes("a=simulcast:send low;mid;high"));
  assert.ok(lines.some((l) => l.endsWith(" urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id")));
  assert.equal(publisher.id, track.id);
  assert.equal(parseMediaSections(publisher.offer.sdp!)[0].msid?.trackId, track.id, "msid still found among the rid lines");
});

test("concurrent publishes are serialized: the second offer is made after the first answer", async () => {
  const transport = new PublishTransport();
  const pc = FakePeerConnection.last;
  const a = new FakeTrack("audio");
  const v = new FakeTrack("video");
  const first = transport.publish(asTrack(a));
  const second = transport.publish(asTrack(v));
  const p1 = await first;
  let secondDone = false;
  void second.then(() => (secondDone = true));
  await delay(20);
  assert.equal(secondDone, false, "second publish waits for the answer to the first offer");
  assert.equal(pc.transceivers.length, 1);
  await transport.setAnswer(ANSWER);
  const p2 = await second;
  assert.equal(p1.id, a.id);
  assert.equal(p2.id, v.id);
  const ids = parseMediaSections(p2.offer.sdp!).map((s) => s.msid?.trackId);
  assert.deepEqual(ids, [a.id, v.id], "the second offer carries both m-lines");
  assert.deepEqual(
    pc.log.filter((l) => !l.startsWith("addIce")),
    [
      `addTransceiver:${a.id}`, "createOffer", "setLocalDescription:offer",
      "setRemoteDescription:answer:start", "setRemoteDescription:answer:done",
      `addTransceiver:${v.id}`, "createOffer", "setLocalDescription:offer",
    ],
  );
});

test("setAnswer without an outstanding offer, or with a wrong type, is a clear error", async () => {
  const transport = new PublishTransport();
  await assert.rejects(transport.setAnswer(ANSWER), { message: "setAnswer: no offer is waiting for an answer" });
  await transport.publish(asTrack(new FakeTrack("video")));
  await assert.rejects(transport.setAnswer({ type: "offer", sdp: "v=0" }), /expected a description of type "answer"/);
});

test("remote candidates are queued until the answer is set, then applied in order", async () => {
  const transport = new PublishTransport();
  const pc = FakePeerConnection.last;
  await transport.addIceCandidate({ candidate: "candidate:a", sdpMid: "0", sdpMLineIndex: 0 });
  await transport.publish(asTrack(new FakeTrack("video")));
  await transport.addIceCandidate({ candidate: "candidate:b", sdpMid: "0", sdpMLineIndex: 0 });
  assert.equal(pc.candidates.length, 0);
  await transport.setAnswer(ANSWER);
  await transport.addIceCandidate({ candidate: "", sdpMid: "0", sdpMLineIndex: 0 });
  assert.deepEqual(pc.candidates.map((c) => c.candidate), ["candidate:a", "candidate:b", ""]);
  await assert.rejects(transport.addIceCandidate({ candidate: "bad", sdpMid: "0" }), /addIceCandidate failed: OperationError/);
});

test("local candidates are emitted as plain RTCIceCandidateInit, end-of-candidates is not", async () => {
  const transport = new PublishTransport();
  const seen: RTCIceCandidateInit[] = [];
  transport.on("icecandidate", (c) => seen.push(c));
  await transport.publish(asTrack(new FakeTrack("video")));
  await delay(10);
  assert.equal(seen.length, 1);
  assert.match(seen[0].candidate!, /^candidate:/);
  assert.equal(seen[0].sdpMid, "0");
});

test("unpublish stops the transceiver and returns a new offer; unknown ids are errors", async () => {
  const transport = new PublishTransport();
  const pc = FakePeerConnection.last;
  const first = await transport.publish(asTrack(new FakeTrack("audio")));
  await transport.setAnswer(ANSWER);
  const { id } = await transport.publish(asTrack(new FakeTrack("video")));
  await transport.setAnswer(ANSWER);
  const offer = await transport.unpublish(id);
  const transceiver = pc.transceivers[1] as FakeTransceiver;
  assert.equal(transceiver.stopped, true);
  const sections = parseMediaSections(offer.sdp!);
  assert.equal(sections[1].port, 0);
  await transport.setAnswer(ANSWER);
  await assert.rejects(transport.unpublish(id), { message: `unpublish: unknown publisher id: ${id}` });
  // The first m-line is the BUNDLE tag: it goes inactive (sender detached), never port 0.
  const again = await transport.unpublish(first.id);
  const tag = pc.transceivers[0] as FakeTransceiver;
  assert.equal(tag.stopped, false);
  assert.equal(tag.direction, "inactive");
  assert.equal(tag.sender.track, null);
  assert.notEqual(parseMediaSections(again.sdp!)[0].port, 0);
  await transport.setAnswer(ANSWER);
});

test("restartIce creates an offer with new ICE credentials", async () => {
  const transport = new PublishTransport();
  const { offer } = await transport.publish(asTrack(new FakeTrack("video")));
  await transport.setAnswer(ANSWER);
  const restarted = await transport.restartIce();
  const ufrag = (sdp: string) => /a=ice-ufrag:(\S+)/.exec(sdp)?.[1];
  assert.notEqual(ufrag(restarted.sdp!), ufrag(offer.sdp!));
});

test("connectionstatechange, connectionState, getStats, off and close", async () => {
  const transport = new PublishTransport();
  const pc = FakePeerConnection.last;
  const states: string[] = [];
  const listener = (s: RTCPeerConnectionState) => states.push(s);
  transport.on("connectionstatechange", listener);
  pc.setConnectionState("connecting");
  pc.setConnectionState("connected");
  transport.off("connectionstatechange", listener);
  pc.setConnectionState("disconnected");
  assert.deepEqual(states, ["connecting", "connected"]);
  assert.equal(transport.connectionState, "disconnected");
  assert.equal((await transport.getStats()).size, 1);

  const waiting = transport.publish(asTrack(new FakeTrack("video")));
  await waiting;
  const blocked = transport.publish(asTrack(new FakeTrack("video")));
  transport.close();
  await assert.rejects(blocked, { message: "publish: the transport is closed" });
  assert.equal(pc.closed, true);
  await assert.rejects(transport.publish(asTrack(new FakeTrack("video"))), /closed/);
});

test("tracks published with one stream share its msid stream id", async () => {
  const transport = new PublishTransport();
  const video = new FakeTrack("video");
  const audio = new FakeTrack("audio");
  const stream = new FakeMediaStream([video, audio]) as unknown as MediaStream;
  const v = await transport.publish(asTrack(video), { stream });
  await transport.setAnswer(ANSWER);
  const a = await transport.publish(asTrack(audio), { stream, codec: "opus" });
  const sections = parseMediaSections(a.offer.sdp!);
  assert.deepEqual(
    sections.map((s) => [s.msid?.streamId, s.msid?.trackId]),
    [
      [stream.id, v.id],
      [stream.id, a.id],
    ],
  );
});

test("replaceTrack swaps what a publisher sends, with no offer; unknown ids and other kinds are refused", async () => {
  const transport = new PublishTransport();
  const camera = new FakeTrack("video");
  const { id } = await transport.publish(asTrack(camera));
  await transport.setAnswer(ANSWER);
  const sender = FakePeerConnection.last.transceivers[0].sender;
  const other = new FakeTrack("video");
  await transport.replaceTrack(id, asTrack(other));
  assert.equal(sender.track, other);
  await transport.replaceTrack(id, null);
  assert.equal(sender.track, null);
  await transport.replaceTrack(id, asTrack(camera));
  await assert.rejects(transport.replaceTrack("nobody", asTrack(other)), { message: "replaceTrack: unknown publisher id: nobody" });
  await assert.rejects(transport.replaceTrack(id, asTrack(new FakeTrack("audio"))), /sends video, not audio/);
  assert.equal(sender.track, camera);
});
