import assert from "node:assert/strict";
import { CompactNonceCache } from "./nonce.ts";

function hexNonce(i: number): string {
  return (i.toString(16).padStart(8, "0") + "9e3779b9" + "0".repeat(16)).slice(0, 32);
}

Deno.test("CompactNonceCache accepts a nonce once and refuses its replay", () => {
  const cache = new CompactNonceCache({ maxSkewMs: 30_000, slots: 1024 });
  const now = 1_764_000_000_000;
  assert.equal(cache.check(hexNonce(1), now, now), "ok");
  assert.equal(cache.check(hexNonce(1), now + 10, now + 20), "replayed");
  assert.equal(cache.check(hexNonce(2), now, now), "ok");
});

Deno.test("CompactNonceCache refuses timestamps outside the window", () => {
  const cache = new CompactNonceCache({ maxSkewMs: 30_000 });
  const now = 1_764_000_000_000;
  assert.equal(cache.check(hexNonce(1), now - 30_001, now), "stale");
  assert.equal(cache.check(hexNonce(2), now + 30_001, now), "stale");
  assert.equal(cache.check(hexNonce(3), now - 29_999, now), "ok");
});

Deno.test("CompactNonceCache grows, then answers full instead of forgetting live nonces", () => {
  const cache = new CompactNonceCache({ maxSkewMs: 30_000, slots: 1024 });
  const now = 1_764_000_000_000;
  let accepted = 0;
  for (let i = 0; i < 2000; i++) {
    if (cache.check(hexNonce(i), now, now) === "ok") accepted++;
  }
  assert.equal(accepted, cache.capacity);
  assert.equal(cache.check(hexNonce(5000), now, now), "full");
  // Every accepted nonce is still remembered.
  for (let i = 0; i < accepted; i++) assert.equal(cache.check(hexNonce(i), now, now), "replayed");
  // Once the window has passed, the old nonces expire and new ones are accepted again.
  const later = now + 62_000;
  assert.equal(cache.check(hexNonce(6000), later, later), "ok");
  assert.ok(cache.size < 10);
});

Deno.test("CompactNonceCache keeps remembering after clean-ups of expired entries", () => {
  const cache = new CompactNonceCache({ maxSkewMs: 1_000, slots: 256 });
  let now = 1_764_000_000_000;
  const recent: string[] = [];
  for (let i = 0; i < 5000; i++) {
    now += 50;
    const n = hexNonce(i);
    assert.equal(cache.check(n, now, now), "ok", `nonce ${i}`);
    recent.push(n);
    if (recent.length > 10) recent.shift();
    // The last few nonces are inside the window and must be refused.
    assert.equal(cache.check(recent[0]!, now, now), "replayed");
  }
});
