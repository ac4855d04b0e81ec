import assert from "node:assert/strict";
import { CompactNonceCache } from "./nonce.ts";

function hexNonce(i: number): string {
  return i.toString(16).padStart(8, "0") + "9e3779b9" + "5bd1e995" + "0".repeat(8);
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

function sequenced(session: number, counter: number): string {
  return session.toString(16).padStart(16, "0") + "00000000" +
    counter.toString(16).padStart(8, "0");
}

Deno.test("CompactNonceCache: a sequenced nonce is accepted once, out of order within 64", () => {
  const cache = new CompactNonceCache({ maxSkewMs: 30_000, slots: 1024 });
  const now = 1_764_000_000_000;
  assert.equal(cache.check(sequenced(7, 1), now, now), "ok");
  assert.equal(cache.check(sequenced(7, 1), now, now), "replayed");
  assert.equal(cache.check(sequenced(7, 3), now, now), "ok");
  assert.equal(cache.check(sequenced(7, 2), now, now), "ok", "late but inside the window");
  assert.equal(cache.check(sequenced(7, 2), now, now), "replayed");
  assert.equal(cache.check(sequenced(7, 100), now, now), "ok");
  assert.equal(cache.check(sequenced(7, 36), now, now), "ok", "64 behind the highest");
  assert.equal(cache.check(sequenced(7, 35), now, now), "replayed", "65 behind: too old");
  // Another session's counters are its own.
  assert.equal(cache.check(sequenced(8, 1), now, now), "ok");
  // A random nonce never lands in a session.
  assert.equal(cache.check("0".repeat(16) + "1".repeat(16), now, now), "ok");
  assert.equal(cache.sessions, 2);
});

Deno.test("CompactNonceCache: sequenced nonces match a reference model under random order", () => {
  const cache = new CompactNonceCache({ maxSkewMs: 30_000, slots: 1024 });
  const now = 1_764_000_000_000;
  // Reference: accepted counters, and the highest; a counter is accepted when unseen and at
  // most 64 below the highest.
  const seen = new Set<number>();
  let top = -1;
  let seed = 12345;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  let next = 1;
  for (let i = 0; i < 20_000; i++) {
    // Mostly forward steps of 1 to 80, sometimes a replay or a late counter up to 90 behind.
    const r = rand(10);
    const c = r < 6 ? (next += 1 + rand(r < 5 ? 3 : 80)) : Math.max(1, next - rand(90));
    const expected = seen.has(c) || (top >= 0 && top - c > 64) ? "replayed" : "ok";
    const got = cache.check(sequenced(1, c), now, now);
    assert.equal(got, expected, `step ${i}: counter ${c}, highest ${top}`);
    if (got === "ok") {
      seen.add(c);
      top = Math.max(top, c);
    }
  }
});

Deno.test("CompactNonceCache: sessions are bounded and forgotten once stale", () => {
  const cache = new CompactNonceCache({ maxSkewMs: 1_000, slots: 1024, sessions: 3 });
  const now = 1_764_000_000_000;
  for (let s = 1; s <= 3; s++) assert.equal(cache.check(sequenced(s, 1), now, now), "ok");
  assert.equal(cache.check(sequenced(4, 1), now, now), "full");
  // Session 1 stays live by its requests; 2 and 3 go stale after the window.
  const later = now + 1_500;
  assert.equal(cache.check(sequenced(1, 2), now + 900, now + 900), "ok");
  assert.equal(cache.check(sequenced(4, 1), later, later), "ok");
  assert.equal(cache.sessions, 2);
  // A stale session's counters are refused by their timestamp, not by the cache.
  assert.equal(cache.check(sequenced(2, 1), now, later), "stale");
  // Session 1 still remembers its counters.
  assert.equal(cache.check(sequenced(1, 2), now + 900, later), "replayed");
});

Deno.test("CompactNonceCache: a session belongs to the key that signed it", () => {
  const cache = new CompactNonceCache({ maxSkewMs: 30_000, slots: 1024 });
  const now = 1_764_000_000_000;
  assert.equal(cache.check(sequenced(7, 1), now, now, { key: "victim" }), "ok");
  // Another key sends the same session id with the highest counter: its own session.
  assert.equal(cache.check(sequenced(7, 0xffffffff), now, now, { key: "attacker" }), "ok");
  assert.equal(cache.check(sequenced(7, 2), now, now, { key: "victim" }), "ok");
  assert.equal(cache.sessions, 2);
});

Deno.test("CompactNonceCache: each key holds at most its share of the sessions", () => {
  const cache = new CompactNonceCache({ maxSkewMs: 30_000, slots: 1024, sessions: 64 });
  cache.keyCount = 2;
  assert.equal(cache.sessionQuota, 32);
  const now = 1_764_000_000_000;
  for (let s = 1; s <= 32; s++) {
    assert.equal(cache.check(sequenced(s, 1), now, now, { key: "flood" }), "ok");
  }
  assert.equal(cache.check(sequenced(33, 1), now, now, { key: "flood" }), "full");
  // The other key is not affected, and the flooding key's sessions go on.
  assert.equal(cache.check(sequenced(33, 1), now, now, { key: "other" }), "ok");
  assert.equal(cache.check(sequenced(1, 2), now, now, { key: "flood" }), "ok");
  // Once the flood's sessions are stale, the key may start new ones.
  const later = now + 31_000;
  assert.equal(cache.check(sequenced(34, 1), later, later, { key: "flood" }), "ok");
});

Deno.test("CompactNonceCache: the writes of a run are refused after a restore", () => {
  const now = 1_764_000_000_000;
  const first = new CompactNonceCache({ maxSkewMs: 30_000, slots: 1024 });
  const random = "0123456789abcdef0123456789abcdef";
  assert.equal(first.check(sequenced(5, 1), now, now, { key: "k" }), "ok");
  assert.equal(first.check(sequenced(5, 2), now, now, { key: "k", write: true }), "ok");
  assert.equal(first.check(sequenced(5, 3), now, now, { key: "k" }), "ok");
  assert.equal(first.check(random, now, now, { key: "k", write: true }), "ok");
  assert.equal(first.check(sequenced(6, 1), now, now, { key: "k" }), "ok"); // reads only
  const marks = first.replayMarks(now);
  assert.deepEqual(marks, {
    sessions: [["k", sequenced(5, 0).slice(0, 16), 2, now + 30_000]],
    nonces: [["k", random, now + 30_000]],
  });
  const second = new CompactNonceCache({ maxSkewMs: 30_000, slots: 1024 });
  second.restore(marks, now + 1000);
  const t = now + 1000;
  assert.equal(second.check(sequenced(5, 2), now, t, { key: "k", write: true }), "replayed");
  assert.equal(second.check(sequenced(5, 1), now, t, { key: "k" }), "replayed");
  assert.equal(second.check(random, now, t, { key: "k", write: true }), "replayed");
  // The session goes on above its highest write; marks past their window are not restored.
  assert.equal(second.check(sequenced(5, 4), t, t, { key: "k" }), "ok");
  const third = new CompactNonceCache({ maxSkewMs: 30_000, slots: 1024 });
  third.restore(marks, now + 31_000);
  assert.equal(third.sessions, 0);
});
