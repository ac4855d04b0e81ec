import assert from "node:assert/strict";
import { failoverSnapshot, startFakeFailsh } from "../../tests/fake_failsh.ts";
import { type AggregateSnapshot, serveAggregate } from "./aggregate.ts";
import { SseParser } from "../../lib/sse.ts";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("serveAggregate follows every monitor and marks the unreachable one", async () => {
  const a = startFakeFailsh();
  const down = `http://127.0.0.1:${freePort()}`;
  const server = serveAggregate([a.url, down], { minBackoffMs: 50, maxBackoffMs: 100 });
  const response = await fetch(server.url + "/v1/stream");
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  const next = async (): Promise<AggregateSnapshot> => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error("stream ended");
      const events = parser.push(value).filter((e) => e.event === "aggregate");
      if (events.length > 0) return JSON.parse(events.at(-1)!.data);
    }
  };
  try {
    assert.equal(response.headers.get("content-type"), "text/event-stream");
    await until(() => {
      const [x, y] = server.current().sources;
      return x?.status === "connected" && y?.status === "lost";
    }, "one source connected and one lost");
    let agg = await next();
    while (agg.sources[0]?.snapshot === null || agg.sources[1]?.status !== "lost") {
      agg = await next();
    }
    assert.equal(agg.sources[0]?.snapshot?.host, "alpha");
    assert.match(agg.sources[1]?.error ?? "", /connection refused/);
    assert.equal(agg.sources[1]?.snapshot, null);

    a.set(failoverSnapshot(a.snapshot));
    for (;;) {
      agg = await next();
      const web = agg.sources[0]?.snapshot?.services.find((s) => s.name === "web");
      if (web?.state === "UP") break;
    }
    const page = await fetch(server.url + "/");
    assert.match(await page.text(), /<title>failmon: 2 hosts<\/title>/);
    const json = await (await fetch(server.url + "/v1/aggregate")).json() as AggregateSnapshot;
    assert.equal(json.sources.length, 2);
    const missing = await fetch(server.url + "/nope");
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
  } finally {
    await reader.cancel();
    await server.close();
    await a.close();
  }
});

Deno.test("serveAggregate refuses an empty or invalid list", () => {
  assert.throws(() => serveAggregate([]), /no monitor URL given/);
  assert.throws(() => serveAggregate(["ftp://x"]), /scheme must be http or https/);
});
