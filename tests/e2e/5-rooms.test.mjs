// 5. Rooms are isolated: room 1's publisher reaches room 1's viewer only; a publisher in room 2
//    and a late viewer in room 2 never get a `Published` for room 1's ids (neither by broadcast
//    nor in the SubscriberInit reply) and room 1 never learns room 2's ids.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  appState, closePage, expectGrowth, expectNoAppError, openPage, useSuite, socketMessages, uniqueRoom, waitFor, waitPublished,
} from "./helpers.mjs";

const suite = useSuite();

const publishedIds = (messages) => messages.filter((m) => m.action === "Published").flatMap((m) => m.publisherIds);

test("two rooms are isolated", { timeout: 90000 }, async () => {
  const room1 = uniqueRoom("room1");
  const room2 = uniqueRoom("room2");
  // X publishes in room 2 first, so a leak from room 1 would reach it as a broadcast.
  const x = await openPage(suite.browser, suite.base, `/?room=${room2}&autopublish=1`, "X(room2)");
  const xIds = await waitPublished(x);
  const a = await openPage(suite.browser, suite.base, `/?room=${room1}&autopublish=1`, "A(room1)");
  const v = await openPage(suite.browser, suite.base, `/?room=${room1}`, "V(room1)");
  let y = null;
  try {
    const aIds = await waitPublished(a);
    const room1Ids = [aIds.audio, aIds.video];
    const room2Ids = [xIds.audio, xIds.video];

    // Room 1's viewer gets A's tracks and decodes them.
    await waitFor(v, () => window.rheomeshApp.tracks === 2, 15000, "V has A's 2 tracks");
    await expectGrowth(v, aIds.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    assert.deepEqual([...(await appState(v)).subscribed].sort(), [...room1Ids].sort(), "V subscribed to A only");

    // Y joins room 2 after A published: a leak would show in its SubscriberInit reply.
    y = await openPage(suite.browser, suite.base, `/?room=${room2}`, "Y(room2)");
    await waitFor(y, () => window.rheomeshApp.tracks === 2, 15000, "Y has X's 2 tracks");
    await expectGrowth(y, xIds.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    // Both room-2 sockets have had their SubscriberInit reply (a Published, possibly empty).
    for (const page of [x, y]) {
      await waitFor(page, () => window.__e2eSocket.some((m) => m.action === "Published"), 5000, "SubscriberInit reply");
    }

    const seen = {
      x: publishedIds(await socketMessages(x)),
      y: publishedIds(await socketMessages(y)),
      a: publishedIds(await socketMessages(a)),
      v: publishedIds(await socketMessages(v)),
    };
    for (const id of room1Ids) {
      assert.ok(seen.v.includes(id), `V was told about A's ${id}`);
      assert.ok(!seen.x.includes(id), `X (room 2) never told about room 1's ${id}: ${JSON.stringify(seen.x)}`);
      assert.ok(!seen.y.includes(id), `Y (room 2) never told about room 1's ${id}: ${JSON.stringify(seen.y)}`);
    }
    for (const id of room2Ids) {
      assert.ok(seen.y.includes(id), `Y was told about X's ${id}`);
      assert.ok(!seen.a.includes(id), `A (room 1) never told about room 2's ${id}`);
      assert.ok(!seen.v.includes(id), `V (room 1) never told about room 2's ${id}`);
    }

    const xs = await appState(x);
    assert.equal(xs.tiles, 0, "X (alone publishing in room 2) shows no remote tiles");
    assert.deepEqual(xs.subscribed, [], "X subscribed to nothing");
    assert.equal(await x.locator("#remote .tile").count(), 0, "X's page has no remote tile elements");
    assert.deepEqual([...(await appState(y)).subscribed].sort(), [...room2Ids].sort(), "Y subscribed to X only");
    assert.equal((await appState(a)).tiles, 0, "A (alone publishing in room 1) shows no remote tiles");
    for (const page of [x, y, a, v]) await expectNoAppError(page);
  } finally {
    for (const page of [x, a, v, y]) if (page) await closePage(page);
  }
});
