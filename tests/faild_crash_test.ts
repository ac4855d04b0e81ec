/**
 * Persistence under crashes: faild runs as a real process while clients change states as fast
 * as they can; it is killed with SIGKILL at a random moment, 30 times. Every time the state file
 * must parse and hold, for each service, either the last acknowledged state or the one in flight.
 */
import assert from "node:assert/strict";
import { FaildClient } from "../lib/client.ts";
import { parseStateFile } from "../daemon/faild/persist.ts";
import type { ServiceState } from "../lib/types.ts";
import { spawnFaild } from "./_faild_process.ts";

const KEY = "crash-test-community";
const ITERATIONS = 30;
const WRITERS = 3;
const STATES: ServiceState[] = ["UP", "RECOVER", "FAIL"];

Deno.test("a SIGKILL at any moment leaves the old or the new state file, never a torn one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "faild-crash-" });
  const stateFile = `${dir}/faild.state`;
  await Deno.writeTextFile(`${dir}/community`, `* ${KEY} RW\n`, { mode: 0o600 });
  // Per writer: the last value faild acknowledged (so it is on disk).
  const acked = new Array<number>(WRITERS).fill(-1);
  let totalWrites = 0;
  try {
    for (let round = 0; round < ITERATIONS; round++) {
      const faild = await spawnFaild(["-c", `${dir}/community`, "-s", stateFile]);
      const client = new FaildClient(faild.url, { key: KEY, timeoutMs: 2000 });
      const inFlight = [...acked];
      let stop = false;
      const writers = Array.from({ length: WRITERS }, async (_, w) => {
        while (!stop) {
          const next = acked[w]! + 1;
          inFlight[w] = next;
          try {
            await client.set(`svc-${w}`, STATES[next % 3]!, { detail: String(next) });
          } catch {
            return; // faild was killed
          }
          acked[w] = next;
          totalWrites++;
        }
      });
      await new Promise((r) => setTimeout(r, 30 + Math.random() * 250));
      await faild.kill();
      stop = true;
      await Promise.all(writers);
      client.close();

      const text = await Deno.readTextFile(stateFile);
      const state = parseStateFile(text, { file: stateFile }); // throws on a torn file
      for (let w = 0; w < WRITERS; w++) {
        const record = state.services.find((s) => s.name === `svc-${w}`);
        if (acked[w]! < 0) continue; // nothing acknowledged yet for this writer
        assert.ok(record, `round ${round}: svc-${w} missing though ${acked[w]} was acknowledged`);
        const onDisk = Number(record.detail);
        assert.ok(
          onDisk === acked[w] || onDisk === inFlight[w],
          `round ${round}: svc-${w} holds ${onDisk}, expected ${acked[w]} (acknowledged) or ` +
            `${inFlight[w]} (in flight)`,
        );
        assert.equal(record.state, STATES[onDisk % 3]);
        // What is on disk counts as the writer's starting point for the next round.
        acked[w] = onDisk;
      }
    }
    assert.ok(totalWrites > ITERATIONS, `only ${totalWrites} writes happened`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
