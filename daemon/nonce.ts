/**
 * A compact replay cache for faild. It keeps the same promise as `NonceCache` of `lib/sign.ts`
 * (a nonce is accepted once inside the time window; when full, requests are refused rather than
 * nonces forgotten early) but stores 64 bits of each nonce and its expiry in fixed typed arrays,
 * so that tens of thousands of signed polls a second fit in a few megabytes: an open-addressing
 * hash table with linear probing, whose expired slots are reclaimed by a periodic rebuild.
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

/**
 * The replay cache.
 *
 * @example
 * ```ts
 * import { CompactNonceCache } from "./nonce.ts";
 * const cache = new CompactNonceCache({ maxSkewMs: 30_000, slots: 1024 });
 * const nonce = "0123456789abcdef0123456789abcdef";
 * console.log(cache.check(nonce, Date.now(), Date.now())); // "ok"
 * console.log(cache.check(nonce, Date.now(), Date.now())); // "replayed"
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

  /**
   * Creates an empty cache.
   *
   * @param options Window (ms either side of now) and the most slots (a power of two); the
   * cache starts small and grows up to that.
   */
  constructor(options: { maxSkewMs?: number; slots?: number } = {}) {
    this.#maxSkewMs = options.maxSkewMs ?? 30_000;
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

  /** Nonces held (live or expired but not yet reclaimed). */
  get size(): number {
    return this.#used;
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
   * @returns `ok`, `stale` (outside the window), `replayed` or `full`.
   */
  check(nonce: string, ts: number, now: number): "ok" | "stale" | "replayed" | "full" {
    if (Math.abs(now - ts) > this.#maxSkewMs) return "stale";
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
      this.#hi = new Uint32Array(slots);
      this.#lo = new Uint32Array(slots);
      this.#exp = new Uint32Array(slots);
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
    this.#used = live;
    this.#live = live;
  }
}
