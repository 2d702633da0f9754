// 12. The example page as people use it: a tile per participant (camera and microphone
//     together, tied by the msid stream id) labelled with the name chosen on joining, also for
//     a late joiner; who is speaking (audio level); mute and unmute of camera and microphone
//     (the others see it and get silence and black frames); switching camera and microphone
//     while publishing (same publisher ids, the viewer keeps decoding); the record button (the
//     server records with --record-dir; ffprobe reads the files). Bad SetName / SetMuted get
//     errors.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  appState, closePage, expectGrowth, expectNoAppError, launchBrowser, openPage, socketMessages, startServer,
  uniqueRoom, until, waitFor, waitPublished,
} from "./helpers.mjs";

const dir = mkdtempSync(join(tmpdir(), "rheomesh-page-"));
const recordPort = 20000 + 2 * Math.floor(Math.random() * 10000);
let server;
let browser;
// Chromium with three fake cameras (and its three fake microphones), for the device test. Its
// second fake camera is a depth camera (16-bit grey) that never feeds an RTCRtpSender; the
// first and third are ordinary ones.
let cameras;

before(async () => {
  server = await startServer({ args: ["--record-dir", dir, "--record-port", String(recordPort)] });
  browser = await launchBrowser();
  cameras = await launchBrowser({ args: ["--use-fake-device-for-media-stream=device-count=3"] });
});

after(async () => {
  await browser?.close().catch(() => {});
  await cameras?.close().catch(() => {});
  await server?.stop();
  const out = server?.output().trim() ?? "";
  if (/\b(ERROR|panicked)\b/.test(out)) console.log(`server output:\n${out}`);
  rmSync(dir, { recursive: true, force: true });
});

/** The remote tiles of `page`: name, classes, and the publisher ids shown in each. */
function tiles(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll("#remote .tile")].map((t) => ({
      name: t.dataset.name,
      classes: [...t.classList],
      ids: [...t.querySelectorAll(".media[data-publisher-id]")].map((m) => m.dataset.publisherId).sort(),
      video: t.querySelectorAll("video").length,
      audio: t.querySelectorAll("audio").length,
    })),
  );
}

/** Mean luma (0-255) of the remote video of `publisherId` on `page`, null before a frame. */
function brightness(page, publisherId) {
  return page.evaluate((id) => {
    const v = document.querySelector(`#remote [data-publisher-id="${id}"] video`);
    if (!v || v.videoWidth === 0) return null;
    const c = document.createElement("canvas");
    c.width = 64;
    c.height = 36;
    const g = c.getContext("2d");
    g.drawImage(v, 0, 0, c.width, c.height);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let sum = 0;
    for (let i = 0; i < d.length; i += 4) sum += 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
    return sum / (d.length / 4);
  }, publisherId);
}

/** Sends `msg` on a WebSocket of its own in `room` from `page`; resolves with the reply. */
function rawReply(page, room, msg) {
  return page.evaluate(
    ({ room, msg }) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`${location.origin.replace("http", "ws")}/socket?room=${room}`);
        const timer = setTimeout(() => reject(new Error("no reply")), 5000);
        ws.onopen = () => ws.send(JSON.stringify(msg));
        ws.onmessage = (e) => {
          clearTimeout(timer);
          ws.close();
          resolve(JSON.parse(e.data));
        };
      }),
    { room, msg },
  );
}

test("tiles per participant with names, speaking, mute and unmute", { timeout: 120000 }, async () => {
  const room = uniqueRoom("page");
  const a = await openPage(browser, server.base, `/?room=${room}&name=Ada&autopublish=1`, "Ada");
  const b = await openPage(browser, server.base, `/?room=${room}&name=Bob`, "Bob");
  let c;
  try {
    const ids = await waitPublished(a);
    // One tile for Ada's camera and microphone, with her name.
    await waitFor(b, () => window.rheomeshApp.tracks === 2, 15000, "Bob receives Ada's 2 tracks");
    await waitFor(b, () => document.querySelector("#remote .tile")?.dataset.name === "Ada", 5000, "the tile is named Ada");
    const [tile] = await tiles(b);
    assert.equal((await appState(b)).tiles, 1);
    assert.deepEqual(tile.ids, [ids.audio, ids.video].sort(), "one tile holds both of Ada's tracks");
    assert.equal(tile.video, 1);
    assert.equal(tile.audio, 1);
    await expectGrowth(b, ids.video, "framesDecoded", { minDelta: 10, timeoutMs: 10000 });

    // Speaking: Chromium's fake microphone beeps; Bob sees Ada's tile light up.
    await waitFor(b, () => document.querySelector("#remote .tile.speaking") !== null, 10000, "Ada's tile shows her speaking");
    const level = (await appState(b)).speaking[ids.audio];
    console.log(`Ada's level at Bob: ${level.toFixed(3)}`);
    const lit = await brightness(b, ids.video);
    assert.ok(lit > 40, `Ada's picture is not black before muting: luma ${lit}`);

    // Ada mutes both: Bob is told (badges), hears silence, sees black.
    await a.click("#mute-audio");
    await a.click("#mute-video");
    await waitFor(
      b,
      () => {
        const t = document.querySelector("#remote .tile");
        return t?.classList.contains("mic-muted") && t.classList.contains("cam-muted");
      },
      5000,
      "Bob sees Ada muted",
    );
    await waitFor(
      b,
      (id) => Date.now() - (window.rheomeshApp.speakingAt[id] ?? 0) > 3000,
      10000,
      "Ada silent at Bob for 3 s",
      ids.audio,
    );
    assert.equal(await b.locator("#remote .tile.speaking").count(), 0, "no speaking outline while muted");
    await until(async () => (await brightness(b, ids.video)) < 16, 10000, "Ada's picture black at Bob");
    assert.equal(await a.textContent("#mute-audio"), "Unmute microphone");
    assert.equal((await appState(a)).localTracks[ids.audio].enabled, false);

    // A late joiner learns names and mute states from Published.
    c = await openPage(browser, server.base, `/?room=${room}&name=Cy&autopublish=1`, "Cy");
    await waitFor(c, () => window.rheomeshApp.tracks === 2, 15000, "Cy receives Ada's 2 tracks");
    await waitFor(
      c,
      () => {
        const t = document.querySelector("#remote .tile");
        return t?.dataset.name === "Ada" && t.classList.contains("mic-muted") && t.classList.contains("cam-muted");
      },
      5000,
      "Cy sees Ada, muted",
    );
    // Bob now has two tiles, each named.
    await waitFor(b, () => window.rheomeshApp.tiles === 2, 15000, "Bob has a tile for Cy too");
    await waitFor(
      b,
      () => [...document.querySelectorAll("#remote .tile")].map((t) => t.dataset.name).sort().join() === "Ada,Cy",
      5000,
      "Bob's tiles are Ada and Cy",
    );

    // Ada unmutes: the badges go, sound and picture come back.
    await a.click("#mute-audio");
    await a.click("#mute-video");
    for (const p of [b, c]) {
      await waitFor(
        p,
        () => {
          const t = [...document.querySelectorAll("#remote .tile")].find((t) => t.dataset.name === "Ada");
          return t && !t.classList.contains("mic-muted") && !t.classList.contains("cam-muted");
        },
        5000,
        "Ada unmuted",
      );
    }
    await waitFor(b, (id) => Date.now() - (window.rheomeshApp.speakingAt[id] ?? 0) < 1000, 10000, "Ada speaks again", ids.audio);
    await until(async () => (await brightness(b, ids.video)) > 40, 10000, "Ada's picture back at Bob");

    // Names and mutes are checked: errors, not crashes; only your own tracks.
    for (const [msg, re] of [
      [{ action: "SetName", name: "   " }, /SetName: the name is empty/],
      [{ action: "SetName", name: "x".repeat(65) }, /longer than 64/],
      [{ action: "SetName", name: "a\u0007b" }, /control characters/],
      [{ action: "SetMuted", publisherId: ids.audio, muted: true }, /SetMuted: .* is not published by you/],
      [{ action: "SetMuted", publisherId: ids.audio }, /missing field `muted`/],
    ]) {
      const reply = await rawReply(b, room, msg);
      assert.equal(reply.action, "Error", JSON.stringify(reply));
      assert.match(reply.message, re);
    }
    await waitFor(b, () => !document.querySelector("#remote .tile.mic-muted"), 2000, "nobody could mute Ada");
    for (const p of [a, b, c]) await expectNoAppError(p);
  } finally {
    for (const p of [a, b, c]) if (p) await closePage(p);
  }
});

test("switching camera and microphone while publishing keeps the publishers and the viewer's video", { timeout: 90000 }, async () => {
  const room = uniqueRoom("devices");
  const a = await openPage(cameras, server.base, `/?room=${room}&name=Ada&autopublish=1`, "Ada");
  const b = await openPage(browser, server.base, `/?room=${room}&name=Bob`, "Bob");
  try {
    const ids = await waitPublished(a);
    await waitFor(a, () => window.rheomeshApp.devices.camera.length === 3, 5000, "three cameras listed");
    const before = (await appState(a)).localTracks;
    const { camera, microphone } = (await appState(a)).devices;
    assert.equal(before[ids.video].label, "fake_device_0");
    const otherCamera = camera.find((d) => d.label === "fake_device_2");
    const otherMic = microphone.find((d) => d.deviceId !== before[ids.audio].deviceId);
    assert.ok(otherCamera && otherMic, JSON.stringify({ camera, microphone, before }));
    await expectGrowth(b, ids.video, "framesDecoded", { minDelta: 10, timeoutMs: 15000 });

    // Through the pickers, as a user would.
    await a.selectOption("#camera-select", otherCamera.deviceId);
    await a.selectOption("#mic-select", otherMic.deviceId);
    await waitFor(
      a,
      ({ v, au, cam, mic }) => {
        const t = window.rheomeshApp.localTracks;
        return t[v]?.deviceId === cam && t[au]?.deviceId === mic;
      },
      10000,
      "Ada sends from the other camera and microphone",
      { v: ids.video, au: ids.audio, cam: otherCamera.deviceId, mic: otherMic.deviceId },
    );
    const after = (await appState(a)).localTracks;
    console.log(`camera ${before[ids.video].label} -> ${after[ids.video].label}; microphone ${before[ids.audio].label} -> ${after[ids.audio].label}`);
    assert.notEqual(after[ids.video].label, before[ids.video].label);
    assert.deepEqual((await appState(a)).published.sort(), [ids.audio, ids.video].sort(), "the same publisher ids");
    const senders = await a.evaluate(() =>
      window.rheomeshControls.transports().publish.peerConnection.getSenders().map((s) => s.track?.label ?? null),
    );
    assert.ok(senders.includes(after[ids.video].label), `the sender carries the new camera: ${JSON.stringify(senders)}`);

    // Bob keeps decoding on the same subscription, with no renegotiation of Ada's tracks.
    const offersBefore = (await socketMessages(b)).filter((m) => m.action === "Offer").length;
    await expectGrowth(b, ids.video, "framesDecoded", { minDelta: 10, timeoutMs: 10000 });
    await expectGrowth(b, ids.audio, "packetsReceived", { minDelta: 20, timeoutMs: 10000 });
    const messages = await socketMessages(b);
    assert.equal(messages.filter((m) => m.action === "Unpublished").length, 0, "nothing was unpublished");
    assert.equal(messages.filter((m) => m.action === "Offer").length, offersBefore, "no new offer");
    for (const p of [a, b]) await expectNoAppError(p);
  } finally {
    await closePage(a);
    await closePage(b);
  }
});

test("the record button records what the page publishes (--record-dir)", { timeout: 90000 }, async () => {
  const room = uniqueRoom("recbutton");
  const a = await openPage(browser, server.base, `/?room=${room}&name=Ada&autopublish=1`, "Ada");
  try {
    const ids = await waitPublished(a);
    await waitFor(a, () => !document.querySelector("#record").disabled, 5000, "the record button is enabled");
    await a.click("#record");
    await waitFor(a, () => Object.keys(window.rheomeshApp.recording).length === 2, 15000, "both tracks recording");
    assert.equal(await a.textContent("#record"), "Stop recording");
    const files = Object.values((await appState(a)).recording).map((r) => r.file);
    assert.ok(files.every((f) => /\.mkv$/.test(f)), JSON.stringify(files));
    assert.match(await a.textContent("#recording"), /REC .*\.mkv/);
    const videoFile = files.find((f) => f.includes(ids.video.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64)));
    assert.ok(videoFile, `a file for the video track: ${JSON.stringify(files)}`);
    // Record until the video file holds a few seconds.
    await until(() => statSync(join(dir, videoFile)).size > 30_000, 20000, "the video file grows past 30 kB");
    await a.click("#record");
    await waitFor(a, () => Object.keys(window.rheomeshApp.recording).length === 0, 15000, "recording stopped");
    assert.equal(await a.textContent("#record"), "Record");
    const mkvs = readdirSync(dir).filter((f) => files.includes(f));
    assert.equal(mkvs.length, 2, `both files exist: ${readdirSync(dir)}`);
    for (const f of mkvs) {
      const probe = JSON.parse(
        execFileSync("ffprobe", ["-v", "error", "-show_streams", "-show_format", "-of", "json", join(dir, f)], { encoding: "utf8" }),
      );
      const kind = f === videoFile ? "video" : "audio";
      assert.equal(probe.streams[0]?.codec_type, kind, `${f}: ${JSON.stringify(probe.streams)}`);
      const seconds = Number(probe.format.duration);
      console.log(`${f}: ${kind} ${probe.streams[0].codec_name}, ${seconds.toFixed(2)} s`);
      assert.ok(seconds > 1, `${f} holds more than a second: ${seconds}`);
    }
    await expectNoAppError(a);
  } finally {
    await closePage(a);
  }
});
