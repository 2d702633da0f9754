// 14. Two example servers in a cluster on Redis (`--redis`, `--node-id`, `--relay-secret`;
//     examples/media_server/cluster.rs). A publishes on node 1; B (viewer) and O (a bare
//     WebSocket participant that never subscribes) are on node 2 in the same room. B decodes
//     A's video and audio (relayed from node 1 on B's subscription; A's chat channel too,
//     which the page subscribes to: node 2's relay counts are 3). B leaves: within 5 s node
//     2 has stopped the relay (node 1's relay sessions out and node 2's in are 0 in /metrics,
//     the copies are gone from node 2's router), O got no `Unpublished` and still finds A's
//     tracks listed; B joins again: relayed again, decoded again. With node 1 frozen (SIGSTOP)
//     B leaves and joins again while node 2 is stopping the relay: B's new subscriptions wait
//     for the stop, relay anew once node 1 resumes, and decode. C then publishes on node 2:
//     B decodes A's and C's; A decodes C's (relayed the other way). Node 1 is killed
//     (SIGKILL): B and O get `Unpublished` for A's tracks (B `DataUnpublished` for A's chat)
//     within 5 s and B still decodes C.
//     Node 1 restarts under the same id, A' publishes there: B sees A' and decodes it.
//
// The test starts its own redis-server (installed by scripts/test.sh) on a free loopback port,
// with no persistence, and stops it at the end.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  appState, expectGrowth, metricsOf, pageSet, socketMessages, startCluster, startServer, stopCluster, uniqueRoom,
  until, waitFor, waitPublished
} from "./helpers.mjs";

const SECRET = "e2e-cluster-secret-0123456789";

// A relay outlives its last subscriber by 300 ms here (default 2 s): short enough that node 1
// can be frozen through a whole stop (below) well within its 3 s heartbeat TTL.
const LINGER_MS = 300;
const nodeArgs = (redis, id) => [
  "--redis", redis.url, "--node-id", id, "--relay-secret", SECRET, "--relay-linger-ms", String(LINGER_MS),
];

let ctx = {};
before(async () => {
  ctx = await startCluster(nodeArgs);
});
after(() => stopCluster(ctx, [ctx.node1b]));

/** The Unpublished messages `page` got for `ids`. */
async function unpublishedFor(page, ids) {
  return (await socketMessages(page)).filter((m) => m.action === "Unpublished" && ids.includes(m.publisherId));
}

/** A node's relay gauges and published-track count, from its /metrics. */
async function relayMetrics(server) {
  const gauge = await metricsOf(server);
  return {
    sessionsOut: gauge("relay_sessions_out"),
    sessionsIn: gauge("relay_sessions_in"),
    linksOut: gauge("relay_links_out"),
    linksIn: gauge("relay_links_in"),
    tracks: gauge("tracks"),
    // The subscribing side's relays (cluster.rs): tracks relayed here, local subscriptions to
    // them, those being stopped, stops begun, subscriptions that waited for a stop.
    relayed: gauge("cluster_relayed_tracks"),
    uses: gauge("cluster_relay_uses"),
    stopping: gauge("cluster_relays_stopping"),
    unrelays: gauge("cluster_unrelays_total"),
    waits: gauge("cluster_relay_waits_total"),
  };
}

/** Both nodes' relay metrics once `ok(m1, m2)` holds (polled, `timeoutMs` at most). */
async function relayState(ok, timeoutMs, what) {
  let last = null;
  try {
    return await until(
      async () => {
        last = [await relayMetrics(ctx.node1), await relayMetrics(ctx.node2)];
        return ok(...last) && last;
      },
      timeoutMs,
      what,
    );
  } catch (e) {
    throw new Error(`${e.message}\nnode 1, node 2 metrics: ${JSON.stringify(last)}`);
  }
}

/**
 * A participant of `room` that only speaks the protocol, on the WebSocket of page `p` (which has
 * not joined): it sends SubscriberInit (it sees every Published and Unpublished of the room) and
 * never subscribes.
 */
async function bareParticipant(p, room) {
  await p.evaluate(async (room) => {
    const ws = new WebSocket(`${location.origin.replace("http", "ws")}/socket?room=${room}`);
    window.bare = { ws, inbox: [] };
    ws.onmessage = (e) => window.bare.inbox.push(JSON.parse(e.data));
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    });
    ws.send(JSON.stringify({ action: "SubscriberInit" }));
  }, room);
  return {
    inbox: () => p.evaluate(() => window.bare.inbox),
    /** Sends SubscriberInit again; resolves with the publisher ids its Published reply lists. */
    list: async () => {
      const from = await p.evaluate(() => {
        window.bare.ws.send(JSON.stringify({ action: "SubscriberInit" }));
        return window.bare.inbox.length;
      });
      return waitFor(
        p,
        (from) => window.bare.inbox.slice(from).find((m) => m.action === "Published")?.publisherIds,
        10000,
        "the Published reply to SubscriberInit",
        from,
      );
    },
  };
}

test("two nodes on Redis: tracks cross nodes, a relay stops with its last subscriber, a killed node's tracks are unpublished, a restarted one is seen", { timeout: 240000 }, async () => {
  const room = uniqueRoom("cluster");
  const pages = pageSet(ctx.browser);
  const open = pages.open;
  try {
    const a = await open(ctx.node1, `/?room=${room}&name=A&autopublish=1`, "A@n1");
    const b = await open(ctx.node2, `/?room=${room}&name=B`, "B@n2");
    const o = await open(ctx.node2, "/", "O@n2");
    const observer = await bareParticipant(o, room);
    const idsA = await waitPublished(a);
    const tA = Date.now();
    const gone = [idsA.audio, idsA.video];

    // B (node 2) gets A's tracks from node 1, named, and decodes them.
    await waitFor(b, () => window.rheomeshApp.tracks === 2, 20000, "B has A's tracks");
    await waitFor(b, (id) => (window.rheomeshApp.stats[id]?.framesDecoded ?? 0) > 0, 20000, "B decodes A's first frame", idsA.video);
    const firstFrameMs = Date.now() - tA;
    const stateB = await appState(b);
    assert.equal(stateB.names[idsA.video], "A", `B knows A's name: ${JSON.stringify(stateB.names)}`);
    await expectGrowth(b, idsA.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectGrowth(b, idsA.audio, "packetsReceived", { minDelta: 20, timeoutMs: 15000 });
    console.log(`first frame of A (node 1) at B (node 2): ${firstFrameMs} ms after A published`);
    // One relay session node 1 → node 2 carries both tracks.
    await relayState((m1, m2) => m1.sessionsOut === 1 && m2.sessionsIn === 1 && m2.tracks === 2, 5000, "relay session n1 → n2 up");

    // B leaves: its subscriptions were the last to A's tracks on node 2, whose relay stops
    // after the linger time: the session pair closes on both nodes, the copies go.
    const tLeave = Date.now();
    await b.evaluate(() => window.rheomeshControls.leave());
    await relayState((m1, m2) => m1.sessionsOut === 0 && m2.sessionsIn === 0 && m2.tracks === 0 && m2.relayed === 0, 8000, "relay stopped");
    const relayStoppedMs = Date.now() - tLeave;
    console.log(`B left node 2: relay of A's tracks stopped (sessions 0 on both nodes) after ${relayStoppedMs} ms`);
    assert.ok(relayStoppedMs <= 5000, `relay stopped within 5 s of the last subscriber leaving (${relayStoppedMs} ms)`);
    // Nothing changed for the room: O got no Unpublished, A's tracks are still listed.
    const listed = await observer.list();
    for (const id of gone) assert.ok(listed.includes(id), `O still finds ${id} listed: ${JSON.stringify(listed)}`);
    const chatA = (await appState(a)).chat.id;
    const stray = (await observer.inbox()).filter(
      (m) => m.action === "Unpublished" || (m.action === "DataUnpublished" && m.publisherId === chatA),
    );
    assert.deepEqual(stray, [], "a stopped relay unpublishes nothing to node 2's participants");

    // B joins again: A's tracks are relayed again and decode.
    const tRejoin = Date.now();
    await b.evaluate((room) => window.rheomeshControls.join(room), room);
    await waitFor(b, (id) => (window.rheomeshApp.stats[id]?.framesDecoded ?? 0) > 0, 20000, "B decodes A again", idsA.video);
    const refirstFrameMs = Date.now() - tRejoin;
    await expectGrowth(b, idsA.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectGrowth(b, idsA.audio, "packetsReceived", { minDelta: 20, timeoutMs: 15000 });
    // B's subscriptions on node 2 use A's two tracks and A's chat channel (the page joins the
    // room's chat), all relayed: 3 uses.
    await relayState(
      (m1, m2) => m1.sessionsOut === 1 && m2.sessionsIn === 1 && m2.tracks === 2 && m2.relayed === 3 && m2.uses === 3,
      5000,
      "relay session n1 → n2 up again (A's tracks and chat)",
    );
    console.log(`B joined node 2 again: A's video decoded ${refirstFrameMs} ms after joining (relayed anew)`);

    // The race: B subscribes while node 2 is stopping the relay. Node 1 is frozen (SIGSTOP), so
    // the stop cannot complete: B leaves, node 2 begins the stop after the linger time (unrelay
    // sent); B joins again and subscribes meanwhile; node 1 resumes. B's subscriptions must wait
    // for the old copies to go and relay anew, not subscribe to copies about to be unpublished.
    const before = await relayMetrics(ctx.node2);
    const tFreeze = Date.now();
    process.kill(ctx.node1.pid, "SIGSTOP");
    let frozenMs;
    try {
      await b.evaluate(() => window.rheomeshControls.leave());
      // Short deadlines: node 1's heartbeat key lives 3 s.
      await until(async () => (await relayMetrics(ctx.node2)).stopping === 3, 2000, "node 2 stopping the relay of A's two tracks and chat");
      await b.evaluate((room) => window.rheomeshControls.join(room), room);
      await until(
        async () => {
          const m = await relayMetrics(ctx.node2);
          return m.stopping === 3 && m.uses === 3;
        },
        2000,
        "B's three new subscriptions (two tracks, chat) waiting for the stop",
      );
    } finally {
      process.kill(ctx.node1.pid, "SIGCONT");
      frozenMs = Date.now() - tFreeze;
    }
    const tResume = Date.now();
    await waitFor(b, (id) => (window.rheomeshApp.stats[id]?.framesDecoded ?? 0) > 0, 20000, "B decodes A after the race", idsA.video);
    const raceFrameMs = Date.now() - tResume;
    await expectGrowth(b, idsA.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectGrowth(b, idsA.audio, "packetsReceived", { minDelta: 20, timeoutMs: 15000 });
    const [, raced] = await relayState(
      (m1, m2) => m1.sessionsOut === 1 && m2.sessionsIn === 1 && m2.tracks === 2 && m2.stopping === 0 && m2.uses === 3,
      5000,
      "relayed anew after the race",
    );
    assert.equal(raced.waits - before.waits, 3, "the three subscriptions waited for the stop");
    assert.equal(raced.unrelays - before.unrelays, 3, "one stop per track and channel");
    assert.deepEqual((await appState(b)).subscribed.sort(), [...gone].sort(), "B has A's two tracks");
    assert.deepEqual(
      (await observer.inbox()).filter((m) => m.action === "Unpublished"),
      [],
      "stopped relays unpublish nothing to node 2's participants",
    );
    console.log(`race: node 1 frozen ${frozenMs} ms through a stop and B's new subscriptions; A decoded at B ${raceFrameMs} ms after it resumed`);

    // C publishes on node 2: B decodes A's (relayed) and C's (local) tracks.
    const c = await open(ctx.node2, `/?room=${room}&name=C&autopublish=1`, "C@n2");
    const idsC = await waitPublished(c);
    await waitFor(b, () => window.rheomeshApp.tracks === 4, 20000, "B has A's and C's tracks");
    await expectGrowth(b, idsA.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectGrowth(b, idsC.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectGrowth(b, idsC.audio, "packetsReceived", { minDelta: 20, timeoutMs: 15000 });
    // A (node 1) gets C's tracks, relayed from node 2.
    await waitFor(a, () => window.rheomeshApp.tracks === 2, 20000, "A has C's tracks");
    await expectGrowth(a, idsC.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectGrowth(a, idsC.audio, "packetsReceived", { minDelta: 20, timeoutMs: 15000 });

    // Node 1 dies.
    const tKill = Date.now();
    process.kill(ctx.node1.pid, "SIGKILL");
    await ctx.node1.stop();
    const tracksGoneMs = await until(
      async () => ((await appState(b)).tracks === 2 ? Date.now() - tKill : 0),
      8000,
      "B drops A's tracks",
    );
    const unpublishedMs = await until(
      async () => ((await unpublishedFor(b, gone)).length === 2 ? Date.now() - tKill : 0),
      8000,
      "B gets Unpublished for A's two tracks",
    );
    const observerMs = await until(
      async () => {
        const got = (await observer.inbox()).filter((m) => m.action === "Unpublished" && gone.includes(m.publisherId));
        return got.length === 2 ? Date.now() - tKill : 0;
      },
      8000,
      "O gets Unpublished for A's two tracks",
    );
    // A's chat channel (a data channel of node 1) goes the same way.
    const dataGoneMs = await until(
      async () =>
        (await socketMessages(b)).some((m) => m.action === "DataUnpublished" && m.publisherId === chatA) ? Date.now() - tKill : 0,
      8000,
      "B gets DataUnpublished for A's chat channel",
    );
    console.log(
      `after SIGKILL of node 1: B's tracks of A gone after ${tracksGoneMs} ms, Unpublished after ${unpublishedMs} ms (O: ${observerMs} ms), ` +
        `DataUnpublished of A's chat after ${dataGoneMs} ms`,
    );
    assert.ok(dataGoneMs <= 5000, `DataUnpublished within 5 s (${dataGoneMs} ms)`);
    assert.ok(unpublishedMs <= 5000, `Unpublished within 5 s (${unpublishedMs} ms)`);
    assert.ok(observerMs <= 5000, `Unpublished to O within 5 s (${observerMs} ms)`);
    assert.ok(tracksGoneMs <= 5000, `tracks gone within 5 s (${tracksGoneMs} ms)`);
    const stateAfter = await appState(b);
    assert.deepEqual([...stateAfter.subscribed].sort(), [idsC.audio, idsC.video].sort(), "B keeps C's tracks only");
    // Node 2 keeps serving its own participants.
    await expectGrowth(b, idsC.video, "framesDecoded", { minDelta: 10, timeoutMs: 10000 });
    await expectGrowth(b, idsC.audio, "packetsReceived", { minDelta: 20, timeoutMs: 10000 });

    // Node 1 restarts under the same id; A' publishes there and B sees it.
    ctx.node1b = await startServer({ args: nodeArgs(ctx.redis, "n1") });
    const a2 = await open(ctx.node1b, `/?room=${room}&name=A2&autopublish=1`, "A2@n1");
    const idsA2 = await waitPublished(a2);
    const tA2 = Date.now();
    await waitFor(b, (id) => (window.rheomeshApp.stats[id]?.framesDecoded ?? 0) > 0, 20000, "B decodes A2's first frame", idsA2.video);
    const firstFrame2Ms = Date.now() - tA2;
    await waitFor(b, () => window.rheomeshApp.tracks === 4, 10000, "B has A2's and C's tracks");
    assert.equal((await appState(b)).names[idsA2.video], "A2", "B knows A2's name");
    await expectGrowth(b, idsA2.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectGrowth(b, idsA2.audio, "packetsReceived", { minDelta: 20, timeoutMs: 15000 });
    await waitFor(a2, () => window.rheomeshApp.tracks === 2, 20000, "A2 has C's tracks");
    await expectGrowth(a2, idsC.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    console.log(`first frame of A2 (restarted node 1) at B: ${firstFrame2Ms} ms after A2 published`);
    // Nothing of the dead A came back.
    const final = await appState(b);
    for (const id of gone) assert.ok(!final.subscribed.includes(id), `B has no track ${id} of the killed node`);
    for (const page of [b, c, a2]) {
      const { errors } = await appState(page);
      assert.deepEqual(errors, [], `[${page.e2eName}] no app errors`);
    }
  } finally {
    await pages.closeAll();
  }
});
