// 1. One publisher (fake camera + microphone), one viewer: the viewer decodes video and
//    receives audio, and both keep growing. Also writes docs/screenshot.png of the viewer.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { test } from "node:test";
import {
  ROOT, appState, expectGrowth, expectNoAppError, inboundStats, openPage, useSuite, uniqueRoom, waitFor, waitPublished,
} from "./helpers.mjs";

const suite = useSuite();

test("viewer decodes the publisher's video and receives its audio", { timeout: 90000 }, async () => {
  const room = uniqueRoom("pubsub");
  const a = await openPage(suite.browser, suite.base, `/?room=${room}&autopublish=1`, "A");
  const ids = await waitPublished(a);
  assert.ok(ids.audio && ids.video, `A published audio + video: ${JSON.stringify(ids)}`);

  const b = await openPage(suite.browser, suite.base, `/?room=${room}`, "B");
  const t0 = Date.now();
  // Within 15 s of B opening: a tile per track and both counters growing between two samples.
  await waitFor(b, () => window.rheomeshApp.tracks === 2, 15000, "B has A's 2 tracks");
  const remaining = () => Math.max(1000, 15000 - (Date.now() - t0));
  const [v0, v1] = await expectGrowth(b, ids.video, "framesDecoded", { minDelta: 10, timeoutMs: remaining() });
  const [a0, a1] = await expectGrowth(b, ids.audio, "packetsReceived", { minDelta: 20, timeoutMs: remaining() });
  console.log(`B after ${Date.now() - t0} ms: framesDecoded ${v0} -> ${v1}, audio packetsReceived ${a0} -> ${a1}`);

  // The same from RTCPeerConnection.getStats() directly, sampled twice.
  const s1 = await inboundStats(b);
  await waitFor(
    b,
    async (prev) => {
      const sub = window.rheomeshControls.transports().subscribe;
      const report = await sub.getStats();
      let video = false, audio = false;
      for (const r of report.values()) {
        if (r.type !== "inbound-rtp") continue;
        const p = prev.find((x) => x.trackIdentifier === r.trackIdentifier);
        if (!p) continue;
        if (r.kind === "video" && r.framesDecoded > p.framesDecoded) video = true;
        if (r.kind === "audio" && r.packetsReceived > p.packetsReceived) audio = true;
      }
      return video && audio;
    },
    5000,
    "getStats() video framesDecoded and audio packetsReceived grow",
    s1.filter((x) => x.packetsReceived > 0),
  );

  const state = await appState(b);
  assert.deepEqual([...state.subscribed].sort(), [ids.audio, ids.video].sort(), "B subscribed to exactly A's tracks");
  assert.equal(state.subscriberIds.length, 2, "B got a Subscribed per track");
  await expectNoAppError(a);
  await expectNoAppError(b);

  // Screenshot for the docs: B publishes too, so its page shows its own camera and A's tracks,
  // with A's remote video actually rendering.
  await b.evaluate(() => window.rheomeshControls.publishCamera());
  await waitPublished(b);
  await waitFor(a, () => window.rheomeshApp.tracks === 2, 15000, "A has B's 2 tracks");
  await waitFor(
    b,
    () => {
      const v = document.querySelector("#local video");
      return v && v.videoWidth > 0 && v.currentTime > 0.2;
    },
    10000,
    "B's local preview renders",
  );
  await waitFor(
    b,
    () => {
      const v = document.querySelector("#remote .tile.video video");
      return v && v.videoWidth > 0 && v.readyState >= 2 && v.currentTime > 0.5;
    },
    10000,
    "B's remote <video> renders",
  );
  await waitFor(b, () => /kbit\/s/.test(document.querySelector("#remote .tile.video .stats")?.textContent ?? ""), 5000, "stats overlay");
  mkdirSync(`${ROOT}docs`, { recursive: true });
  await b.screenshot({ path: `${ROOT}docs/screenshot.png` });
  await expectNoAppError(a);
  await expectNoAppError(b);
});
