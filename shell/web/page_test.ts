import assert from "node:assert/strict";
import { escapeHtml, monitorPage } from "./page.ts";

Deno.test("monitorPage is one self-contained document that follows v1/stream", () => {
  const html = monitorPage();
  assert.match(html, /^<!doctype html>/);
  assert.match(html, /data-stream="v1\/stream"/);
  assert.match(html, /new EventSource\(streamPath\)/);
  assert.doesNotMatch(html, /\b(src|href)\s*=/i, "no external script, style sheet or image");
  assert.doesNotMatch(html, /https?:\/\//, "no absolute URL at all");
  assert.match(html, /Content-Security-Policy" content="default-src 'none'/);
  assert.doesNotMatch(html, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
});

Deno.test("monitorPage escapes its title", () => {
  assert.match(monitorPage({ title: "<b>x</b>" }), /<title>&lt;b&gt;x&lt;\/b&gt;<\/title>/);
  assert.equal(
    escapeHtml(`<a href="x">'&'</a>`),
    "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;",
  );
});
