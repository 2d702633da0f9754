// 11. Data channels: the example page's room chat. Each page publishes a data channel when it
//     joins (the client's publishData → Offer + PublishData) and subscribes to the others'
//     (DataPublished → SubscribeData → the server's offer → subscribeData). Three pages: what
//     each sends arrives at the other two, in order; a page that leaves is dropped from the
//     others' peers (DataUnpublished) and the rest keep chatting.
import assert from "node:assert/strict";
import { test } from "node:test";
import { closePage, expectNoAppError, openPage, uniqueRoom, until, useSuite, waitFor } from "./helpers.mjs";

const suite = useSuite();

/** The page's chat state (window.rheomeshApp.chat). */
const chat = (page) => page.evaluate(() => structuredClone(window.rheomeshApp.chat));

test("three pages chat over data channels", { timeout: 90000 }, async () => {
  const room = uniqueRoom("chat");
  const names = ["A", "B", "C"];
  const pages = [];
  try {
    for (const n of names) pages.push(await openPage(suite.browser, suite.base, `/?room=${room}`, `chat-${n}`));
    for (const p of pages) {
      await waitFor(p, () => window.rheomeshApp.chat.ready && window.rheomeshApp.chat.peers.length === 2, 20000, "chat open with two peers");
    }
    const ids = await Promise.all(pages.map(async (p) => (await chat(p)).id));
    assert.equal(new Set(ids).size, 3, "three distinct data publisher ids");

    // Each page sends three messages; the others get them all, in order, from the sender's id.
    for (const [i, p] of pages.entries()) {
      for (let k = 0; k < 3; k++) {
        const sent = await p.evaluate((text) => window.rheomeshControls.sendChat(text), `${names[i]} says ${k}`);
        assert.ok(sent, `${names[i]} could send`);
      }
    }
    for (const [i, p] of pages.entries()) {
      await until(async () => (await chat(p)).messages.length >= 9, 15000, `${names[i]} has 9 messages`);
      const { messages } = await chat(p);
      for (const [j, from] of ids.entries()) {
        const got = messages.filter((m) => m.from === from).map((m) => m.text);
        assert.deepEqual(got, [0, 1, 2].map((k) => `${names[j]} says ${k}`), `${names[i]} got ${names[j]}'s messages in order`);
      }
    }

    // C leaves: A and B drop it and still chat.
    await closePage(pages.pop());
    for (const p of pages) {
      await waitFor(p, (gone) => !window.rheomeshApp.chat.peers.includes(gone), 20000, "C's channel dropped", ids[2]);
    }
    assert.ok(await pages[0].evaluate(() => window.rheomeshControls.sendChat("still here")));
    await until(async () => (await chat(pages[1])).messages.some((m) => m.text === "still here" && m.from === ids[0]), 10000, "B gets A's message after C left");
    for (const p of pages) await expectNoAppError(p);
    console.log(`chat: 3 pages, 9 messages each, ids ${ids.map((i) => i.slice(0, 8)).join(", ")}`);
  } finally {
    for (const p of pages) await closePage(p);
  }
});
