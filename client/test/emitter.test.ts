import assert from "node:assert/strict";
import { test } from "node:test";
import { TypedEmitter } from "../src/emitter.js";

type Events = { ping: (n: number) => void; pong: () => void };

class Emitter extends TypedEmitter<Events> {
  fire<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>) {
    this.emit(event, ...args);
  }
}

test("on/off deliver to the right listeners in order", () => {
  const e = new Emitter();
  const seen: string[] = [];
  const a = (n: number) => seen.push(`a${n}`);
  const b = (n: number) => seen.push(`b${n}`);
  e.on("ping", a).on("ping", b).on("ping", a);
  e.on("pong", () => seen.push("pong"));
  e.fire("ping", 1);
  e.off("ping", a);
  e.fire("ping", 2);
  e.fire("pong");
  assert.deepEqual(seen, ["a1", "b1", "b2", "pong"]);
});
