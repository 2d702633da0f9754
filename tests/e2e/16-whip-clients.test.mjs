// 16. Third-party browser WHIP / WHEP clients from npm against the example server (started with
//     --whip-token; both clients get the token through their own option):
//     - @eyevinn/whip-web-client publishes the page's fake camera + microphone to
//       /whip/{room}/cam (`authkey`); a WebSocket participant of the room shows a tile named
//       `cam` and decodes video and audio; destroy() sends DELETE and the participant gets
//       `Unpublished` for both tracks.
//     - the WHEPClient of `whip-whep` (medooze) plays the stream into a <video> of another page
//       (inbound-rtp framesDecoded and getVideoPlaybackQuality grow), restarts ICE over PATCH
//       (If-Match: *) and keeps playing; a second one plays it from a page of another origin.
//     - the eyevinn client publishes from a page of another origin too.
//     Every WHIP/WHEP request of the pages is captured (method, headers, status, bodies),
//     printed, and asserted. What these clients do that the server refuses, and which the test
//     pins: their trickle PATCHes carry no If-Match (eyevinn sends an `ETag` request header;
//     whip-whep sends If-Match only after an ICE restart), so the server answers 428 and the
//     candidates are not trickled; media flows anyway (the server is ICE-lite: the browser's
//     checks reach the candidate of its answer).
//
//     The clients are bundled for the page by esbuild (a devDependency) in memory when the file
//     starts, from what `npm ci` installed, and injected with page.addScriptTag into pages of
//     the example server (same origin) or of a blank page this file serves on another port.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import {
  closePage, expectGrowth, expectNoAppError, launchBrowser, openPage, socketMessages, startServer, uniqueRoom,
  until, waitFor,
} from "./helpers.mjs";

const TOKEN = "e2e-whip-clients-token";
let server;
let browser;
let bundle;
let foreign; // { server, base }: a blank page on another port, for the cross-origin cases

/** The two clients as one IIFE script: window.WHIPClient (eyevinn), window.WHEPClient (medooze). */
async function bundleClients() {
  const result = await build({
    stdin: {
      contents: [
        'import { WHIPClient } from "@eyevinn/whip-web-client";',
        'import { WHEPClient } from "whip-whep/whep.js";',
        "window.WHIPClient = WHIPClient;",
        "window.WHEPClient = WHEPClient;",
      ].join("\n"),
      resolveDir: fileURLToPath(new URL(".", import.meta.url)),
      sourcefile: "whip-clients-entry.js",
    },
    bundle: true,
    format: "iife",
    platform: "browser",
    target: "chrome120",
    write: false,
    logLevel: "silent",
  });
  return result.outputFiles[0].text;
}

before(async () => {
  bundle = await bundleClients();
  server = await startServer({ args: ["--whip-token", TOKEN] });
  browser = await launchBrowser();
  const blank = createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/html" });
    res.end("<!doctype html><title>elsewhere</title><body></body>");
  });
  await new Promise((resolve) => blank.listen(0, "127.0.0.1", resolve));
  foreign = { server: blank, base: `http://127.0.0.1:${blank.address().port}` };
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
  await new Promise((resolve) => (foreign?.server ? foreign.server.close(resolve) : resolve()));
  const out = server?.output().trim() ?? "";
  if (/\b(ERROR|panicked)\b/.test(out)) console.log(`server output:\n${out}`);
});

/**
 * Records every request page `p` makes to /whip/ or /whep/ (CORS preflights are not seen):
 * { method, path, at, contentType, auth ("token" / "none" / what it was), ifMatch, etag (an
 * `ETag` request header: not standard), body, status or failure, responseEtag, responseBody }.
 * Returns the live array; headers and bodies arrive asynchronously (see `settled`).
 */
function captureHttp(p) {
  const log = [];
  const byRequest = new Map();
  p.on("request", (req) => {
    const url = new URL(req.url());
    if (!/^\/(whip|whep)\//.test(url.pathname)) return;
    const entry = { method: req.method(), path: url.pathname, at: Date.now(), status: null };
    log.push(entry);
    byRequest.set(req, entry);
    entry.ready = req.allHeaders().then((h) => {
      entry.contentType = h["content-type"] ?? null;
      entry.auth = h.authorization === `Bearer ${TOKEN}` ? "token" : (h.authorization ?? "none");
      entry.ifMatch = h["if-match"] ?? null;
      entry.etag = h.etag ?? null;
      entry.body = req.postData() ?? "";
    });
  });
  p.on("response", (res) => {
    const entry = byRequest.get(res.request());
    if (!entry) return;
    entry.status = res.status();
    entry.responseEtag = res.headers().etag ?? null;
    entry.answered = res.text().then((t) => (entry.responseBody = t), () => (entry.responseBody = null));
  });
  p.on("requestfailed", (req) => {
    const entry = byRequest.get(req);
    if (entry) entry.failure = req.failure()?.errorText ?? "failed";
  });
  return log;
}

/** The captured requests once their headers, statuses and bodies are in. */
async function settled(log) {
  await until(() => log.every((e) => e.status !== null || e.failure), 5000, "every WHIP/WHEP request answered");
  await Promise.all(log.flatMap((e) => [e.ready, e.answered]));
  return log;
}

/** A request's path with its resource id shortened. */
const short = (path) => path.replace(/[0-9a-f]{32}$/, "<id>");

/** A one-line summary of the captured requests, for the log. */
function summary(log) {
  return log
    .map((e) => {
      const h = [e.contentType && `type=${e.contentType}`, `auth=${e.auth}`, e.ifMatch && `If-Match=${e.ifMatch}`, e.etag && `ETag=${e.etag}`];
      return `+${e.at - log[0].at} ms ${e.method} ${short(e.path)} [${h.filter(Boolean).join(" ")}] -> ${e.status ?? e.failure ?? "pending"}`;
    })
    .join("\n  ");
}

/** Injects the bundle into page `p`. */
async function inject(p) {
  await p.addScriptTag({ content: bundle });
  assert.equal(await p.evaluate(() => typeof window.WHIPClient + typeof window.WHEPClient), "functionfunction");
}

/**
 * In page `p`: plays `url` with a WHEPClient (recvonly audio + video, its usual setup) into a
 * muted <video>; resolves with the resource URL once view() returned. Leaves `window.whep` =
 * { client, pc, video } and `window.whepCounters()`: video frames decoded (inbound-rtp), frames
 * the <video> got (getVideoPlaybackQuality), audio packets received.
 */
function whepPlay(p, url) {
  return p.evaluate(
    async ({ url, token }) => {
      const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addTransceiver("video", { direction: "recvonly" });
      const video = document.createElement("video");
      video.muted = true;
      video.autoplay = true;
      document.body.append(video);
      pc.ontrack = (event) => {
        if (event.track.kind === "video") video.srcObject = event.streams[0] ?? new MediaStream([event.track]);
      };
      window.whepCounters = async () => {
        const out = { decoded: 0, shown: video.getVideoPlaybackQuality().totalVideoFrames, audio: 0, width: video.videoWidth };
        for (const r of (await pc.getStats()).values()) {
          if (r.type === "inbound-rtp" && r.kind === "video") out.decoded = r.framesDecoded ?? 0;
          if (r.type === "inbound-rtp" && r.kind === "audio") out.audio = r.packetsReceived ?? 0;
        }
        return out;
      };
      const client = new window.WHEPClient();
      window.whep = { client, pc, video };
      await client.view(pc, url, token);
      return client.resourceURL.href;
    },
    { url, token: TOKEN },
  );
}

/** Waits until the WHEP viewer in `p` decodes and shows `delta` more frames and gets `delta`
 *  more audio packets; returns its counters then. */
async function whepPlays(p, delta, timeoutMs) {
  const start = await p.evaluate(() => window.whepCounters());
  return waitFor(
    p,
    async ({ start, delta }) => {
      const now = await window.whepCounters();
      return now.decoded >= start.decoded + delta && now.shown >= start.shown + delta && now.audio >= start.audio + delta && now;
    },
    timeoutMs,
    `the WHEP viewer decodes and shows ${delta} more frames and gets ${delta} more audio packets (from ${JSON.stringify(start)})`,
    { start, delta },
  );
}

/** In page `p`: publishes camera + microphone with the eyevinn WHIPClient to `url` (the token
 *  as its authkey; no STUN server: its default is a public one, and only loopback is used
 *  here). Resolves with the track ids (the publisher ids) and the resource URL. */
function eyevinnPublish(p, url) {
  return p.evaluate(
    async ({ url, token }) => {
      const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
      const client = new window.WHIPClient({ endpoint: url, opts: { authkey: token, iceServers: [] } });
      window.whipClient = client;
      await client.ingest(stream);
      return {
        audio: stream.getAudioTracks()[0].id,
        video: stream.getVideoTracks()[0].id,
        resource: await client.getResourceUrl(),
      };
    },
    { url, token: TOKEN },
  );
}

/** Waits until `v` (a room participant) has `Unpublished` for both ids and no tile left. */
async function expectUnpublished(v, ids) {
  await until(
    async () => {
      const gone = (await socketMessages(v)).filter((m) => m.action === "Unpublished").map((m) => m.publisherId);
      return gone.includes(ids.audio) && gone.includes(ids.video);
    },
    5000,
    "Unpublished for both WHIP tracks",
  );
  await waitFor(v, () => window.rheomeshApp.tracks === 0 && window.rheomeshApp.tiles === 0, 5000, "the viewer drops the WHIP tile");
}

test("@eyevinn/whip-web-client publishes; a room participant and whip-whep's WHEPClient (same and cross origin) watch; WHEP ICE restart; destroy() DELETEs", { timeout: 90000 }, async () => {
  const room = uniqueRoom("whipc");
  const endpoint = `/whip/${room}/cam`;
  const v = await openPage(browser, server.base, `/?room=${room}&name=Viewer`, "Viewer");
  const w = await openPage(browser, server.base, "/", "eyevinn WHIP");
  const whipLog = captureHttp(w);
  let wv;
  let xv;
  try {
    await waitFor(v, () => window.rheomeshApp.joined, 10000, "the viewer joined");
    await inject(w);

    const ids = await eyevinnPublish(w, server.base + endpoint);
    assert.match(ids.resource, new RegExp(`^${server.base}${endpoint}/[0-9a-f]{32}$`));

    await waitFor(v, () => window.rheomeshApp.tracks === 2, 15000, "the viewer receives the WHIP tracks");
    await waitFor(v, () => document.querySelector("#remote .tile")?.dataset.name === "cam", 5000, "a tile named cam");
    assert.equal(await v.evaluate(() => window.rheomeshApp.tiles), 1);
    await expectGrowth(v, ids.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectGrowth(v, ids.audio, "packetsReceived", { minDelta: 20, timeoutMs: 10000 });

    // WHEP, same origin: plays into a <video>, restarts ICE over PATCH, keeps playing.
    wv = await openPage(browser, server.base, "/", "WHEP");
    const whepLog = captureHttp(wv);
    await inject(wv);
    const whepResource = await whepPlay(wv, `${server.base}/whep/${room}/cam`);
    assert.match(whepResource, new RegExp(`^${server.base}/whep/${room}/cam/[0-9a-f]{32}$`));
    const played = await whepPlays(wv, 20, 15000);
    // Its first candidates were trickled (end-of-candidates too) before the restart.
    await until(() => whepLog.some((e) => e.method === "PATCH" && e.status !== null && e.body?.includes("a=end-of-candidates")), 5000, "the WHEP client's first end-of-candidates PATCH");
    const beforeRestart = whepLog.length;
    const restart = await wv.evaluate(async () => {
      const before = window.whep.client.iceUsername;
      await window.whep.client.restart();
      return { before, after: window.whep.client.iceUsername, etag: window.whep.client.etag, remote: window.whep.pc.remoteDescription.sdp };
    });
    assert.notEqual(restart.after, restart.before);
    assert.ok(restart.etag, "the restart's ETag");
    await waitFor(
      wv,
      async (ufrag) => {
        for (const r of (await window.whep.pc.getStats()).values()) {
          if (r.type === "transport" && r.iceLocalUsernameFragment === ufrag && r.iceState === "connected") return true;
        }
        return false;
      },
      15000,
      "the WHEP viewer connected again on its new ICE credentials",
      restart.after,
    );
    const replayed = await whepPlays(wv, 20, 10000);
    // After the restart the client trickles its new candidates with If-Match: the new ETag.
    await until(
      () => whepLog.slice(beforeRestart).some((e) => e.method === "PATCH" && e.ifMatch === restart.etag && e.status === 204),
      5000,
      "a trickle PATCH with the restart's ETag answered 204",
    );

    // WHEP, cross origin: a page of another origin (a blank page on another port) plays it.
    xv = await openPage(browser, foreign.base, "/", "WHEP elsewhere");
    const crossLog = captureHttp(xv);
    await inject(xv);
    await whepPlay(xv, `${server.base}/whep/${room}/cam`);
    const crossPlayed = await whepPlays(xv, 20, 15000);

    // destroy(): DELETE; the participant gets Unpublished for both tracks and drops the tile.
    await w.evaluate(() => window.whipClient.destroy());
    await expectUnpublished(v, ids);
    // The WHEP sessions ended with their stream: the clients' stop() DELETEs find nothing.
    await wv.evaluate(() => window.whep.client.stop());
    await xv.evaluate(() => window.whep.client.stop());

    await Promise.all([settled(whipLog), settled(whepLog), settled(crossLog)]);
    console.log(`@eyevinn/whip-web-client:\n  ${summary(whipLog)}`);
    for (const e of whipLog.filter((e) => e.method === "PATCH")) console.log(`    PATCH body ${JSON.stringify(e.body)}`);
    console.log(`whip-whep WHEPClient (same origin):\n  ${summary(whepLog)}`);
    for (const e of whepLog.filter((e) => e.method === "PATCH")) {
      console.log(`    PATCH body ${JSON.stringify(e.body)}${e.status === 200 ? ` answered ${JSON.stringify(e.responseBody)}` : ""}`);
    }
    console.log(`whip-whep WHEPClient (from ${foreign.base}):\n  ${summary(crossLog)}`);
    console.log(`WHEP played ${JSON.stringify(played)}, after the ICE restart ${JSON.stringify(replayed)}, cross origin ${JSON.stringify(crossPlayed)}`);

    // What the eyevinn client sent: OPTIONS (it reads Access-Control-Allow-Methods for PATCH
    // to decide on trickle), the offer without candidates, a PATCH per trickled candidate,
    // DELETE; each with the token.
    const [options, post, ...rest] = whipLog;
    assert.deepEqual([options.method, short(options.path), options.auth, options.status], ["OPTIONS", endpoint, "token", 204]);
    assert.deepEqual([post.method, post.contentType, post.auth, post.status], ["POST", "application/sdp", "token", 201]);
    assert.doesNotMatch(post.body, /a=candidate:/, "a trickle offer");
    // It adds its tracks with addTrack and offers with offerToReceiveAudio/Video false, which
    // makes Chromium's m-lines sendonly; the server answers recvonly.
    const direction = (sdp) => sdp.match(/^a=(sendrecv|sendonly|recvonly|inactive)\r?$/gm)?.map((l) => l.trim());
    assert.deepEqual(direction(post.body), ["a=sendonly", "a=sendonly"]);
    assert.deepEqual(direction(post.responseBody), ["a=recvonly", "a=recvonly"]);
    const patches = rest.filter((e) => e.method === "PATCH");
    assert.ok(patches.length >= 1, "the eyevinn client trickles candidates");
    for (const e of patches) {
      assert.equal(`${server.base}${e.path}`, ids.resource);
      assert.equal(e.contentType, "application/trickle-ice-sdpfrag");
      assert.equal(e.auth, "token");
      // It names the ETag in an `ETag` request header, not `If-Match`: the server answers
      // 428 (RFC 9725: a trickle PATCH carries If-Match) and the client stops trickling.
      assert.equal(e.ifMatch, null);
      assert.equal(e.etag, post.responseEtag);
      assert.equal(e.status, 428);
    }
    const del = rest.at(-1);
    assert.deepEqual([del.method, `${server.base}${del.path}`, del.auth, del.status], ["DELETE", ids.resource, "token", 200]);
    assert.equal(rest.length, patches.length + 1, "nothing but PATCHes and the DELETE after the POST");

    // What the WHEPClient sent: the offer without candidates; trickle PATCHes without
    // If-Match (428: it throws, unhandled); the restart's PATCH with If-Match: * and only the
    // new credentials (200, the server's new credentials and candidates back); the new
    // candidates with If-Match: that ETag (204); DELETE (404: the session ended with the stream).
    for (const log of [whepLog, crossLog]) {
      const [post, ...rest] = log;
      assert.deepEqual([post.method, post.contentType, post.auth, post.status], ["POST", "application/sdp", "token", 201]);
      assert.doesNotMatch(post.body, /a=candidate:/);
      const del = rest.pop();
      assert.deepEqual([del.method, del.auth, del.status], ["DELETE", "token", 404]);
      for (const e of rest) {
        assert.equal(e.method, "PATCH");
        assert.equal(e.contentType, "application/trickle-ice-sdpfrag");
        assert.equal(e.auth, "token");
      }
    }
    const trickled = whepLog.slice(1, beforeRestart);
    assert.ok(trickled.length >= 1);
    for (const e of [...trickled, ...crossLog.slice(1, -1)]) assert.deepEqual([e.ifMatch, e.status], [null, 428]);
    const [restartPatch, ...afterRestart] = whepLog.slice(beforeRestart, -1);
    assert.deepEqual([restartPatch.ifMatch, restartPatch.status], ["*", 200]);
    assert.equal(restartPatch.body, `a=ice-ufrag:${restart.after}\r\na=ice-pwd:${/a=ice-pwd:(\S+)/.exec(restartPatch.body)[1]}\r\n`);
    assert.match(restartPatch.responseBody, /^a=ice-ufrag:\S+\r\na=ice-pwd:\S+\r\n/);
    assert.equal(restartPatch.responseEtag, restart.etag);
    assert.ok(afterRestart.length >= 1);
    for (const e of afterRestart) assert.deepEqual([e.ifMatch, e.status], [restart.etag, 204]);
    // The client rewrote its remote description with the server's new credentials.
    const serverUfrag = /a=ice-ufrag:(\S+)/.exec(restartPatch.responseBody)[1];
    assert.ok(restart.remote.includes(`a=ice-ufrag:${serverUfrag}\r\n`));

    // The only page errors: the WHEPClient's own unhandled "Request rejected with status 428"
    // (its trickle PATCHes), and the console's lines for the 428s and 404s. The WHEP pages saw
    // no CORS failure (they would read "Failed to fetch").
    for (const p of [w, wv, xv]) {
      const unexpected = p.e2eErrors.filter(
        (e) => e !== "pageerror: Request rejected with status 428" && !/status of (428|404) /.test(e),
      );
      assert.deepEqual(unexpected, [], `[${p.e2eName}] page errors`);
    }
    await expectNoAppError(v);
  } finally {
    if (xv) await closePage(xv);
    if (wv) await closePage(wv);
    await closePage(w);
    await closePage(v);
  }
});

test("@eyevinn/whip-web-client publishes from a page of another origin (no trickle: CORS hides Access-Control-Allow-Methods)", { timeout: 60000 }, async () => {
  const room = uniqueRoom("whipx");
  const endpoint = `/whip/${room}/away`;
  const v = await openPage(browser, server.base, `/?room=${room}&name=Viewer`, "Viewer");
  const w = await openPage(browser, foreign.base, "/", "eyevinn WHIP elsewhere");
  const log = captureHttp(w);
  try {
    await waitFor(v, () => window.rheomeshApp.joined, 10000, "the viewer joined");
    await inject(w);
    const ids = await eyevinnPublish(w, server.base + endpoint);
    assert.match(ids.resource, new RegExp(`^${server.base}${endpoint}/[0-9a-f]{32}$`));
    await waitFor(v, () => document.querySelector("#remote .tile")?.dataset.name === "away", 15000, "a tile named away");
    await expectGrowth(v, ids.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });
    await expectGrowth(v, ids.audio, "packetsReceived", { minDelta: 20, timeoutMs: 10000 });
    await w.evaluate(() => window.whipClient.destroy());
    await expectUnpublished(v, ids);

    await settled(log);
    console.log(`@eyevinn/whip-web-client (from ${foreign.base}):\n  ${summary(log)}`);
    // Across origins the OPTIONS answer's Access-Control-Allow-Methods is not an exposed header,
    // so the client sees no PATCH there and sends its candidates in the offer instead.
    assert.deepEqual(
      log.map((e) => [e.method, e.auth, e.status]),
      [["OPTIONS", "token", 204], ["POST", "token", 201], ["DELETE", "token", 200]],
    );
    assert.equal(log[1].contentType, "application/sdp");
    assert.match(log[1].body, /a=candidate:/, "a non-trickle offer");
    assert.deepEqual(w.e2eErrors, [], "no page errors");
    await expectNoAppError(v);
  } finally {
    await closePage(w);
    await closePage(v);
  }
});
