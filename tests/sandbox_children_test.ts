/**
 * The policy's `children` sets how many children the services' handlers share: fewer children,
 * less memory (about 40 MiB each), less isolation between the services.
 */
import { deepEqual as assertEquals } from "node:assert/strict";
import { makeHarness } from "./_sandbox_util.ts";

const SCRIPT = `import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
for (const name of ["a", "b", "c", "d", "e", "f"]) {
  service(name, { masters: ["alpha"], interval: "1s", start: () => "UP", stop: () => "FAIL" });
}
`;

/** How many children a sandbox starts for the script (prespawn: those of every service of alpha). */
async function childrenStarted(policy: Record<string, unknown>): Promise<number> {
  const h = await makeHarness(SCRIPT, policy);
  try {
    await h.sandbox.start();
    return h.sandbox.counters().children.started;
  } finally {
    await h.close();
  }
}

Deno.test("the policy's children sets how many children the services share (plus the main one)", async () => {
  // 6 services on a small machine: the operator trades isolation for memory (~40 MiB a child).
  assertEquals(await childrenStarted({ children: 1 }), 2);
  assertEquals(await childrenStarted({ children: 2 }), 3);
  // The default: 4 shared children and the main one.
  assertEquals(await childrenStarted({}), 5);
});
