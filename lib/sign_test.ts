import assert from "node:assert/strict";
import {
  bodyDigest,
  keyId,
  NonceCache,
  parseAuthorization,
  signRequest,
  signResponse,
  verifyRequest,
  verifyResponse,
} from "./sign.ts";

const request = { method: "PUT", path: "/v1/services/web", body: '{"state":"UP"}' };

Deno.test("signRequest() produces a header that verifyRequest() accepts with the same community", () => {
  const parts = parseAuthorization(signRequest("community-a", request).header);
  assert.equal(parts.keyId, keyId("community-a"));
  assert.ok(verifyRequest("community-a", parts, { ...request, digest: bodyDigest(request.body) }));
});

Deno.test("verifyRequest() refuses a signature made with another community", () => {
  const parts = parseAuthorization(signRequest("community-a", request).header);
  assert.equal(
    verifyRequest("community-b", parts, { ...request, digest: bodyDigest(request.body) }),
    false,
  );
});

Deno.test("verifyRequest() refuses a request whose method, path or body was changed", async (t) => {
  const parts = parseAuthorization(signRequest("k", request).header);
  const digest = bodyDigest(request.body);
  await t.step("method", () => {
    assert.equal(verifyRequest("k", parts, { ...request, method: "DELETE", digest }), false);
  });
  await t.step("path", () => {
    assert.equal(verifyRequest("k", parts, { ...request, path: "/v1/services/db", digest }), false);
  });
  await t.step("body", () => {
    assert.equal(
      verifyRequest("k", parts, { ...request, digest: bodyDigest('{"state":"FAIL"}') }),
      false,
    );
  });
});

Deno.test("the community never appears in the header", () => {
  const { header } = signRequest("very-secret-community", request);
  assert.ok(!header.includes("very-secret-community"));
});

Deno.test("parseAuthorization() names what is wrong with a malformed header", async (t) => {
  await t.step("wrong scheme", () => {
    assert.throws(() => parseAuthorization("Basic abc"), /scheme must be FAILOVER-HMAC-SHA256/);
  });
  await t.step("missing nonce", () => {
    const h = `FAILOVER-HMAC-SHA256 keyId=${"a".repeat(16)}, ts=1, sig=${"b".repeat(64)}`;
    assert.throws(() => parseAuthorization(h), /nonce must be 32 hex digits/);
  });
  await t.step("oversized", () => {
    assert.throws(() => parseAuthorization("FAILOVER-HMAC-SHA256 " + "x".repeat(600)), /too long/);
  });
});

Deno.test("verifyResponse() binds the answer to the request nonce, status and body", () => {
  const r = { nonce: "ab".repeat(16), status: 200, body: '{"ok":true}' };
  const sig = signResponse("k", r);
  assert.ok(verifyResponse("k", sig, r));
  assert.equal(verifyResponse("k", sig, { ...r, nonce: "cd".repeat(16) }), false);
  assert.equal(verifyResponse("k", sig, { ...r, status: 500 }), false);
  assert.equal(verifyResponse("k", sig, { ...r, body: '{"ok":false}' }), false);
  assert.equal(verifyResponse("other", sig, r), false);
  assert.equal(verifyResponse("k", null, r), false);
});

Deno.test("NonceCache refuses replayed nonces and stale timestamps", async (t) => {
  const cache = new NonceCache({ maxSkewMs: 1000, maxEntries: 3 });
  const now = 1_000_000;
  await t.step("a fresh nonce is accepted once", () => {
    assert.equal(cache.check("n1", now, now), "ok");
    assert.equal(cache.check("n1", now, now), "replayed");
  });
  await t.step("a timestamp outside the window is stale", () => {
    assert.equal(cache.check("n2", now - 1001, now), "stale");
    assert.equal(cache.check("n3", now + 1001, now), "stale");
  });
  await t.step("a full cache refuses instead of forgetting early", () => {
    assert.equal(cache.check("n4", now, now), "ok");
    assert.equal(cache.check("n5", now, now), "ok");
    assert.equal(cache.check("n6", now, now), "full");
  });
  await t.step("expired nonces make room again", () => {
    assert.equal(cache.check("n6", now + 2500, now + 2500), "ok");
    assert.equal(cache.size, 1);
  });
});
