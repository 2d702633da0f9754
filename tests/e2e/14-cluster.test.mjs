// 14. Two example servers in a cluster on Redis (`--redis`, `--node-id`, `--relay-secret`;
//     examples/media_server/cluster.rs). A publishes on node 1; B (viewer) and C (publisher)
//     are on node 2 in the same room. B decodes A's video and audio (relayed from node 1 on
//     B's subscription) and C's; A decodes C's (relayed the other way). Node 1 is killed
//     (SIGKILL): B gets `Unpublished` for A's tracks within 5 s and still decodes C. Node 1
//     restarts under the same id, A' publishes there: B sees A' and decodes it.
//
// The test starts its own redis-server (installed by scripts/test.sh) on a free loopback port,
// with no persistence, and stops it at the end.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { connect } from "node:net";
import { after, before, test } from "node:test";
import {
  appState, closePage, expectGrowth, freePort, launchBrowser, openPage, socketMessages, startServer, uniqueRoom, until,
  waitFor, waitPublished,
} from "./helpers.mjs";

const SECRET = "e2e-cluster-secret-0123456789";

/** One PING to Redis on `port`: true if it answered +PONG. */
function redisPing(port) {
  return new Promise((resolve) => {
    const sock = connect({ host: "127.0.0.1", port });
    let data = "";
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.on("error", () => done(false));
    sock.on("connect", () => sock.write("PING\r\n"));
    sock.on("data", (chunk) => {
      data += chunk;
      if (data.includes("\r\n")) done(data.startsWith("+PONG"));
    });
  });
}

async function startRedis() {
  const port = await freePort();
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout.on("data", (c) => (output += c));
  child.stderr.on("data", (c) => (output += c));
  let exited = null;
  child.on("exit", (code, signal) => (exited = { code, signal }));
  child.on("error", (e) => (exited = { error: e.message }));
  const deadline = Date.now() + 10000;
  while (!(await redisPing(port))) {
    if (exited) throw new Error(`redis-server exited (${JSON.stringify(exited)}); is it installed (scripts/test.sh)?\n${output}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`redis-server not answering on ${port} within 10 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `redis://127.0.0.1:${port}/`,
    async stop() {
      if (exited) return;
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await gone;
      clearTimeout(timer);
    },
  };
}

const nodeArgs = (redis, id) => ["--redis", redis.url, "--node-id", id, "--relay-secret", SECRET];

const ctx = {};
before(async () => {
  ctx.redis = await startRedis();
  ctx.node1 = await startServer({ args: nodeArgs(ctx.redis, "n1") });
  ctx.node2 = await startServer({ args: nodeArgs(ctx.redis, "n2") });
  ctx.browser = await launchBrowser();
});
after(async () => {
  await ctx.browser?.close().catch(() => {});
  for (const s of [ctx.node1, ctx.node1b, ctx.node2]) {
    if (!s) continue;
    await s.stop();
    const out = s.output().trim();
    if (/\b(ERROR|panicked)\b/.test(out)) console.log(`server output:\n${out}`);
  }
  await ctx.redis?.stop();
});

/** The Unpublished messages `page` got for `ids`. */
async function unpublishedFor(page, ids) {
  return (await socketMessages(page)).filter((m) => m.action === "Unpublished" && ids.includes(m.publisherId));
}

test("two nodes on Redis: tracks cross nodes, a killed node's tracks are unpublished, a restarted one is seen", { timeout: 240000 }, async () => {
  const room = uniqueRoom("cluster");
  const pages = [];
  const open = async (server, path, name) => {
    const page = await openPage(ctx.browser, server.base, path, name);
    pages.push(page);
    return page;
  };
  try {
    const a = await open(ctx.node1, `/?room=${room}&name=A&autopublish=1`, "A@n1");
    const b = await open(ctx.node2, `/?room=${room}&name=B`, "B@n2");
    const c = await open(ctx.node2, `/?room=${room}&name=C&autopublish=1`, "C@n2");
    const idsA = await waitPublished(a);
    const tA = Date.now();
    const idsC = await waitPublished(c);

    // B (node 2) gets A's tracks from node 1, named, and decodes them; and C's, local.
    await waitFor(b, () => window.rheomeshApp.tracks === 4, 20000, "B has A's and C's tracks");
    await waitFor(b, (id) => (window.rheomeshApp.stats[id]?.framesDecoded ?? 0) > 0, 20000, "B decodes A's first frame", idsA.video);
    const firstFrameMs = Date.now() - tA;
    const stateB = await appState(b);
    assert.equal(stateB.names[idsA.video], "A", `B knows A's name: ${JSON.stringify(stateB.names)}`);
    await expectGrowth(b, idsA.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectGrowth(b, idsA.audio, "packetsReceived", { minDelta: 20, timeoutMs: 15000 });
    await expectGrowth(b, idsC.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectGrowth(b, idsC.audio, "packetsReceived", { minDelta: 20, timeoutMs: 15000 });
    // A (node 1) gets C's tracks, relayed from node 2.
    await waitFor(a, () => window.rheomeshApp.tracks === 2, 20000, "A has C's tracks");
    await expectGrowth(a, idsC.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectGrowth(a, idsC.audio, "packetsReceived", { minDelta: 20, timeoutMs: 15000 });
    console.log(`first frame of A (node 1) at B (node 2): ${firstFrameMs} ms after A published`);

    // Node 1 dies.
    const gone = [idsA.audio, idsA.video];
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
    console.log(`after SIGKILL of node 1: B's tracks of A gone after ${tracksGoneMs} ms, Unpublished after ${unpublishedMs} ms`);
    assert.ok(unpublishedMs <= 5000, `Unpublished within 5 s (${unpublishedMs} ms)`);
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
    for (const page of pages) await closePage(page).catch(() => {});
  }
});
