// 3. Three publishing participants in one room each receive the other two (tiles, decoded
//    video, audio); when one leaves, the others drop its tiles, its entries in the page state,
//    and the server takes its tracks out of their subscribe transports.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  appState, closePage, expectGrowth, expectNoAppError, openPage, useSuite, uniqueRoom, waitFor, waitPublished,
} from "./helpers.mjs";

const suite = useSuite();

// Track ids carried by active (not port 0, not inactive) m-lines of the subscribe transport's
// current remote description: what the server is forwarding to this page.
function activeRemoteMsids(page) {
  return page.evaluate(() => {
    const sdp = window.rheomeshControls.transports().subscribe?.peerConnection.remoteDescription?.sdp ?? "";
    const ids = [];
    for (const section of sdp.split(/\r?\nm=/).slice(1)) {
      if (/^\w+ 0 /.test(section)) continue;
      if (/\r?\na=inactive/.test(section)) continue;
      const m = /\r?\na=msid:\S+ (\S+)/.exec(section);
      if (m) ids.push(m[1]);
    }
    return ids;
  });
}

test("three participants see each other; a leaver's tiles and subscriptions go away", { timeout: 120000 }, async () => {
  const room = uniqueRoom("three");
  const names = ["P1", "P2", "P3"];
  const pages = [];
  for (const name of names) pages.push(await openPage(suite.browser, suite.base, `/?room=${room}&autopublish=1`, name));
  try {
    const ids = [];
    for (const page of pages) ids.push(await waitPublished(page));
    const all = ids.flatMap((x) => [x.audio, x.video]);
    assert.equal(new Set(all).size, 6, `6 distinct publisher ids: ${JSON.stringify(ids)}`);

    // Everyone gets the other two participants' audio + video.
    for (const [i, page] of pages.entries()) {
      const others = ids.filter((_, j) => j !== i).flatMap((x) => [x.audio, x.video]).sort();
      await waitFor(page, () => window.rheomeshApp.tracks === 4, 20000, `${names[i]} has 4 tracks`);
      const state = await appState(page);
      assert.deepEqual([...state.subscribed].sort(), others, `${names[i]} subscribed to the other two`);
      assert.equal(state.tiles, 2, `${names[i]} shows a tile per participant (camera and microphone together)`);
      const active = await activeRemoteMsids(page);
      for (const id of others) assert.ok(active.includes(id), `${names[i]}'s subscribe SDP carries ${id}: ${JSON.stringify(active)}`);
    }
    for (const [i, page] of pages.entries()) {
      for (const [j, other] of ids.entries()) {
        if (i === j) continue;
        await expectGrowth(page, other.video, "framesDecoded", { minDelta: 5, timeoutMs: 15000 });
        await expectGrowth(page, other.audio, "packetsReceived", { minDelta: 10, timeoutMs: 10000 });
      }
    }

    // P3 leaves (the page's Leave button).
    const leaver = ids[2];
    const gone = [leaver.audio, leaver.video];
    await pages[2].click("#leave");
    for (const [i, page] of pages.slice(0, 2).entries()) {
      const other = ids[1 - i];
      await waitFor(page, () => window.rheomeshApp.tracks === 2, 10000, `${names[i]} drops P3's tracks`);
      const state = await appState(page);
      assert.deepEqual([...state.subscribed].sort(), [other.audio, other.video].sort(), `${names[i]} keeps only the remaining peer`);
      assert.equal(state.tiles, 1, `${names[i]} keeps one tile`);
      for (const id of gone) {
        assert.equal(state.stats[id], undefined, `${names[i]} has no stats for ${id}`);
        assert.equal(await page.locator(`#remote [data-publisher-id="${id}"]`).count(), 0, `${names[i]} has no tile for ${id}`);
      }
      // The server renegotiated P3's tracks out of this subscribe transport.
      await waitFor(
        page,
        (gone) => {
          const sdp = window.rheomeshControls.transports().subscribe?.peerConnection.remoteDescription?.sdp ?? "";
          const active = [];
          for (const section of sdp.split(/\r?\nm=/).slice(1)) {
            if (/^\w+ 0 /.test(section) || /\r?\na=inactive/.test(section)) continue;
            const m = /\r?\na=msid:\S+ (\S+)/.exec(section);
            if (m) active.push(m[1]);
          }
          return gone.every((id) => !active.includes(id)) && window.rheomeshControls.transports().subscribe.peerConnection.signalingState === "stable";
        },
        10000,
        `${names[i]}'s subscribe transport no longer carries P3's tracks`,
        gone,
      );
      console.log(`${names[i]} active remote msids after P3 left: ${JSON.stringify(await activeRemoteMsids(page))}`);
      // The remaining pair still flows.
      await expectGrowth(page, other.video, "framesDecoded", { minDelta: 5, timeoutMs: 10000 });
      await expectNoAppError(page);
    }
    assert.equal((await appState(pages[2])).joined, false, "P3 left");
  } finally {
    for (const page of pages) await closePage(page);
  }
});
