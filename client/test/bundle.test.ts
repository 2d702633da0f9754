import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import * as source from "../src/index.js";
import { FakeTrack, installFakeWebRTC } from "./fake-webrtc.js";

// build-test/test/ -> client/dist/rheomesh.js
const bundle = fileURLToPath(new URL("../../dist/rheomesh.js", import.meta.url));

test("dist/rheomesh.js exports the same API as src (run `npm run build` after changing src)", { skip: !existsSync(bundle) }, async () => {
  const built = (await import(bundle)) as typeof source;
  assert.deepEqual(Object.keys(built).sort(), Object.keys(source).sort());
  installFakeWebRTC();
  const transport = new built.PublishTransport({});
  const track = new FakeTrack("video");
  const publisher = await transport.publish(track as unknown as MediaStreamTrack, { codec: "VP8" });
  assert.equal(publisher.id, track.id);
  await transport.setAnswer({ type: "answer", sdp: "v=0\r\n" });
  const data = await transport.publishData();
  assert.equal(data.channel.label, data.id);
  transport.close();
});
