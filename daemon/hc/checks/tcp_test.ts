import assert from "node:assert/strict";
import { probeTcp } from "./tcp.ts";

// 127.0.0.2: other tests (run in parallel) bind 127.0.0.1, so the freed port stays closed.
Deno.test("tcp check passes while a port listens and fails once it is closed", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.2", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const accepted = listener.accept().then((c) => c.close());
  const up = await probeTcp({ host: "127.0.0.2", port }, AbortSignal.timeout(1000));
  await accepted;
  listener.close();
  assert.equal(up.ok, true, up.detail);
  assert.equal(up.detail, `connected to 127.0.0.2:${port}`);
  const down = await probeTcp({ host: "127.0.0.2", port }, AbortSignal.timeout(1000));
  assert.equal(down.ok, false);
  assert.match(down.detail, /cannot connect to 127.0.0.2:\d+: .*refused/i);
});
