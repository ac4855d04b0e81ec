import assert from "node:assert/strict";
import { readBounded, readBoundedText, StreamTooLargeError } from "./streams.ts";

function chunks(...parts: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return ReadableStream.from(parts.map((p) => enc.encode(p)));
}

Deno.test("readBounded() keeps the start and cancels the rest by default", async () => {
  let cancelled = false;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      c.enqueue(new Uint8Array(1024));
    },
    cancel() {
      cancelled = true;
    },
  });
  const r = await readBounded(stream, 3000);
  assert.equal(r.bytes.length, 3000);
  assert.equal(r.truncated, true);
  assert.equal(cancelled, true, "an endless body is not read on");
});

Deno.test("readBounded() refuses a stream over the limit with overflow: error", async () => {
  await assert.rejects(readBounded(chunks("abc", "def"), 5, { overflow: "error" }), (e) => {
    assert.ok(e instanceof StreamTooLargeError);
    assert.equal(e.limit, 5);
    assert.match(e.message, /larger than 5 bytes/);
    return true;
  });
  assert.deepEqual(
    await readBoundedText(chunks("abc", "de"), 5, { overflow: "error" }),
    { text: "abcde", truncated: false },
  );
});

Deno.test("readBounded() with overflow: drain reads a child's pipe to its end", async () => {
  let pulled = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (++pulled > 10) c.close();
      else c.enqueue(new TextEncoder().encode("0123456789"));
    },
  });
  const r = await readBoundedText(stream, 15, { overflow: "drain" });
  assert.deepEqual(r, { text: "012345678901234", truncated: true });
  assert.equal(pulled, 11, "every chunk was read, so the writer never blocks");
});

Deno.test("readBounded() stops at the signal and returns what it has", async () => {
  const cut = new AbortController();
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new TextEncoder().encode("partial"));
      // ...and never closes, like a pipe a grandchild holds open.
    },
  });
  const reading = readBoundedText(stream, 100, { overflow: "drain", signal: cut.signal });
  setTimeout(() => cut.abort(), 20);
  assert.deepEqual(await reading, { text: "partial", truncated: false });
});
