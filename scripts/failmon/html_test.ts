import assert from "node:assert/strict";
import { failoverSnapshot, sampleSnapshot } from "../../tests/fake_failsh.ts";
import { renderHtml, renderHtmlError } from "./html.ts";

Deno.test("renderHtml renders the state of every service on every host", () => {
  const html = renderHtml(failoverSnapshot(sampleSnapshot()));
  assert.match(html, /^<!doctype html>/);
  assert.match(html, /<span class="state UP" data-state="UP">UP<\/span>/);
  assert.match(html, /<span class="state UP stale" data-state="UP">/);
  assert.match(html, /198\.18\.0\.100\/24/);
  assert.doesNotMatch(html, /(src|href)=/, "no external resource");
});

Deno.test("renderHtml escapes every text that came from the network", () => {
  const s = sampleSnapshot();
  s.host = "<script>alert(1)</script>";
  s.events.push({ at: s.now, kind: "info", service: null, host: null, message: '"><img src=x>' });
  s.hosts[1]!.services[0]!.name = "web<b>";
  const html = renderHtml(s);
  assert.ok(!html.includes("<script>"), "no script element from the data");
  assert.ok(!html.includes("<img"), "no element from the data");
  assert.match(html, /&lt;script&gt;alert\(1\)&lt;\/script&gt;/);
  assert.match(html, /&quot;&gt;&lt;img src=x&gt;/);
  assert.match(renderHtmlError("<x>"), /&lt;x&gt;/);
});

Deno.test("renderHtml adds an Arbiter column only when a service has an arbiter, escaped", () => {
  const s = failoverSnapshot(sampleSnapshot());
  assert.doesNotMatch(renderHtml(s), /<th>Arbiter<\/th>/);
  s.services[0]!.arbiter = {
    state: "acquiring",
    verdict: "deny",
    epoch: null,
    holder: "<h1>",
    reason: "the key is held",
    deadlineInMs: null,
  };
  const html = renderHtml(s);
  assert.match(html, /<th>Arbiter<\/th>/);
  assert.match(html, /acquiring, key held by &lt;h1&gt;/);
});
