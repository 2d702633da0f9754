// 10. Recording: Chromium publishes camera and microphone; another participant of the room asks
//     for one SDP of both tracks (`Record` with `publisherIds`), ffmpeg records what that SDP
//     describes with `-c copy` for 10 s (`StartRecording` once it listens, `StopRecording`
//     after); ffprobe finds a video and an audio stream of 10 ± 1 s, and decoding gives video
//     frames from the file's first second (it starts on a keyframe). VP8 + Opus and H264 + Opus.
//     GStreamer (sdpdemux, depayloaders, matroskamux) records VP8 + Opus from the same SDP
//     unchanged, and its file passes the same checks.
//     Then the example records by itself (`--record-dir`): a file per track.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import dgram from "node:dgram";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  closePage, delay, launchBrowser, openPage, sentVideoCodec, startServer, uniqueRoom, until, waitFor, waitPublished,
} from "./helpers.mjs";

const RECORD_SECONDS = 10;
const dir = mkdtempSync(join(tmpdir(), "rheomesh-record-"));
// Recorded tracks go to ports from here (each participant 16 ports further).
const recordPort = 20000 + 2 * Math.floor(Math.random() * 10000);
let server;
let browser;

before(async () => {
  server = await startServer({ args: ["--record-port", String(recordPort)] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
  const out = server?.output().trim() ?? "";
  if (/\b(ERROR|panicked)\b/.test(out)) console.log(`server output:\n${out}`);
  rmSync(dir, { recursive: true, force: true });
});

/** A participant of `room` that only sends protocol messages: a WebSocket of page `p`. */
async function controller(p, room) {
  await p.evaluate(async (room) => {
    const ws = new WebSocket(`${location.origin.replace("http", "ws")}/socket?room=${room}`);
    window.ctl = { ws, inbox: [] };
    ws.onmessage = (e) => window.ctl.inbox.push(JSON.parse(e.data));
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    });
  }, room);
  return {
    send: (msg) => p.evaluate((m) => window.ctl.ws.send(JSON.stringify(m)), msg),
    next: (action, timeoutMs = 10000) =>
      waitFor(
        p,
        (action) => {
          const i = window.ctl.inbox.findIndex((m) => m.action === action || m.action === "RecordingError");
          return i < 0 ? null : window.ctl.inbox.splice(i, 1)[0];
        },
        timeoutMs,
        `a ${action} message`,
        action,
      ),
    errors: () => p.evaluate(() => window.ctl.inbox.filter((m) => m.action.endsWith("Error"))),
  };
}

/** Whether something listens on UDP `port` of 127.0.0.1 (binding it fails). */
function listening(port) {
  return new Promise((resolve) => {
    const s = dgram.createSocket("udp4");
    s.once("error", () => resolve(true));
    s.bind(port, "127.0.0.1", () => s.close(() => resolve(false)));
  });
}

function ffprobe(args) {
  return execFileSync("ffprobe", ["-v", "error", ...args], { encoding: "utf8" });
}

/**
 * Waits until A publishes and sends `codec`, then C's controller asks `Record` for A's video
 * and audio: { ids, ctl, sdp, ports } (ports: one per m-line, in order).
 */
async function recordingSdp(a, c, room, codec) {
  const ids = await waitPublished(a);
  // The SDP describes the codec A sends: wait until it sends.
  const sent = await sentVideoCodec(a, 50);
  assert.equal(sent.toUpperCase(), `VIDEO/${codec}`, "A's outbound video codec");
  const ctl = await controller(c, room);
  await ctl.send({ action: "Record", publisherIds: [ids.video, ids.audio] });
  const reply = await ctl.next("RecordingSDP");
  assert.equal(reply.action, "RecordingSDP", JSON.stringify(reply));
  const sdp = reply.sdp;
  assert.match(sdp, /^m=video \d+ RTP\/AVP/m);
  assert.match(sdp, /^m=audio \d+ RTP\/AVP/m);
  assert.match(sdp, new RegExp(`a=rtpmap:\\d+ ${codec}/90000`));
  const ports = [...sdp.matchAll(/^m=\w+ (\d+) /gm)].map((m) => Number(m[1]));
  return { ids, ctl, sdp, ports };
}

/**
 * Records A's two tracks for RECORD_SECONDS: `StartRecording` both, wait, `stopReceiver()`
 * (while packets still come), then `StopRecording` both. Returns what `stopReceiver` gave.
 */
async function recordFor(ctl, ids, stopReceiver) {
  await ctl.send({ action: "StartRecording", publisherId: ids.video });
  await ctl.send({ action: "StartRecording", publisherId: ids.audio });
  await delay(RECORD_SECONDS * 1000);
  const result = await stopReceiver();
  await ctl.send({ action: "StopRecording", publisherId: ids.video });
  await ctl.send({ action: "StopRecording", publisherId: ids.audio });
  return result;
}

/**
 * ffprobe's checks of recording `out`: a `codec` video and an Opus audio stream, RECORD_SECONDS
 * ± 1 s, and ≥ 10 decoded video frames in the first second after a first frame before 1 s.
 * Returns a line that says what it measured.
 */
function checkRecording(out, codec) {
  const info = JSON.parse(
    ffprobe(["-show_entries", "stream=codec_type,codec_name:format=duration,start_time", "-of", "json", out]),
  );
  const types = info.streams.map((s) => s.codec_type).sort();
  assert.deepEqual(types, ["audio", "video"], JSON.stringify(info));
  assert.equal(info.streams.find((s) => s.codec_type === "video").codec_name, codec.toLowerCase());
  assert.equal(info.streams.find((s) => s.codec_type === "audio").codec_name, "opus");
  const duration = Number(info.format.duration);
  assert.ok(Math.abs(duration - RECORD_SECONDS) <= 1, `duration ${duration} s`);
  // Decoded video frames with a time in the file's first second.
  const times = ffprobe(["-select_streams", "v", "-show_entries", "frame=pts_time", "-of", "csv=p=0", out])
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map(Number)
    .filter((t) => !Number.isNaN(t));
  const first = times.length ? Math.min(...times) : NaN;
  const early = times.filter((t) => t < first + 1).length;
  assert.ok(first < 1, `the first decoded frame is at ${first} s`);
  assert.ok(early >= 10, `${early} frames decoded in the first second`);
  return `${duration.toFixed(2)} s from ${Number(info.format.start_time).toFixed(3)} s, ${times.length} video frames decoded, first at ${first.toFixed(3)} s, ${early} in its first second`;
}

for (const codec of ["VP8", "H264"]) {
  test(`ffmpeg records ${codec} + Opus from the SDP Record gives`, { timeout: 90000 }, async () => {
    const room = uniqueRoom(`record-${codec}`);
    const a = await openPage(browser, server.base, `/?room=${room}&autopublish=1&codec=${codec}`, `A-${codec}`);
    const c = await openPage(browser, server.base, `/`, `C-${codec}`);
    let ffmpeg;
    try {
      const { ids, ctl, sdp, ports } = await recordingSdp(a, c, room, codec);
      const sdpFile = join(dir, `${codec}.sdp`);
      const out = join(dir, `${codec}.mkv`);
      writeFileSync(sdpFile, sdp);

      let ffmpegLog = "";
      ffmpeg = spawn(
        "ffmpeg",
        ["-hide_banner", "-nostats", "-loglevel", "warning", "-protocol_whitelist", "file,rtp,udp", "-i", sdpFile, "-c", "copy", "-y", out],
        { stdio: ["pipe", "ignore", "pipe"] },
      );
      ffmpeg.stderr.on("data", (d) => (ffmpegLog += d));
      const exited = new Promise((resolve) => ffmpeg.on("exit", resolve));
      await until(async () => (await Promise.all(ports.map(listening))).every(Boolean), 10000, "ffmpeg listens");

      const code = await recordFor(ctl, ids, () => {
        // ffmpeg reads its stdin between packets: stop it while they still come.
        ffmpeg.stdin.write("q");
        return Promise.race([exited, delay(10000).then(() => "timeout")]);
      });
      assert.equal(code, 0, `ffmpeg exits cleanly: ${ffmpegLog}`);
      assert.deepEqual(await ctl.errors(), [], "no RecordingError");
      console.log(`ffmpeg ${codec}: ${checkRecording(out, codec)}; ports ${ports}`);
    } finally {
      ffmpeg?.kill("SIGKILL");
      await closePage(a);
      await closePage(c);
    }
  });
}

// GStreamer reads the same SDP file unchanged: sdpdemux (gst-plugins-bad) binds a udpsrc on
// each m-line's port and one on the next for RTCP (on 0.0.0.0, not the c= address) behind an
// rtpbin, whose pads carry the m-line's caps, so each depayloader links to its own stream;
// matroskamux writes the payloads as they are. GStreamer stamps each packet with its arrival
// time on the pipeline's clock, so the file would start at the time between PLAYING and the
// first packet (a 2 s wait before StartRecording gave a start_time of 2.10 s, the duration
// unchanged): offset-to-zero moves the earliest stream to 0, as ffmpeg's file starts. `-e`
// turns SIGINT into an EOS that finalizes the file; rtpbin adds a stream's pad only once its
// first packet comes, so a pipeline that got none never sees that EOS (the exit waits 10 s).
test("GStreamer records VP8 + Opus from the SDP Record gives, as is", { timeout: 90000 }, async () => {
  const room = uniqueRoom("record-gst");
  const a = await openPage(browser, server.base, `/?room=${room}&autopublish=1&codec=VP8`, "A-gst");
  const c = await openPage(browser, server.base, `/`, "C-gst");
  let gst;
  try {
    const { ids, ctl, sdp, ports } = await recordingSdp(a, c, room, "VP8");
    const sdpFile = join(dir, "gst.sdp");
    const out = join(dir, "gst.mkv");
    writeFileSync(sdpFile, sdp);

    let gstLog = "";
    // prettier-ignore
    const pipeline = [
      "filesrc", `location=${sdpFile}`, "!", "sdpdemux", "name=d",
      "d.", "!", "rtpvp8depay", "!", "queue", "!", "mux.video_%u",
      "d.", "!", "rtpopusdepay", "!", "queue", "!", "mux.audio_%u",
      "matroskamux", "name=mux", "offset-to-zero=true", "!", "filesink", `location=${out}`,
    ];
    gst = spawn("gst-launch-1.0", ["-e", ...pipeline], { stdio: ["ignore", "pipe", "pipe"] });
    gst.stdout.on("data", (d) => (gstLog += d));
    gst.stderr.on("data", (d) => (gstLog += d));
    const exited = new Promise((resolve) => gst.on("exit", (code, signal) => resolve(code ?? signal)));
    // sdpdemux binds its udpsrcs once it has read the SDP.
    await until(async () => (await Promise.all(ports.map(listening))).every(Boolean), 10000, "GStreamer listens");

    const code = await recordFor(ctl, ids, () => {
      gst.kill("SIGINT");
      return Promise.race([exited, delay(10000).then(() => "timeout")]);
    });
    assert.equal(code, 0, `gst-launch-1.0 exits cleanly:\n${gstLog}`);
    assert.match(gstLog, /Got EOS from element "pipeline0"/, `the EOS went through:\n${gstLog}`);
    assert.deepEqual(await ctl.errors(), [], "no RecordingError");
    console.log(`GStreamer VP8: ${checkRecording(out, "VP8")}; ports ${ports}`);
  } finally {
    gst?.kill("SIGKILL");
    await closePage(a);
    await closePage(c);
  }
});

test("the example records by itself with --record-dir: a file per track", { timeout: 60000 }, async () => {
  const own = join(dir, "server");
  mkdirSync(own);
  const recorder = await startServer({ args: ["--record-port", String(recordPort + 1000), "--record-dir", own] });
  const room = uniqueRoom("record-dir");
  const a = await openPage(browser, recorder.base, `/?room=${room}&autopublish=1&codec=VP8`, "A-dir");
  const c = await openPage(browser, recorder.base, `/`, "C-dir");
  try {
    const ids = await waitPublished(a);
    const ctl = await controller(c, room);
    await ctl.send({ action: "StartRecording", publisherId: ids.video });
    await ctl.send({ action: "StartRecording", publisherId: ids.audio });
    await delay(4000);
    await ctl.send({ action: "StopRecording", publisherId: ids.video });
    await ctl.send({ action: "StopRecording", publisherId: ids.audio });
    // Unknown publishers are refused.
    await ctl.send({ action: "StartRecording", publisherId: "nobody" });
    const refused = await ctl.next("RecordingError");
    assert.match(refused.error, /nobody/);
    const files = await until(() => {
      const mkv = readdirSync(own).filter((f) => f.endsWith(".mkv"));
      return mkv.length === 2 ? mkv : null;
    }, 10000, "two recorded files");
    const kinds = files
      .map((f) => JSON.parse(ffprobe(["-show_entries", "stream=codec_type", "-of", "json", join(own, f)])))
      .map((i) => i.streams.map((s) => s.codec_type).join(","))
      .sort();
    assert.deepEqual(kinds, ["audio", "video"], `streams of ${files}`);
    console.log(`--record-dir: ${files.join(", ")}`);
  } finally {
    await closePage(a);
    await closePage(c);
    await recorder.stop();
  }
});
