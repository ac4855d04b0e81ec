/**
 * A compact replay cache for faild. It keeps the same promise as `NonceCache` of `lib/sign.ts`
 * (a nonce is accepted once inside the time window; when full, requests are refused rather than
 * nonces forgotten early) in two parts:
 *
 * - **Sequenced nonces** (see `NonceSequence` in `lib/sign.ts`: a random session id, eight zero
 *   digits, a counter), which FaildClient and failsh send: one small record per client session
 *   holds the highest counter seen and a 64-counter window below it, like the anti-replay window
 *   of IPsec. Memory grows with the number of clients, not with their request rate. A session
 *   belongs to the key that signed it (the same session id under another key is another
 *   session), and each key may hold only its share of the sessions, so one key can neither blind
 *   another key's clients nor lock them out.
 * - **Random nonces** (any other 32 hex digits): 64 bits of each nonce and its expiry in typed
 *   arrays, an open-addressing hash table with linear probing whose expired slots are reclaimed
 *   by a periodic rebuild.
 *
 * @module
 */

/** Default most slots: holds up to 75 % of it live, 12 bytes a slot (12 MiB at most). */
export const DEFAULT_NONCE_SLOTS = 1 << 20;

/** Slots the cache starts with; it doubles when more than half full after a clean-up. */
const INITIAL_SLOTS = 1 << 14;

const MAX_LOAD = 0.75;

/** After a clean-up, the table doubles when more than this share of it is still live. */
const GROW_AT = 0.6;

/** Default most client sessions of sequenced nonces held at once (about 150 bytes each). */
export const DEFAULT_NONCE_SESSIONS = 16_384;

/** Counters below a session's highest that are still accepted once (out-of-order requests). */
export const SEQUENCE_WINDOW = 64;

/** Most randomly signed writes remembered for the state file (see {@linkcode ReplayMarks}). */
export const MAX_RANDOM_WRITES = 4096;

/**
 * What the replay cache must remember across a restart: the nonces of the writes (PUT, DELETE)
 * accepted within the window, saved with the state file so that a write captured before a
 * restart cannot be replayed after it. Sessions as `[key id, session id, highest counter of a
 * write, expiry ms]`, random nonces as `[key id, nonce, expiry ms]`.
 */
export interface ReplayMarks {
  /** Sessions that signed writes. */
  sessions: [string, string, number, number][];
  /** Randomly signed writes. */
  nonces: [string, string, number][];
}

/** What {@linkcode CompactNonceCache.check} says of a request. */
export type NonceVerdict = "ok" | "stale" | "replayed" | "full";

/** Frees a typed array's memory at once by detaching its buffer (it is unusable afterwards). */
function release(array: Uint32Array): void {
  if (array.buffer instanceof ArrayBuffer) array.buffer.transfer(0);
}

/** One client session of sequenced nonces. */
interface Session {
  /** The key id that signed it. */
  key: string;
  /** Highest counter of an accepted write (0: none), kept for the state file. */
  writeTop: number;
  /** Highest counter accepted. */
  top: number;
  /** Bits for counters top-1 .. top-32 (bit 0 = top-1): 1 when already accepted. */
  low: number;
  /** Bits for counters top-33 .. top-64. */
  high: number;
  /** Expiry, ms: the latest accepted timestamp plus the window. */
  expires: number;
}

/**
 * Splits a sequenced nonce (16 hex digits of session, `00000000`, 8 hex digits of counter) into
 * its session and counter; `null` for a random nonce.
 *
 * @param nonce 32 lowercase hex digits.
 * @returns The session id and the counter, or `null`.
 *
 * @example
 * ```ts
 * import { parseSequenced } from "./nonce.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(parseSequenced("0123456789abcdef000000000000002a"), { session: "0123456789abcdef", counter: 42 });
 * deepEqual(parseSequenced("0123456789abcdef0123456789abcdef"), null);
 * ```
 */
export function parseSequenced(nonce: string): { session: string; counter: number } | null {
  if (nonce.length !== 32 || !nonce.startsWith("00000000", 16)) return null;
  return { session: nonce.slice(0, 16), counter: parseInt(nonce.slice(24), 16) };
}

/**
 * The replay cache.
 *
 * @example
 * ```ts
 * import { CompactNonceCache } from "./nonce.ts";
 * import { deepEqual } from "node:assert/strict";
 * const cache = new CompactNonceCache({ maxSkewMs: 30_000, slots: 1024 });
 * const nonce = "0123456789abcdef0123456789abcdef";
 * deepEqual(cache.check(nonce, Date.now(), Date.now()), "ok");
 * deepEqual(cache.check(nonce, Date.now(), Date.now()), "replayed");
 * ```
 */
export class CompactNonceCache {
  #maxSkewMs: number;
  #maxSlots: number;
  #slots: number;
  #mask: number;
  #hi: Uint32Array;
  #lo: Uint32Array;
  /** Expiry in seconds since `#base`, plus one; 0 marks an empty slot. */
  #exp: Uint32Array;
  /** Seconds since the epoch that expiries count from, set at the first check. */
  #base: number;
  #used = 0;
  #live = 0;
  #lastCleanSec = -1;
  /** Sessions by key id and session id. */
  #sessions = new Map<string, Session>();
  /** Sessions held per key id. */
  #perKey = new Map<string, number>();
  #maxSessions: number;
  #keyCount = 1;
  #lastSweep = -Infinity;
  #lastFullSweep = -Infinity;
  /** Randomly signed writes: key id and nonce -> expiry ms. */
  #randomWrites = new Map<string, number>();

  /**
   * Creates an empty cache.
   *
   * @param options Window (ms either side of now), the most slots for random nonces (a power
   * of two; the table starts small and grows up to that) and the most sessions of sequenced
   * nonces.
   */
  constructor(options: { maxSkewMs?: number; slots?: number; sessions?: number } = {}) {
    this.#maxSkewMs = options.maxSkewMs ?? 30_000;
    this.#maxSessions = options.sessions ?? DEFAULT_NONCE_SESSIONS;
    if (!Number.isSafeInteger(this.#maxSessions) || this.#maxSessions < 1) {
      throw new RangeError(
        `Invalid session limit ${this.#maxSessions}: expected a positive integer`,
      );
    }
    const slots = options.slots ?? DEFAULT_NONCE_SLOTS;
    if (!Number.isSafeInteger(slots) || slots < 16 || (slots & (slots - 1)) !== 0) {
      throw new RangeError(`Invalid nonce cache size ${slots}: expected a power of two >= 16`);
    }
    this.#maxSlots = slots;
    this.#slots = Math.min(slots, INITIAL_SLOTS);
    this.#mask = this.#slots - 1;
    this.#hi = new Uint32Array(this.#slots);
    this.#lo = new Uint32Array(this.#slots);
    this.#exp = new Uint32Array(this.#slots);
    this.#base = NaN;
  }

  /** Random nonces held (live or expired but not yet reclaimed) plus sessions held. */
  get size(): number {
    return this.#used + this.#sessions.size;
  }

  /** Sessions of sequenced nonces held (live or expired but not yet swept). */
  get sessions(): number {
    return this.#sessions.size;
  }

  /**
   * Sets how many keys share the sessions: each key may hold `sessions / keys` of them (at
   * least 16, or all of them when there are fewer than 16).
   *
   * @param keys The number of communities of the community file.
   */
  set keyCount(keys: number) {
    this.#keyCount = Math.max(1, Math.floor(keys));
  }

  /** The most sessions one key may hold. */
  get sessionQuota(): number {
    return Math.max(
      Math.min(16, this.#maxSessions),
      Math.floor(this.#maxSessions / this.#keyCount),
    );
  }

  /** Most live nonces the cache can hold once grown to its largest. */
  get capacity(): number {
    return Math.floor(this.#maxSlots * MAX_LOAD);
  }

  /** Slots allocated now. */
  get slots(): number {
    return this.#slots;
  }

  /**
   * Records a nonce if the request is fresh.
   *
   * @param nonce The request's nonce (32 hex digits; the first 16 are kept).
   * @param ts The request's timestamp.
   * @param now The server's clock.
   * @param options `key`: the key id that signed the request (sessions are per key); `write`:
   * the request is a write, remembered in {@linkcode CompactNonceCache.replayMarks}.
   * @returns `ok`, `stale` (outside the window), `replayed` or `full` (no room for a new
   * session of this key, or for a random nonce).
   */
  check(
    nonce: string,
    ts: number,
    now: number,
    options: { key?: string; write?: boolean } = {},
  ): NonceVerdict {
    if (Math.abs(now - ts) > this.#maxSkewMs) return "stale";
    const key = options.key ?? "";
    const sequenced = parseSequenced(nonce);
    if (sequenced !== null) {
      return this.#checkSequenced(
        key,
        sequenced.session,
        sequenced.counter,
        ts,
        now,
        options.write === true,
      );
    }
    if (options.write === true) {
      const id = `${key}:${nonce}`;
      if (this.#randomWrites.has(id)) return "replayed";
      if (this.#randomWrites.size >= MAX_RANDOM_WRITES) {
        for (const [k, exp] of this.#randomWrites) if (exp < now) this.#randomWrites.delete(k);
        if (this.#randomWrites.size >= MAX_RANDOM_WRITES) return "full";
      }
      const verdict = this.#checkRandom(nonce, ts, now);
      if (verdict === "ok") this.#randomWrites.set(id, ts + this.#maxSkewMs);
      return verdict;
    }
    return this.#checkRandom(nonce, ts, now);
  }

  #checkRandom(nonce: string, ts: number, now: number): NonceVerdict {
    const hi = parseInt(nonce.slice(0, 8), 16) >>> 0;
    const lo = parseInt(nonce.slice(8, 16), 16) >>> 0;
    let nowSec = Math.floor(now / 1000) - this.#base + 1;
    if (!(nowSec > 0)) {
      // First check, or the clock jumped back past the base: start afresh from this clock.
      this.#reset(now);
      nowSec = Math.floor(now / 1000) - this.#base + 1;
    }
    const exp = Math.ceil((ts + this.#maxSkewMs) / 1000) - this.#base + 1;
    const found = this.#probe(hi, lo, nowSec);
    if (found === -1) return "replayed";
    let slot = found;
    if (slot < 0) {
      // No expired slot to reuse: a new slot is taken; make room first if needed.
      if (this.#used + 1 > Math.floor(this.#slots * MAX_LOAD)) {
        if (this.#slots < this.#maxSlots) this.#rebuild(nowSec, true);
        else {
          // At full size a clean-up frees nothing until the clock moves on: one a second at most.
          if (this.#lastCleanSec === nowSec) return "full";
          this.#lastCleanSec = nowSec;
          this.#rebuild(nowSec, false);
        }
        if (this.#live + 1 > Math.floor(this.#slots * MAX_LOAD)) return "full";
        slot = this.#probe(hi, lo, nowSec);
      }
      if (slot < 0) {
        slot = -slot - 2;
        this.#used++;
      }
    }
    this.#hi[slot] = hi;
    this.#lo[slot] = lo;
    this.#exp[slot] = exp;
    return "ok";
  }

  /**
   * A sequenced nonce: new counters above the session's highest move the window up; counters
   * inside the window are accepted once; counters below it are refused as replays (a request
   * delayed behind 64 newer ones of the same client). A session is forgotten once its latest
   * accepted timestamp is out of the window, when every request it signed is stale anyway.
   */
  #checkSequenced(
    key: string,
    session: string,
    counter: number,
    ts: number,
    now: number,
    write: boolean,
  ): "ok" | "replayed" | "full" {
    const expires = ts + this.#maxSkewMs;
    const id = `${key}:${session}`;
    let s = this.#sessions.get(id);
    if (s !== undefined && s.expires < now) {
      this.#forget(id, s);
      s = undefined;
    }
    if (s === undefined) {
      if ((this.#perKey.get(key) ?? 0) >= this.sessionQuota) {
        // At most one sweep every 250 ms when a key is at its quota: a flood of new sessions
        // must not cost a sweep of the whole table each.
        if (now - this.#lastFullSweep < 250) return "full";
        this.#lastFullSweep = now;
        this.#sweep(now);
        if ((this.#perKey.get(key) ?? 0) >= this.sessionQuota) return "full";
      }
      this.#sessions.set(id, {
        key,
        writeTop: write ? counter : 0,
        top: counter,
        low: 0,
        high: 0,
        expires,
      });
      this.#perKey.set(key, (this.#perKey.get(key) ?? 0) + 1);
      return "ok";
    }
    if (counter > s.top) {
      const shift = counter - s.top;
      // The old top becomes bit shift-1 of the window.
      if (shift >= SEQUENCE_WINDOW + 1) {
        s.low = 0;
        s.high = 0;
      } else if (shift > 32) {
        const k = shift - 32; // 1 .. 32; JavaScript shifts count modulo 32
        s.high = ((k === 32 ? 0 : s.low << k) | (1 << (k - 1))) >>> 0;
        s.low = 0;
      } else if (shift === 32) {
        s.high = s.low;
        s.low = 0x80000000;
      } else {
        s.high = ((s.high << shift) | (s.low >>> (32 - shift))) >>> 0;
        s.low = ((s.low << shift) | (1 << (shift - 1))) >>> 0;
      }
      s.top = counter;
    } else {
      const back = s.top - counter; // 0 = the top itself
      if (back === 0 || back > SEQUENCE_WINDOW) return "replayed";
      const bit = back - 1;
      if (bit < 32) {
        const m = (1 << bit) >>> 0;
        if (s.low & m) return "replayed";
        s.low = (s.low | m) >>> 0;
      } else {
        const m = (1 << (bit - 32)) >>> 0;
        if (s.high & m) return "replayed";
        s.high = (s.high | m) >>> 0;
      }
    }
    if (expires > s.expires) s.expires = expires;
    if (write && counter > s.writeTop) s.writeTop = counter;
    if (now - this.#lastSweep > 1000) this.#sweep(now);
    return "ok";
  }

  #forget(id: string, s: Session): void {
    this.#sessions.delete(id);
    const n = (this.#perKey.get(s.key) ?? 1) - 1;
    if (n <= 0) this.#perKey.delete(s.key);
    else this.#perKey.set(s.key, n);
  }

  /** Forgets the sessions whose every request is stale by now. */
  #sweep(now: number): void {
    this.#lastSweep = now;
    for (const [id, s] of this.#sessions) if (s.expires < now) this.#forget(id, s);
    for (const [id, exp] of this.#randomWrites) if (exp < now) this.#randomWrites.delete(id);
  }

  /**
   * The writes accepted within the window, for the state file.
   *
   * @param now The server's clock.
   * @returns The sessions that signed writes and the randomly signed writes still in the window.
   */
  replayMarks(now: number): ReplayMarks {
    const marks: ReplayMarks = { sessions: [], nonces: [] };
    for (const [id, s] of this.#sessions) {
      if (s.writeTop > 0 && s.expires >= now) {
        marks.sessions.push([s.key, id.slice(s.key.length + 1), s.writeTop, s.expires]);
      }
    }
    for (const [id, exp] of this.#randomWrites) {
      const colon = id.indexOf(":");
      if (exp >= now) marks.nonces.push([id.slice(0, colon), id.slice(colon + 1), exp]);
    }
    return marks;
  }

  /**
   * Remembers the writes of a previous run (read from the state file): every counter up to a
   * session's highest write is refused from now on, and each random nonce once more.
   *
   * @param marks What {@linkcode CompactNonceCache.replayMarks} returned before the restart.
   * @param now The server's clock.
   */
  restore(marks: ReplayMarks, now: number): void {
    for (const [key, session, top, expires] of marks.sessions) {
      if (expires < now) continue;
      const id = `${key}:${session}`;
      const s = this.#sessions.get(id);
      if (s === undefined) {
        this.#sessions.set(id, {
          key,
          writeTop: top,
          top,
          low: 0xffffffff,
          high: 0xffffffff,
          expires,
        });
        this.#perKey.set(key, (this.#perKey.get(key) ?? 0) + 1);
      } else if (top >= s.top) {
        Object.assign(s, { top, low: 0xffffffff, high: 0xffffffff, writeTop: top });
        s.expires = Math.max(s.expires, expires);
      }
    }
    for (const [key, nonce, expires] of marks.nonces) {
      if (expires < now || this.#randomWrites.size >= MAX_RANDOM_WRITES) continue;
      this.#randomWrites.set(`${key}:${nonce}`, expires);
    }
  }

  #reset(now: number): void {
    this.#base = Math.floor(now / 1000) - 120;
    this.#hi.fill(0);
    this.#lo.fill(0);
    this.#exp.fill(0);
    this.#used = 0;
    this.#live = 0;
    this.#lastCleanSec = -1;
  }

  /**
   * Looks a nonce up. Returns -1 when it is live in the table, a slot >= 0 holding an expired
   * entry that can be reused, or `-(empty slot) - 2` for the first empty slot.
   */
  #probe(hi: number, lo: number, nowSec: number): number {
    let i = (lo ^ Math.imul(hi, 0x9e3779b1)) & this.#mask;
    let reuse = -1;
    while (true) {
      const e = this.#exp[i]!;
      if (e === 0) return reuse >= 0 ? reuse : -i - 2;
      if (e < nowSec) {
        if (reuse < 0) reuse = i;
      } else if (this.#hi[i] === hi && this.#lo[i] === lo) {
        return -1;
      }
      i = (i + 1) & this.#mask;
    }
  }

  /**
   * Reinserts the live entries, dropping expired ones; with `grow`, into twice the slots when
   * more than {@linkcode GROW_AT} of them would be live. Same size: in place, through a compact copy of the live
   * entries; larger: into new arrays.
   */
  #rebuild(nowSec: number, grow: boolean): void {
    const old = this.#slots;
    let live = 0;
    for (let j = 0; j < old; j++) {
      const e = this.#exp[j]!;
      if (e !== 0 && e >= nowSec) live++;
    }
    let slots = old;
    while (grow && live > slots * GROW_AT && slots < this.#maxSlots) slots *= 2;
    const keep = new Uint32Array(live * 3);
    let k = 0;
    for (let j = 0; j < old; j++) {
      const e = this.#exp[j]!;
      if (e === 0 || e < nowSec) continue;
      keep[k++] = this.#hi[j]!;
      keep[k++] = this.#lo[j]!;
      keep[k++] = e;
    }
    if (slots === old) {
      this.#hi.fill(0);
      this.#lo.fill(0);
      this.#exp.fill(0);
    } else {
      // Detaching the old arrays frees their memory now rather than at the next full GC.
      const before = [this.#hi, this.#lo, this.#exp];
      this.#hi = new Uint32Array(slots);
      this.#lo = new Uint32Array(slots);
      this.#exp = new Uint32Array(slots);
      for (const a of before) release(a);
    }
    this.#slots = slots;
    this.#mask = slots - 1;
    for (let j = 0; j < keep.length; j += 3) {
      const hi = keep[j]!, lo = keep[j + 1]!;
      let i = (lo ^ Math.imul(hi, 0x9e3779b1)) & this.#mask;
      while (this.#exp[i] !== 0) i = (i + 1) & this.#mask;
      this.#hi[i] = hi;
      this.#lo[i] = lo;
      this.#exp[i] = keep[j + 2]!;
    }
    release(keep);
    this.#used = live;
    this.#live = live;
  }
}
