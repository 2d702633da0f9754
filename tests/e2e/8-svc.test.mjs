// 8. VP9 and AV1 SVC layer selection. A publishes its fake camera at 1280x720 as one VP9 (or AV1) encoding with
//    scalability mode L3T3_KEY (three spatial, three temporal layers in one RTP stream); B
//    subscribes and first decodes the top layers (full size, full frame rate). B then asks for
//    spatial 1, temporal 1 (SetPreferredLayer): within 3 s B decodes the middle resolution (half
//    the top width) at about half the frame rate, the server reports the layer (LayerChanged),
//    and B keeps decoding without a 500 ms stall and without a NACK (the server drops the upper
//    layers' packets on purpose and closes up the sequence numbers over them).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  closePage, expectNoAppError, inboundSamples, longestDecodeStall, openPage, outboundVideoStats, startInboundSampler,
  stopInboundSampler,
  until, useSuite, uniqueRoom, waitFor, waitPublished,
} from "./helpers.mjs";

const suite = useSuite();

const SWITCH_WITHIN_MS = 3000;
const MAX_STALL_MS = 500;

/** Frames decoded per second over the samples of the last `ms`, and the last sample. */
async function rate(page, id, ms) {
  const samples = await inboundSamples(page, id, Date.now() - ms);
  if (samples.length < 2) return null;
  const [first, last] = [samples[0], samples.at(-1)];
  const secs = (last.at - first.at) / 1000;
  if (secs < ms / 2000) return null;
  return { fps: (last.framesDecoded - first.framesDecoded) / secs, last };
}

/**
 * A publishes its camera with the URL parameters `query` in a fresh room; B joins, subscribes
 * and samples its inbound video; then `body({ a, b, ids })` runs, and both pages close.
 */
async function publishAndView(prefix, query, body) {
  const room = uniqueRoom(prefix);
  const a = await openPage(suite.browser, suite.base, `/?room=${room}&autopublish=1&${query}`, "A");
  let b = null;
  try {
    const ids = await waitPublished(a);
    b = await openPage(suite.browser, suite.base, `/?room=${room}`, "B");
    await waitFor(b, () => window.rheomeshApp.tracks === 2, 15000, "B has A's 2 tracks");
    await waitFor(b, (id) => window.rheomeshApp.subscriberIdOf[id] ?? null, 10000, "B knows its subscriberId", ids.video);
    await startInboundSampler(b, ids.video);
    await body({ a, b, ids });
    await stopInboundSampler(b, ids.video);
    await expectNoAppError(b);
  } finally {
    if (b) await closePage(b);
    await closePage(a);
  }
}

// VP9 (layers from its payload descriptor) and AV1 (from the dependency descriptor header
// extension, which Chromium sends with AV1 SVC).
for (const codec of ["VP9", "AV1"]) {
test(`${codec} SVC: spatial 1 / temporal 1 decodes at the middle size and about half the frame rate`, { timeout: 180000 }, async (t) => {
  await publishAndView(`svc-${codec.toLowerCase()}`, `svc=L3T3_KEY&codec=${codec}&video=1280x720`, async ({ a, b, ids }) => {
    // The top layers first: Chromium's estimate must grow before A sends all three spatial layers.
    const top = await until(
      async () => {
        // A's encoder may scale the whole picture down under CPU load: its top layer's width.
        const sent = (await outboundVideoStats(a)).find((x) => x.framesSent > 0)?.frameWidth ?? 0;
        const r = await rate(b, ids.video, 2000);
        return r && sent >= 640 && r.last.frameWidth === sent && r.fps >= 8 ? r : null;
      },
      60000,
      "B decodes A's top spatial layer (A's full width) at full frame rate",
    );
    t.diagnostic(`top: ${top.last.frameWidth}x${top.last.frameHeight} at ${top.fps.toFixed(1)} fps`);

    const asked = Date.now();
    await b.evaluate((id) => window.rheomeshControls.setPreferredLayer(id, 1, 1), ids.video);
    // Half of A's top width, as A sends it meanwhile: under CPU load Chromium scales the
    // whole picture (one CI run's A went from 640 back up to 1280 wide here).
    const midWidths = new Set([top.last.frameWidth / 2]);
    const switched = await until(
      async () => {
        const sent = (await outboundVideoStats(a)).find((x) => x.framesSent > 0)?.frameWidth ?? 0;
        if (sent) midWidths.add(sent / 2);
        const s = (await inboundSamples(b, ids.video, Date.now() - 300)).at(-1);
        return s && midWidths.has(s.frameWidth) ? s : null;
      },
      SWITCH_WITHIN_MS,
      `B decodes the middle layer (half of A's top width) within ${SWITCH_WITHIN_MS} ms`,
    );
    const tookMs = switched.at - asked;
    const layer = await waitFor(b, (id) => window.rheomeshApp.layers[id] ?? null, 3000, "LayerChanged arrived", ids.video);
    assert.equal(layer.sid, 1, "LayerChanged names spatial layer 1");
    // Measure the frame rate over 3 s on the middle layer, against the pictures A's encoder
    // sent over the same 3 s (a CPU-starved encoder changes its frame rate, so the rate B
    // decoded the top layers at earlier is no reference: one CI run saw 13.5 fps there).
    await until(async () => Date.now() - switched.at >= 500, 2000, "the switch settled");
    const sentBy = async () => ({ at: Date.now(), frames: (await outboundVideoStats(a)).find((x) => x.framesSent > 0)?.framesSent ?? 0 });
    const a0 = await sentBy();
    await until(async () => Date.now() - a0.at >= 3000, 5000, "3 s on the middle layer");
    const a1 = await sentBy();
    const mid = await rate(b, ids.video, 3000);
    assert.ok(mid, "samples over the last 3 s");
    // Chromium's outbound-rtp counts each spatial layer's frame of an SVC picture in
    // framesSent (measured: 59.9 of 20 pictures a second with L3T3): three per picture.
    const sentFps = ((a1.frames - a0.frames) * 1000) / (a1.at - a0.at) / 3;
    const note =
      `(1, 1): ${mid.last.frameWidth}x${mid.last.frameHeight} after ${tookMs} ms at ${mid.fps.toFixed(1)} fps ` +
      `(A sent ${sentFps.toFixed(1)} fps meanwhile; top earlier ${top.fps.toFixed(1)} fps), LayerChanged sid ${layer.sid} tid ${layer.tid}`;
    t.diagnostic(note);
    console.log(note);
    const sentNow = (await outboundVideoStats(a)).find((x) => x.framesSent > 0)?.frameWidth ?? 0;
    if (sentNow) midWidths.add(sentNow / 2);
    assert.ok(midWidths.has(mid.last.frameWidth), `middle resolution: ${mid.last.frameWidth} (half of A's top: ${[...midWidths]})`);
    assert.ok(sentFps >= 4, `A's encoder sends pictures: ${sentFps.toFixed(1)} fps`);
    const ratio = mid.fps / sentFps;
    assert.ok(ratio > 0.35 && ratio < 0.7, `about half the frame rate: ${mid.fps.toFixed(1)} of the ${sentFps.toFixed(1)} fps A sent`);

    const samples = await inboundSamples(b, ids.video, asked - 1000);
    const stall = longestDecodeStall(samples);
    const last = samples.at(-1);
    t.diagnostic(`longest decode stall ${stall} ms, nackCount ${last.nackCount}, freezes ${last.freezeCount}`);
    assert.ok(stall < MAX_STALL_MS, `no decode stall of ${MAX_STALL_MS} ms: ${stall} ms`);
    assert.equal(last.nackCount, 0, "B sent no NACK (nothing was lost; dropped layers leave no gap)");
  });
});
}

// VP8 with three temporal layers in one stream (scalability mode L1T3): asking for temporal
// layer 0 keeps a quarter of the frames (T0 is every fourth frame), at full size, without a
// stall or a NACK; asking for all of them again restores the frame rate.
// H264 the same: its temporal layers come only in the dependency descriptor.
for (const codec of ["VP8", "H264"]) {
test(`${codec} L1T3: temporal layer 0 keeps about a quarter of the frame rate`, { timeout: 180000 }, async (t) => {
  await publishAndView(`l1t3-${codec.toLowerCase()}`, `svc=L1T3&codec=${codec}&video=640x360`, async ({ b, ids }) => {
    const full = await until(
      async () => {
        const r = await rate(b, ids.video, 2000);
        return r && r.fps >= 8 ? r : null;
      },
      30000,
      "B decodes A's video at its full frame rate",
    );
    const asked = Date.now();
    await b.evaluate((id) => window.rheomeshControls.setPreferredLayer(id, 0, 0), ids.video);
    await until(async () => Date.now() - asked >= 3500, 5000, "3.5 s on temporal layer 0");
    const base = await rate(b, ids.video, 3000);
    await b.evaluate((id) => window.rheomeshControls.setPreferredLayer(id, 0, null), ids.video);
    const back = await until(
      async () => {
        const r = await rate(b, ids.video, 1500);
        return r && r.fps >= full.fps * 0.55 ? r : null;
      },
      6000,
      "all temporal layers again: the full frame rate returns",
    );
    const note =
      `L1T3: ${full.fps.toFixed(1)} fps -> (0, 0): ${base.fps.toFixed(1)} fps at ${base.last.frameWidth}x${base.last.frameHeight} ` +
      `-> (0, all): ${back.fps.toFixed(1)} fps`;
    t.diagnostic(note);
    console.log(note);
    const ratio = base.fps / full.fps;
    assert.ok(ratio > 0.1 && ratio < 0.45, `about a quarter of the frame rate: ${base.fps.toFixed(1)} of ${full.fps.toFixed(1)} fps`);
    const samples = await inboundSamples(b, ids.video, asked - 1000);
    const stall = longestDecodeStall(samples);
    const last = samples.at(-1);
    t.diagnostic(`longest decode stall ${stall} ms, nackCount ${last.nackCount}`);
    assert.ok(stall < MAX_STALL_MS, `no decode stall of ${MAX_STALL_MS} ms: ${stall} ms`);
    assert.equal(last.nackCount, 0, "B sent no NACK");
  });
});
}
