import assert from "node:assert/strict";
import {
  AUTH_SCHEME as SIGN_AUTH_SCHEME,
  bodyDigest,
  canonicalRequest,
  DEFAULT_MAX_SKEW_MS as SIGN_SKEW,
  keyId,
  parseAuthorization,
  RESPONSE_SIGNATURE_HEADER as SIGN_HEADER,
  signRequest,
  signResponse,
} from "../lib/sign.ts";
import { HmacKey, sha256Hex } from "./hmac.ts";
import {
  AUTH_SCHEME,
  canonicalRequestText,
  communityKeyId,
  DEFAULT_MAX_SKEW_MS,
  parseAuthorizationHeader,
  RESPONSE_SIGNATURE_HEADER,
  responseSignature,
} from "./verify.ts";

Deno.test("verify.ts keeps the constants of lib/sign.ts", () => {
  assert.equal(AUTH_SCHEME, SIGN_AUTH_SCHEME);
  assert.equal(RESPONSE_SIGNATURE_HEADER, SIGN_HEADER);
  assert.equal(DEFAULT_MAX_SKEW_MS, SIGN_SKEW);
});

Deno.test("communityKeyId() equals keyId() of lib/sign.ts", () => {
  for (const c of ["a", "s3cret-community", "ü-umlaut-community", "x".repeat(300)]) {
    assert.equal(communityKeyId(c), keyId(c));
  }
});

Deno.test("canonicalRequestText() and responseSignature() equal lib/sign.ts", () => {
  const parts = { ts: 1_764_000_000_000, nonce: "ab".repeat(16) };
  assert.equal(
    canonicalRequestText("PUT", "/v1/services/web", bodyDigest("{}"), parts),
    canonicalRequest("PUT", "/v1/services/web", bodyDigest("{}"), parts),
  );
  for (const body of ["", "{}", "é".repeat(100)]) {
    assert.equal(
      responseSignature(new HmacKey("community"), parts.nonce, 201, sha256Hex(body)),
      signResponse("community", { nonce: parts.nonce, status: 201, body }),
    );
  }
});

Deno.test("parseAuthorizationHeader() accepts and refuses exactly what lib/sign.ts does", () => {
  const good = signRequest("k", { method: "GET", path: "/v1/services", body: "" }).header;
  assert.deepEqual(parseAuthorizationHeader(good), parseAuthorization(good));
  const bad = [
    "Basic x",
    `${SIGN_AUTH_SCHEME} keyId=zz`,
    `${SIGN_AUTH_SCHEME} nonsense`,
    good.replace(/ts=\d+/, "ts=soon"),
    good.replace(/nonce=[0-9a-f]+/, "nonce=12"),
    good.replace(/sig=[0-9a-f]+/, "sig=ff"),
    good + "x".repeat(600),
  ];
  for (const h of bad) {
    let mine = "";
    let theirs = "";
    try {
      parseAuthorizationHeader(h);
    } catch (e) {
      mine = (e as Error).message;
    }
    try {
      parseAuthorization(h);
    } catch (e) {
      theirs = (e as Error).message;
    }
    assert.ok(mine !== "", h);
    assert.equal(mine, theirs, h);
  }
});
