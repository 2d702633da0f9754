// 2. Each video codec the page offers (VP8, VP9, H264, AV1) is forwarded and decoded: the
//    viewer's inbound-rtp codec is the one the publisher preferred and framesDecoded grows.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  closePage, expectGrowth, expectNoAppError, inboundStats, openPage, sentVideoCodec, useSuite, uniqueRoom, waitFor, waitPublished,
} from "./helpers.mjs";

const suite = useSuite();

for (const codec of ["VP8", "VP9", "H264", "AV1"]) {
  test(`${codec} is forwarded and decoded`, { timeout: 60000 }, async () => {
    const room = uniqueRoom(`codec-${codec}`);
    const a = await openPage(suite.browser, suite.base, `/?room=${room}&autopublish=1&codec=${codec}`, `A-${codec}`);
    const b = await openPage(suite.browser, suite.base, `/?room=${room}`, `B-${codec}`);
    try {
      const ids = await waitPublished(a);
      // The publisher really sends the chosen codec.
      const sent = await sentVideoCodec(a);
      assert.equal(sent.toUpperCase(), `VIDEO/${codec}`, "A's outbound video codec");

      await waitFor(b, () => window.rheomeshApp.tracks === 2, 15000, "B has A's 2 tracks");
      const [f0, f1] = await expectGrowth(b, ids.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
      const inbound = (await inboundStats(b)).filter((s) => s.kind === "video" && s.trackIdentifier);
      const video = inbound.find((s) => s.framesDecoded > 0);
      assert.ok(video, `B has a decoding video inbound-rtp: ${JSON.stringify(inbound)}`);
      assert.equal(video.codec?.toUpperCase(), `VIDEO/${codec}`, `B's inbound codec: ${JSON.stringify(video)}`);
      const overlay = await b.evaluate((id) => window.rheomeshApp.stats[id]?.codec, ids.video);
      assert.equal(overlay?.toUpperCase(), codec, "rheomeshApp.stats codec");
      console.log(`${codec}: B framesDecoded ${f0} -> ${f1}`);
      await expectNoAppError(a);
      await expectNoAppError(b);
    } finally {
      await closePage(a);
      await closePage(b);
    }
  });
}
