import assert from "node:assert/strict";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { signRequest, signResponse } from "./sign.ts";
import { constantTimeEqual, HmacKey, sha256Hex } from "./hmac.ts";

Deno.test("sha256Hex() matches node:crypto for every length around the block boundaries", () => {
  for (let n = 0; n < 300; n++) {
    const bytes = new Uint8Array(randomBytes(n));
    assert.equal(sha256Hex(bytes), createHash("sha256").update(bytes).digest("hex"), `bytes ${n}`);
    const text = "é".repeat(n % 7) + "x".repeat(n);
    assert.equal(sha256Hex(text), createHash("sha256").update(text).digest("hex"), `text ${n}`);
  }
  const big = "a".repeat(100_000);
  assert.equal(sha256Hex(big), createHash("sha256").update(big).digest("hex"));
});

Deno.test("HmacKey.hex() matches node:crypto for short, long and non-ASCII keys", () => {
  const keys = [
    "k",
    "s3cret-community",
    "ü".repeat(40),
    "x".repeat(64),
    "y".repeat(65),
    "z".repeat(200),
  ];
  for (const k of keys) {
    const key = new HmacKey(k);
    for (let n = 0; n < 200; n += 7) {
      const msg = "m".repeat(n) + "ß";
      assert.equal(key.hex(msg), createHmac("sha256", k).update(msg).digest("hex"), `${k} ${n}`);
    }
  }
});

Deno.test("HmacKey reproduces the response signatures of lib/sign.ts", () => {
  const community = "a-community-secret";
  const { nonce } = signRequest(community, { method: "GET", path: "/v1/services", body: "" });
  const body = JSON.stringify({ services: [] });
  const mine = new HmacKey(community).hex(
    `FAILOVER-V1-RESPONSE\n${nonce}\n200\n${sha256Hex(body)}`,
  );
  assert.equal(mine, signResponse(community, { nonce, status: 200, body }));
});

Deno.test("constantTimeEqual() tells equal from different strings", () => {
  assert.equal(constantTimeEqual("abc", "abc"), true);
  assert.equal(constantTimeEqual("abc", "abd"), false);
  assert.equal(constantTimeEqual("abc", "ab"), false);
});
