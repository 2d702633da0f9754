// 15. Every layer crosses a relay. Two example servers in a cluster on Redis (as in 14); A
//     publishes on node 1, B views on node 2, so B's subscription is served by node 2 from
//     node 1's relay.
//     - Simulcast (VP8, three rids): the relay carries all three encodings, so B, asking for
//       spatial layer 0, then 2, then 1 (SetPreferredLayer), is reported on that layer by node
//       2 (LayerChanged) and decodes the width A sends on that rid each time (0.2-0.5 s after
//       asking on an idle machine; up to 15 s allowed for a CPU-starved encoder's pauses).
//     - SVC (VP9 L3T3_KEY, one stream): B first decodes A's top layer, then asks for spatial
//       1: it decodes half that width.
//     Before this, a relay carried only the top encoding: B could not go below it.
//
// The test starts its own redis-server (installed by scripts/test.sh).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  closePage, expectNoAppError, inboundSamples, openPage, outboundVideoStats, startCluster, startInboundSampler,
  stopCluster, stopInboundSampler, uniqueRoom, until, waitFor, waitPublished
} from "./helpers.mjs";

const SECRET = "e2e-cluster-layers-secret-0123456789";
// A layer is reached this soon (it takes 0.2-0.5 s on an idle machine; a CPU-starved
// Chromium may pause an encoding for seconds, and nothing can forward what is not sent).
const REACH_WITHIN_MS = 15000;
const RAMP_UP_MS = 45000; // Chromium's estimate must grow before it sends the top layer

let ctx = {};
before(async () => {
  ctx = await startCluster((redis, id) => ["--redis", redis.url, "--node-id", id, "--relay-secret", SECRET]);
});
after(() => stopCluster(ctx));

/** A publishes with `query` on node 1, B views on node 2; then `body`, then both close. */
async function acrossNodes(prefix, query, body) {
  const room = uniqueRoom(prefix);
  const a = await openPage(ctx.browser, ctx.node1.base, `/?room=${room}&autopublish=1&${query}`, "A@1");
  let b = null;
  try {
    const ids = await waitPublished(a);
    b = await openPage(ctx.browser, ctx.node2.base, `/?room=${room}`, "B@2");
    await waitFor(b, () => window.rheomeshApp.tracks === 2, 20000, "B (node 2) has A's 2 tracks");
    await waitFor(b, (id) => window.rheomeshApp.subscriberIdOf[id] ?? null, 15000, "B subscribed to A's video", ids.video);
    await startInboundSampler(b, ids.video);
    await body({ a, b, ids });
    await stopInboundSampler(b, ids.video);
    await expectNoAppError(b);
  } finally {
    if (b) await closePage(b);
    await closePage(a);
  }
}

test("simulcast across the relay: B on node 2 reaches each of A's three encodings", { timeout: 180000 }, async (t) => {
  await acrossNodes("relay-simulcast", "simulcast=1&video=1280x720", async ({ a, b, ids }) => {
    // Every rid sends (frames growing over a second), ranked by width as the servers do.
    let previous = null;
    await until(
      async () => {
        const now = { at: Date.now(), stats: await outboundVideoStats(a) };
        if (!previous) previous = now;
        if (now.at - previous.at < 1000) return null;
        const before = previous;
        previous = now;
        if (now.stats.length !== 3) return null;
        return now.stats.every((s) => s.framesSent >= (before.stats.find((p) => p.rid === s.rid)?.framesSent ?? 0) + 10);
      },
      RAMP_UP_MS,
      "A sends frames on all three rids",
    );
    // A's current width per encoding, ranked (its encoder may scale under CPU load).
    const widths = async () => {
      const stats = (await outboundVideoStats(a)).filter((s) => s.framesSent > 0);
      return stats.length === 3 ? stats.map((s) => s.frameWidth) : null;
    };
    const times = [];
    for (const sid of [0, 2, 1]) {
      const asked = Date.now();
      await b.evaluate(({ id, sid }) => window.rheomeshControls.setPreferredLayer(id, sid), { id: ids.video, sid });
      // Node 2 reports layer `sid` for B, and B's latest picture has the width A sends on
      // encoding `sid` now (and no other encoding of A has it). A CPU-starved encoder may
      // pause or shrink an encoding for a while (node 2 then falls back to the next one, as
      // it should): the wait allows for that; the time is printed.
      const hit = await until(
        async () => {
          const w = await widths();
          const s = (await inboundSamples(b, ids.video, asked)).at(-1);
          const l = await b.evaluate((id) => window.rheomeshApp.layers[id] ?? null, ids.video);
          if (!w || !s || !l) return null;
          const unique = w.filter((x) => x === w[sid]).length === 1;
          return l.sid === sid && unique && s.frameWidth === w[sid] ? s : null;
        },
        REACH_WITHIN_MS,
        `node 2 reports layer ${sid} and B decodes the width of A's encoding ${sid} (no other encoding has it)`,
      );
      times.push(`s${sid} ${hit.frameWidth}px after ${hit.at - asked} ms`);
    }
    t.diagnostic(`switches across the relay: ${times.join(", ")}`);
    console.log(`relayed simulcast: ${times.join(", ")}`);
    const decoded = new Set((await inboundSamples(b, ids.video, 0)).map((s) => s.frameWidth).filter((w) => w > 0));
    assert.ok(decoded.size >= 3, `B decoded three widths: ${[...decoded]}`);
  });
});

test("SVC across the relay: B on node 2 goes from A's top spatial layer to the middle one", { timeout: 180000 }, async (t) => {
  await acrossNodes("relay-svc", "svc=L3T3_KEY&codec=VP9&video=1280x720", async ({ a, b, ids }) => {
    const sentWidth = async () => (await outboundVideoStats(a)).find((x) => x.framesSent > 0)?.frameWidth ?? 0;
    const top = await until(
      async () => {
        const sent = await sentWidth();
        const s = (await inboundSamples(b, ids.video, Date.now() - 1000)).at(-1);
        return s && sent >= 640 && s.frameWidth === sent ? s : null;
      },
      60000,
      "B decodes A's top spatial layer (A's full width)",
    );
    const asked = Date.now();
    await b.evaluate((id) => window.rheomeshControls.setPreferredLayer(id, 1), ids.video);
    // B's latest picture is half as wide as what A sends now (A's encoder may scale its
    // whole picture under CPU load, so the top width B saw earlier is no reference).
    const hit = await until(
      async () => {
        const sent = await sentWidth();
        const s = (await inboundSamples(b, ids.video, asked)).at(-1);
        return s && sent >= 640 && s.frameWidth * 2 === sent ? s : null;
      },
      REACH_WITHIN_MS,
      "B decodes the middle spatial layer (half of A's current width)",
    );
    const took = hit.at - asked;
    t.diagnostic(`SVC across the relay: top ${top.frameWidth}px, middle ${hit.frameWidth}px (A sending ${2 * hit.frameWidth}px) after ${took} ms`);
    console.log(`relayed SVC: top ${top.frameWidth}px, middle ${hit.frameWidth}px (A sending ${2 * hit.frameWidth}px) after ${took} ms`);
  });
});
