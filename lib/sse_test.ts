import assert from "node:assert/strict";
import { SseParser } from "./sse.ts";

Deno.test("SseParser reassembles events split anywhere and skips comments", () => {
  const text = ': keepalive\n\nretry: 500\n\nevent: snapshot\ndata: {"a":\ndata: 1}\n\n' +
    "data: plain\r\n\r\nevent: x\rdata: y\r\r";
  for (const size of [1, 2, 3, 7, text.length]) {
    const parser = new SseParser();
    const events = [];
    for (let i = 0; i < text.length; i += size) {
      events.push(...parser.push(text.slice(i, i + size)));
    }
    assert.deepEqual(
      events.map((e) => [e.event, e.data]),
      [["snapshot", '{"a":\n1}'], ["message", "plain"], ["x", "y"]],
      `chunk size ${size}`,
    );
  }
});

Deno.test("SseParser keeps a signature field split across chunks with its event", () => {
  // faild signs each change event in a `sig:` field; a TCP segment may cut it anywhere.
  const text = 'event: change\nid: 7\ndata: {"seq":7}\nsig: 0123456789abcdef\n\n' +
    "event: change\ndata: {}\n\n";
  for (const size of [1, 2, 5, text.length]) {
    const parser = new SseParser();
    const events = [];
    for (let i = 0; i < text.length; i += size) {
      events.push(...parser.push(text.slice(i, i + size)));
    }
    assert.equal(events.length, 2, `chunk size ${size}`);
    assert.deepEqual(events[0]!.fields, { sig: "0123456789abcdef" }, `chunk size ${size}`);
    assert.equal(events[0]!.id, "7");
    assert.deepEqual(events[1]!.fields, {}, "a field belongs to its own event only");
  }
});

Deno.test("SseParser refuses an event larger than its bound instead of growing", () => {
  const parser = new SseParser({ maxEventChars: 100 });
  assert.throws(() => parser.push("data: " + "x".repeat(200) + "\n"), RangeError);
  // Many data lines that add up beyond the bound.
  const p1 = new SseParser({ maxEventChars: 100 });
  assert.throws(() => {
    for (let i = 0; i < 20; i++) p1.push("data: 0123456789\n");
  }, /exceeds 100 characters/);
  // A line that never ends is bounded too.
  const p2 = new SseParser({ maxEventChars: 100, what: "faild's events" });
  assert.throws(() => p2.push("data: " + "y".repeat(150)), /Cannot read faild's events: .*100/);
  // So are many unknown fields.
  const p3 = new SseParser({ maxEventChars: 100 });
  assert.throws(() => {
    for (let i = 0; i < 20; i++) p3.push(`f${i}: 0123456789\n`);
  }, RangeError);
  // After the error the parser is usable again.
  assert.equal(p2.push("data: ok\n\n")[0]?.data, "ok");
});

Deno.test("SseParser does not count keep-alive comments against the bound", () => {
  const parser = new SseParser({ maxEventChars: 100 });
  for (let i = 0; i < 1000; i++) assert.deepEqual(parser.push(": keepalive\n\n"), []);
  assert.equal(parser.push("data: still here\n\n")[0]?.data, "still here");
});
