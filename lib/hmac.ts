/**
 * SHA-256 and HMAC-SHA256 in plain TypeScript, for faild's hot path.
 *
 * `lib/sign.ts` uses `node:crypto`, whose `createHmac` costs about 7 µs a call in Deno and keeps
 * external memory alive until the garbage collector runs, which grew faild's RSS past 100 MB
 * under load. This module computes the same values with the key's inner and outer pad states
 * precomputed once per community, so a signature costs a few compression rounds and no
 * allocation beyond the result string. `hmac_test.ts` checks it against `node:crypto` and
 * `lib/sign.ts`.
 *
 * @module
 */

const K = new Int32Array([
  0x428a2f98,
  0x71374491,
  0xb5c0fbcf,
  0xe9b5dba5,
  0x3956c25b,
  0x59f111f1,
  0x923f82a4,
  0xab1c5ed5,
  0xd807aa98,
  0x12835b01,
  0x243185be,
  0x550c7dc3,
  0x72be5d74,
  0x80deb1fe,
  0x9bdc06a7,
  0xc19bf174,
  0xe49b69c1,
  0xefbe4786,
  0x0fc19dc6,
  0x240ca1cc,
  0x2de92c6f,
  0x4a7484aa,
  0x5cb0a9dc,
  0x76f988da,
  0x983e5152,
  0xa831c66d,
  0xb00327c8,
  0xbf597fc7,
  0xc6e00bf3,
  0xd5a79147,
  0x06ca6351,
  0x14292967,
  0x27b70a85,
  0x2e1b2138,
  0x4d2c6dfc,
  0x53380d13,
  0x650a7354,
  0x766a0abb,
  0x81c2c92e,
  0x92722c85,
  0xa2bfe8a1,
  0xa81a664b,
  0xc24b8b70,
  0xc76c51a3,
  0xd192e819,
  0xd6990624,
  0xf40e3585,
  0x106aa070,
  0x19a4c116,
  0x1e376c08,
  0x2748774c,
  0x34b0bcb5,
  0x391c0cb3,
  0x4ed8aa4a,
  0x5b9cca4f,
  0x682e6ff3,
  0x748f82ee,
  0x78a5636f,
  0x84c87814,
  0x8cc70208,
  0x90befffa,
  0xa4506ceb,
  0xbef9a3f7,
  0xc67178f2,
]);

const IV = new Int32Array([
  0x6a09e667,
  0xbb67ae85,
  0x3c6ef372,
  0xa54ff53a,
  0x510e527f,
  0x9b05688c,
  0x1f83d9ab,
  0x5be0cd19,
]);

const W = new Int32Array(64);
const encoder = new TextEncoder();
let scratch = new Uint8Array(4096);

/** Runs the compression function over whole 64-byte blocks of `data[offset, end)`. */
function compress(state: Int32Array, data: Uint8Array, offset: number, end: number): void {
  let h0 = state[0]!, h1 = state[1]!, h2 = state[2]!, h3 = state[3]!;
  let h4 = state[4]!, h5 = state[5]!, h6 = state[6]!, h7 = state[7]!;
  for (let p = offset; p + 64 <= end; p += 64) {
    for (let i = 0; i < 16; i++) {
      const j = p + i * 4;
      W[i] = (data[j]! << 24) | (data[j + 1]! << 16) | (data[j + 2]! << 8) | data[j + 3]!;
    }
    for (let i = 16; i < 64; i++) {
      const w15 = W[i - 15]!, w2 = W[i - 2]!;
      const s0 = ((w15 >>> 7) | (w15 << 25)) ^ ((w15 >>> 18) | (w15 << 14)) ^ (w15 >>> 3);
      const s1 = ((w2 >>> 17) | (w2 << 15)) ^ ((w2 >>> 19) | (w2 << 13)) ^ (w2 >>> 10);
      W[i] = (W[i - 16]! + s0 + W[i - 7]! + s1) | 0;
    }
    let a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (h + S1 + ch + K[i]! + W[i]!) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (S0 + maj) | 0;
      h = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    h0 = (h0 + a) | 0;
    h1 = (h1 + b) | 0;
    h2 = (h2 + c) | 0;
    h3 = (h3 + d) | 0;
    h4 = (h4 + e) | 0;
    h5 = (h5 + f) | 0;
    h6 = (h6 + g) | 0;
    h7 = (h7 + h) | 0;
  }
  state[0] = h0;
  state[1] = h1;
  state[2] = h2;
  state[3] = h3;
  state[4] = h4;
  state[5] = h5;
  state[6] = h6;
  state[7] = h7;
}

/**
 * Hashes `data[0, length)` starting from `state` that already absorbed `prefixBytes` bytes
 * (a multiple of 64); `data` must have room for 72 bytes of padding after `length`.
 */
function finish(state: Int32Array, data: Uint8Array, length: number, prefixBytes: number): void {
  const total = length + prefixBytes;
  let end = length;
  data[end++] = 0x80;
  while ((end % 64) !== 56) data[end++] = 0;
  const bits = total * 8;
  const hi = Math.floor(bits / 0x100000000);
  data[end++] = hi >>> 24;
  data[end++] = (hi >>> 16) & 0xff;
  data[end++] = (hi >>> 8) & 0xff;
  data[end++] = hi & 0xff;
  data[end++] = bits >>> 24;
  data[end++] = (bits >>> 16) & 0xff;
  data[end++] = (bits >>> 8) & 0xff;
  data[end++] = bits & 0xff;
  compress(state, data, 0, end);
}

const HEX_DIGITS = new TextEncoder().encode("0123456789abcdef");
const hexOut = new Uint8Array(64);
const decoder = new TextDecoder();

/** The state as 64 lowercase hex digits: one string allocated, not one per byte. */
function toHex(state: Int32Array): string {
  for (let i = 0; i < 8; i++) {
    const v = state[i]!;
    for (let j = 0; j < 8; j++) hexOut[i * 8 + j] = HEX_DIGITS[(v >>> (28 - 4 * j)) & 15]!;
  }
  return decoder.decode(hexOut);
}

function stateBytes(state: Int32Array, out: Uint8Array): void {
  for (let i = 0; i < 8; i++) {
    const v = state[i]!;
    out[i * 4] = v >>> 24;
    out[i * 4 + 1] = (v >>> 16) & 0xff;
    out[i * 4 + 2] = (v >>> 8) & 0xff;
    out[i * 4 + 3] = v & 0xff;
  }
}

/**
 * Encodes text as UTF-8 into the shared scratch buffer (with room for padding). ASCII text (every
 * signed string faild builds) is copied directly, without the result object of `encodeInto`.
 */
function encode(text: string): number {
  if (scratch.length < text.length * 3 + 72) {
    scratch = new Uint8Array(Math.max(text.length * 3 + 72, scratch.length * 2));
  }
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80) return encoder.encodeInto(text, scratch).written;
    scratch[i] = c;
  }
  return text.length;
}

/**
 * SHA-256 of text (UTF-8) or bytes, as lowercase hex.
 *
 * @param data The input.
 * @returns 64 hex digits.
 *
 * @example
 * ```ts
 * import { sha256Hex } from "./hmac.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
 * ```
 */
export function sha256Hex(data: string | Uint8Array): string {
  const state = IV.slice();
  let length: number;
  if (typeof data === "string") length = encode(data);
  else {
    const whole = data.length - (data.length % 64);
    compress(state, data, 0, whole);
    const rest = data.length - whole;
    if (scratch.length < 136) scratch = new Uint8Array(4096);
    scratch.set(data.subarray(whole), 0);
    finish(state, scratch, rest, whole);
    return toHex(state);
  }
  finish(state, scratch, length, 0);
  return toHex(state);
}

/**
 * An HMAC-SHA256 key with its pad states computed once.
 *
 * @example
 * ```ts
 * import { HmacKey } from "./hmac.ts";
 * import { deepEqual } from "node:assert/strict";
 * const key = new HmacKey("s3cret");
 * deepEqual(key.hex("message").length, 64);
 * ```
 */
export class HmacKey {
  #inner = new Int32Array(8);
  #outer = new Int32Array(8);
  #state = new Int32Array(8);
  #outerBlock = new Uint8Array(128);

  /**
   * Prepares a key.
   *
   * @param secret The key as text (UTF-8).
   */
  constructor(secret: string) {
    let key = encoder.encode(secret);
    if (key.length > 64) {
      const digest = sha256Hex(key);
      key = new Uint8Array(32);
      for (let i = 0; i < 32; i++) key[i] = parseInt(digest.slice(i * 2, i * 2 + 2), 16);
    }
    const block = new Uint8Array(64);
    for (let i = 0; i < 64; i++) block[i] = (key[i] ?? 0) ^ 0x36;
    this.#inner.set(IV);
    compress(this.#inner, block, 0, 64);
    for (let i = 0; i < 64; i++) block[i] = (key[i] ?? 0) ^ 0x5c;
    this.#outer.set(IV);
    compress(this.#outer, block, 0, 64);
  }

  /**
   * HMAC-SHA256 of a text (UTF-8).
   *
   * @param message The message.
   * @returns 64 hex digits.
   */
  hex(message: string): string {
    const state = this.#state;
    state.set(this.#inner);
    const length = encode(message);
    const whole = length - (length % 64);
    compress(state, scratch, 0, whole);
    scratch.copyWithin(0, whole, length);
    finish(state, scratch, length - whole, 64 + whole);
    const block = this.#outerBlock;
    stateBytes(state, block);
    state.set(this.#outer);
    finish(state, block, 32, 64);
    return toHex(state);
  }
}

/**
 * Compares two strings in time independent of where they differ.
 *
 * @param a One string.
 * @param b The other.
 * @returns `true` when equal.
 *
 * @example
 * ```ts
 * import { constantTimeEqual } from "./hmac.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(constantTimeEqual("ab", "ab"), true);
 * ```
 */
export function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
