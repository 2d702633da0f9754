import assert from "node:assert/strict";
import { test } from "node:test";
import { isSending, midForTrackId, parseMediaSections, parseMsid, trackIdForMid } from "../src/sdp.js";

// A send-only offer as Chrome writes it for addTransceiver(track, {direction: "sendonly", streams: [stream]}):
// audio, video (with RTX), and a third m-line stopped by transceiver.stop().
const CHROME_OFFER = [
  "v=0",
  "o=- 7595419396466493431 3 IN IP4 127.0.0.1",
  "s=-",
  "t=0 0",
  "a=group:BUNDLE 0 1",
  "a=extmap-allow-mixed",
  "a=msid-semantic: WMS 5c1f8d8a-8f0e-4a3b-9d55-0d6b4cde0f11",
  "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
  "c=IN IP4 0.0.0.0",
  "a=rtcp:9 IN IP4 0.0.0.0",
  "a=ice-ufrag:Zs4U",
  "a=ice-pwd:7f2k0v4wqx0mZy8yT6bq3Kp1",
  "a=ice-options:trickle",
  "a=fingerprint:sha-256 3C:4A:AA:F0:7E:12:0F:6E:1B:93:A9:D8:2B:4C:6A:51:39:0E:55:02:66:74:AC:BD:2F:88:5E:E1:4C:01:7B:2A",
  "a=setup:actpass",
  "a=mid:0",
  "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
  "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
  "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
  "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
  "a=sendonly",
  "a=msid:5c1f8d8a-8f0e-4a3b-9d55-0d6b4cde0f11 0b3e5e2c-7a41-4bfa-8d1e-3f1c2a9e6d70",
  "a=rtcp-mux",
  "a=rtcp-rsize",
  "a=rtpmap:111 opus/48000/2",
  "a=rtcp-fb:111 transport-cc",
  "a=fmtp:111 minptime=10;useinbandfec=1",
  "a=rtpmap:63 red/48000/2",
  "a=fmtp:63 111/111",
  "a=ssrc:2771328155 cname:k3W9m5hQv1yYQ0qS",
  "a=ssrc:2771328155 msid:5c1f8d8a-8f0e-4a3b-9d55-0d6b4cde0f11 0b3e5e2c-7a41-4bfa-8d1e-3f1c2a9e6d70",
  "m=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97",
  "c=IN IP4 0.0.0.0",
  "a=rtcp:9 IN IP4 0.0.0.0",
  "a=ice-ufrag:Zs4U",
  "a=ice-pwd:7f2k0v4wqx0mZy8yT6bq3Kp1",
  "a=ice-options:trickle",
  "a=setup:actpass",
  "a=mid:1",
  "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset",
  "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
  "a=extmap:13 urn:3gpp:video-orientation",
  "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
  "a=sendonly",
  "a=msid:5c1f8d8a-8f0e-4a3b-9d55-0d6b4cde0f11 9d7a4c1e-55b2-4c8e-a0f3-6e2b1d4c8a99",
  "a=rtcp-mux",
  "a=rtcp-rsize",
  "a=rtpmap:98 VP9/90000",
  "a=rtcp-fb:98 goog-remb",
  "a=rtcp-fb:98 nack",
  "a=rtcp-fb:98 nack pli",
  "a=fmtp:98 profile-id=0",
  "a=rtpmap:99 rtx/90000",
  "a=fmtp:99 apt=98",
  "a=rtpmap:96 VP8/90000",
  "a=rtpmap:97 rtx/90000",
  "a=fmtp:97 apt=96",
  "a=ssrc-group:FID 1822744434 3105629877",
  "a=ssrc:1822744434 cname:k3W9m5hQv1yYQ0qS",
  "a=ssrc:1822744434 msid:5c1f8d8a-8f0e-4a3b-9d55-0d6b4cde0f11 9d7a4c1e-55b2-4c8e-a0f3-6e2b1d4c8a99",
  "a=ssrc:3105629877 cname:k3W9m5hQv1yYQ0qS",
  "m=video 0 UDP/TLS/RTP/SAVPF 96",
  "c=IN IP4 0.0.0.0",
  "a=mid:2",
  "a=inactive",
  "a=rtpmap:96 VP8/90000",
  "",
].join("\r\n");

test("parseMediaSections reads kind, port, mid, direction and msid of Chrome's offer", () => {
  const sections = parseMediaSections(CHROME_OFFER);
  assert.equal(sections.length, 3);
  assert.deepEqual(sections[0], {
    index: 0,
    kind: "audio",
    port: 9,
    mid: "0",
    direction: "sendonly",
    msid: { streamId: "5c1f8d8a-8f0e-4a3b-9d55-0d6b4cde0f11", trackId: "0b3e5e2c-7a41-4bfa-8d1e-3f1c2a9e6d70" },
  });
  assert.equal(sections[1].kind, "video");
  assert.equal(sections[1].mid, "1");
  assert.equal(sections[1].msid?.trackId, "9d7a4c1e-55b2-4c8e-a0f3-6e2b1d4c8a99");
  assert.deepEqual(
    { port: sections[2].port, mid: sections[2].mid, direction: sections[2].direction, msid: sections[2].msid },
    { port: 0, mid: "2", direction: "inactive", msid: null },
  );
  assert.equal(isSending(sections[0]), true);
  assert.equal(isSending(sections[2]), false);
});

test("the same SDP with bare LF line endings parses identically", () => {
  assert.deepEqual(parseMediaSections(CHROME_OFFER.replace(/\r\n/g, "\n")), parseMediaSections(CHROME_OFFER));
});

test("trackIdForMid and midForTrackId map m-lines to msid track ids both ways", () => {
  assert.equal(trackIdForMid(CHROME_OFFER, "0"), "0b3e5e2c-7a41-4bfa-8d1e-3f1c2a9e6d70");
  assert.equal(trackIdForMid(CHROME_OFFER, "1"), "9d7a4c1e-55b2-4c8e-a0f3-6e2b1d4c8a99");
  assert.equal(trackIdForMid(CHROME_OFFER, "2"), null);
  assert.equal(trackIdForMid(CHROME_OFFER, "7"), null);
  assert.equal(midForTrackId(CHROME_OFFER, "9d7a4c1e-55b2-4c8e-a0f3-6e2b1d4c8a99"), "1");
  assert.equal(midForTrackId(CHROME_OFFER, "5c1f8d8a-8f0e-4a3b-9d55-0d6b4cde0f11"), null, "a stream id is not a track id");
});

test("midForTrackId skips an m-line that no longer sends (renegotiated away)", () => {
  const sdp = [
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0",
    "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:0", "a=inactive", "a=msid:s pubA", "a=rtpmap:96 VP8/90000",
    "m=video 0 UDP/TLS/RTP/SAVPF 96", "a=mid:1", "a=sendonly", "a=msid:s pubB", "a=rtpmap:96 VP8/90000",
    "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:2", "a=sendonly", "a=msid:s pubC", "a=rtpmap:96 VP8/90000",
  ].join("\r\n");
  assert.equal(midForTrackId(sdp, "pubA"), null);
  assert.equal(midForTrackId(sdp, "pubB"), null);
  assert.equal(midForTrackId(sdp, "pubC"), "2");
});

test("msid falls back to the legacy a=ssrc msid form; a session-level direction is inherited", () => {
  const sdp = [
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=sendonly",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:a0", "a=rtpmap:111 opus/48000/2",
    "a=ssrc:12345 cname:x", "a=ssrc:12345 msid:stream-1 track-1",
    "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:v1", "a=recvonly",
  ].join("\r\n");
  const [audio, video] = parseMediaSections(sdp);
  assert.deepEqual(audio.msid, { streamId: "stream-1", trackId: "track-1" });
  assert.equal(audio.direction, "sendonly");
  assert.equal(video.direction, "recvonly");
  assert.equal(video.msid, null);
});

test("parseMsid handles '-' streams, a missing track id and junk", () => {
  assert.deepEqual(parseMsid("- 3f0a"), { streamId: "-", trackId: "3f0a" });
  assert.deepEqual(parseMsid("onlystream"), { streamId: "onlystream", trackId: null });
  assert.equal(parseMsid("   "), null);
});

test("garbage and empty input give no sections, never a throw", () => {
  assert.deepEqual(parseMediaSections(""), []);
  assert.deepEqual(parseMediaSections("hello\nworld"), []);
  const [section] = parseMediaSections("m=video notaport\na=mid:\na=msid:");
  assert.equal(section.port, 0);
  assert.equal(section.mid, "");
  assert.equal(section.msid, null);
});
