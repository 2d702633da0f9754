// 17. A room spread over two nodes of a cluster (examples/media_server/cluster.rs) works as one
//     room for what the page offers beside media: the chat (data channels), mute state, and WHEP.
//     Two servers on one redis-server (`--redis`, `--node-id n1`/`n2`, `--whip-token`).
//     - Chat and mute: A (camera + microphone) on node 1, B on node 2. Their chat channels
//       cross the nodes (relayed on subscription, `DataPublisher::relay_to`): a line typed on
//       A's page arrives on B's and the other way, in order. A mutes its microphone: B gets
//       `Muted` and shows the badge; C, joining node 2 late, gets A's audio in `Published.muted`
//       and sees the badge, and finds both chat channels (A's remote, B's local). A unmutes:
//       both see it. A WHEP viewer on node 2 of A's video track (by its id) decodes it. A
//       leaves: B and C get `DataUnpublished` for A's channel, the WHEP session ends, node 2's
//       relays of A's tracks and channel end.
//     - WHEP of a WHIP stream: a browser publishes `cam` over WHIP to node 1; a WHEP viewer of
//       `/whep/{room}/cam` on node 2 (without the token: 401 and nothing relayed) decodes it,
//       also well past the relay linger time (the WHEP session holds the relay); the WHIP
//       session's DELETE on node 1 ends the WHEP session on node 2, whose room and relays go.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  closePage, expectNoAppError, metricsOf, openPage, pageSet, socketMessages, startCluster, stopCluster, uniqueRoom,
  until, waitFor, waitPublished, whepDecodes, whepView, whipPublish
} from "./helpers.mjs";

const SECRET = "e2e-cluster-secret-0123456789";
const TOKEN = "e2e-cluster-whip-token";
// A relay outlives its last use by 300 ms (default 2 s), so that a WHEP session not holding
// its relay would be cut within the test.
const LINGER_MS = 300;
const nodeArgs = (redis, id) => [
  "--redis", redis.url, "--node-id", id, "--relay-secret", SECRET, "--relay-linger-ms", String(LINGER_MS),
  "--whip-token", TOKEN,
];

let ctx = {};
before(async () => {
  ctx = await startCluster(nodeArgs);
});
after(() => stopCluster(ctx));

/** A node's room, participant and relay gauges, from its /metrics. */
async function metrics(server) {
  const gauge = await metricsOf(server);
  return {
    rooms: gauge("rooms"),
    participants: gauge("participants"),
    relayed: gauge("cluster_relayed_tracks"),
    uses: gauge("cluster_relay_uses"),
  };
}

/** The page's chat state (window.rheomeshApp.chat). */
const chat = (page) => page.evaluate(() => structuredClone(window.rheomeshApp.chat));

/** Waits until `page` has the chat lines `texts` from `from`, in that order. */
function chatArrives(page, from, texts, timeoutMs, what) {
  return until(
    async () => {
      const got = (await chat(page)).messages.filter((m) => m.from === from).map((m) => m.text);
      return JSON.stringify(got) === JSON.stringify(texts);
    },
    timeoutMs,
    what,
  );
}

/** Whether `page` shows `name`'s tile with the microphone badge (`muted`) or without it. */
function micBadge(page, name, muted, timeoutMs, what) {
  return waitFor(
    page,
    ({ name, muted }) => {
      const t = [...document.querySelectorAll("#remote .tile")].find((t) => t.dataset.name === name);
      return t && t.classList.contains("mic-muted") === muted;
    },
    timeoutMs,
    what,
    { name, muted },
  );
}

/** Waits until the WHEP session of page `p` is gone on its server (`DELETE` answers 404). */
function whepEnded(p, timeoutMs, what) {
  return waitFor(
    p,
    async (token) => (await fetch(window.whip.location, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } })).status === 404,
    timeoutMs,
    what,
    TOKEN,
  );
}

test("two nodes, one room: the chat crosses nodes, mute state reaches the other node and late joiners, WHEP plays a track of the other node", { timeout: 120000 }, async () => {
  const room = uniqueRoom("croom");
  const pages = pageSet(ctx.browser);
  const open = pages.open;
  try {
    const a = await open(ctx.node1, `/?room=${room}&name=A&autopublish=1`, "A@n1");
    const b = await open(ctx.node2, `/?room=${room}&name=B`, "B@n2");
    const idsA = await waitPublished(a);

    // The chat: each page finds the other's channel (across the nodes) and subscribes.
    const tChat = Date.now();
    for (const p of [a, b]) {
      await waitFor(p, () => window.rheomeshApp.chat.ready && window.rheomeshApp.chat.peers.length === 1, 20000, "chat open with the other node's channel");
    }
    const chatOpenMs = Date.now() - tChat;
    const [chatA, chatB] = [(await chat(a)).id, (await chat(b)).id];
    assert.deepEqual((await chat(a)).peers, [chatB], "A (node 1) has B's channel");
    assert.deepEqual((await chat(b)).peers, [chatA], "B (node 2) has A's channel");
    const linesA = ["hello from node 1", "second line", "third line"];
    const linesB = ["hello from node 2", "and back"];
    const tSend = Date.now();
    for (const text of linesA) assert.ok(await a.evaluate((t) => window.rheomeshControls.sendChat(t), text), "A could send");
    await chatArrives(b, chatA, linesA, 10000, "B gets A's lines in order");
    const abMs = Date.now() - tSend;
    const tBack = Date.now();
    for (const text of linesB) assert.ok(await b.evaluate((t) => window.rheomeshControls.sendChat(t), text), "B could send");
    await chatArrives(a, chatB, linesB, 10000, "A gets B's lines in order");
    const baMs = Date.now() - tBack;
    console.log(`chat across nodes: channels found ${chatOpenMs} ms after A published; node 1 → 2 in ${abMs} ms, node 2 → 1 in ${baMs} ms`);

    // Mute: A (node 1) mutes its microphone; B (node 2) is told and shows the badge.
    await waitFor(b, () => window.rheomeshApp.tracks === 2, 20000, "B has A's tracks");
    await micBadge(b, "A", false, 10000, "B shows A's tile, unmuted");
    const tMute = Date.now();
    await a.evaluate(() => window.rheomeshControls.setMuted("audio", true));
    await micBadge(b, "A", true, 5000, "B sees A's microphone muted");
    const muteMs = Date.now() - tMute;
    const mutedAtB = (await socketMessages(b)).filter((m) => m.action === "Muted" && m.publisherId === idsA.audio);
    assert.deepEqual(mutedAtB.map((m) => m.muted), [true], "B got one Muted for A's audio");

    // C joins node 2 late: A's audio comes muted in Published, both chat channels are listed.
    const c = await open(ctx.node2, `/?room=${room}&name=C`, "C@n2");
    await waitFor(c, () => window.rheomeshApp.tracks === 2, 20000, "C has A's tracks");
    await micBadge(c, "A", true, 5000, "C sees A's microphone muted");
    const publishedAtC = (await socketMessages(c)).filter((m) => m.action === "Published" && m.publisherIds.includes(idsA.audio));
    assert.ok(publishedAtC.length >= 1 && publishedAtC[0].muted?.includes(idsA.audio), `C's Published says A's audio is muted: ${JSON.stringify(publishedAtC)}`);
    assert.ok(!publishedAtC[0].muted.includes(idsA.video), "A's video is not muted");
    await waitFor(c, () => window.rheomeshApp.chat.ready && window.rheomeshApp.chat.peers.length === 2, 20000, "C has A's and B's channels");
    assert.deepEqual((await chat(c)).peers.sort(), [chatA, chatB].sort());
    assert.ok(await a.evaluate(() => window.rheomeshControls.sendChat("welcome C")));
    await chatArrives(c, chatA, ["welcome C"], 10000, "C gets A's line");

    // A unmutes: both node 2 pages see it.
    const tUnmute = Date.now();
    await a.evaluate(() => window.rheomeshControls.setMuted("audio", false));
    for (const p of [b, c]) await micBadge(p, "A", false, 5000, "A's microphone unmuted");
    const unmuteMs = Date.now() - tUnmute;
    console.log(`mute across nodes: badge at B ${muteMs} ms after A muted; unmute seen by B and C within ${unmuteMs} ms`);

    // WHEP on node 2 of A's video track, by its id (a WebSocket participant's track on node 1).
    const w = await open(ctx.node2, "/", "WHEP-A@n2");
    const tWhep = Date.now();
    const location = (await whepView(w, `/whep/${room}/${idsA.video}`, TOKEN)).location;
    assert.equal(location.startsWith(`/whep/${room}/${idsA.video}/`), true, location);
    await whepDecodes(w, 1, 15000, "WHEP viewer of A's video on node 2 decodes");
    const whepTrackMs = Date.now() - tWhep;
    await whepDecodes(w, 20, 10000, "WHEP viewer of A's video keeps decoding");
    console.log(`WHEP on node 2 of A's video (node 1): first frame ${whepTrackMs} ms after the POST`);

    // A leaves: its channel goes from B's and C's chats, the WHEP session ends, node 2 relays
    // nothing any more (A's tracks and channel).
    const tLeave = Date.now();
    await pages.close(a);
    for (const p of [b, c]) {
      await waitFor(p, (gone) => !window.rheomeshApp.chat.peers.includes(gone), 10000, "A's channel dropped", chatA);
      const dataGone = (await socketMessages(p)).filter((m) => m.action === "DataUnpublished" && m.publisherId === chatA);
      assert.equal(dataGone.length, 1, `[${p.e2eName}] one DataUnpublished for A's channel`);
    }
    const chatGoneMs = Date.now() - tLeave;
    await whepEnded(w, 10000, "the WHEP session of A's video ended with it");
    await until(async () => (await metrics(ctx.node2)).relayed === 0, 8000, "node 2 relays nothing of A any more");
    console.log(`A left node 1: its channel dropped on node 2 after ${chatGoneMs} ms; WHEP ended and relays gone ${Date.now() - tLeave} ms after`);
    // B and C (both on node 2) still chat.
    assert.ok(await b.evaluate(() => window.rheomeshControls.sendChat("still here")));
    await chatArrives(c, chatB, ["still here"], 10000, "C gets B's line after A left");
    for (const p of [b, c]) await expectNoAppError(p);
  } finally {
    await pages.closeAll();
  }
});

test("WHEP on node 2 plays a WHIP stream published on node 1, and ends with it", { timeout: 90000 }, async () => {
  const room = uniqueRoom("cwhep");
  const pub = await openPage(ctx.browser, ctx.node1.base, "/", "WHIP@n1");
  const viewer = await openPage(ctx.browser, ctx.node2.base, "/", "WHEP@n2");
  try {
    // The first test's pages may still be leaving node 2.
    await until(async () => (await metrics(ctx.node2)).rooms === 0, 10000, "node 2 has no room");
    const ids = await whipPublish(pub, `/whip/${room}/cam`, TOKEN);
    // Node 2 learns of the stream through Redis (it has no participant of the room).
    const refused = await viewer.evaluate(
      async (room) => (await fetch(`/whep/${room}/cam`, { method: "POST", headers: { "Content-Type": "application/sdp" }, body: "v=0\r\n" })).status,
      room,
    );
    assert.equal(refused, 401, "no token: refused");
    const idle = await metrics(ctx.node2);
    assert.equal(idle.relayed, 0, "nothing relayed for a refused viewer");
    assert.equal(idle.rooms, 0, "no room created for a refused viewer");

    const tView = Date.now();
    const location = (await whepView(viewer, `/whep/${room}/cam`, TOKEN)).location;
    assert.match(location, new RegExp(`^/whep/${room}/cam/[0-9a-f]{32}$`));
    await whepDecodes(viewer, 1, 15000, "WHEP viewer on node 2 decodes");
    const firstFrameMs = Date.now() - tView;
    // Well past the linger time: the session holds its relays.
    await whepDecodes(viewer, 45, 15000, "WHEP viewer on node 2 keeps decoding");
    const m = await metrics(ctx.node2);
    assert.equal(m.relayed, 2, `node 2 relays the stream's two tracks: ${JSON.stringify(m)}`);
    assert.equal(m.uses, 2, `the WHEP session uses both: ${JSON.stringify(m)}`);
    assert.equal(m.participants, 1, `the viewer keeps the room on node 2: ${JSON.stringify(m)}`);
    const audio = await viewer.evaluate(async () => {
      const report = await window.whip.pc.getStats();
      return [...report.values()].find((r) => r.type === "inbound-rtp" && r.kind === "audio")?.packetsReceived ?? 0;
    });
    assert.ok(audio > 0, `audio arrives too (${audio} packets)`);
    console.log(`WHEP on node 2 of WHIP stream cam (node 1, tracks ${ids.video.slice(0, 8)}…): first frame ${firstFrameMs} ms after the POST`);

    // The WHIP session ends on node 1: the WHEP session on node 2 ends, its room and relays go.
    const tDelete = Date.now();
    const status = await pub.evaluate(
      async (token) => (await fetch(window.whip.location, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } })).status,
      TOKEN,
    );
    assert.equal(status, 200);
    await whepEnded(viewer, 10000, "the WHEP session on node 2 ended with the stream");
    const endedMs = Date.now() - tDelete;
    await until(
      async () => {
        const m = await metrics(ctx.node2);
        return m.relayed === 0 && m.participants === 0 && m.rooms === 0;
      },
      8000,
      "node 2: no relay, no participant, no room",
    );
    console.log(`WHIP DELETE on node 1: WHEP session on node 2 gone after ${endedMs} ms; node 2 empty after ${Date.now() - tDelete} ms`);
  } finally {
    await closePage(pub);
    await closePage(viewer);
  }
});
