/**
 * failsh's liveness probes never outlive it: a failsh killed with SIGKILL (no cleanup runs)
 * leaves no ping behind, because ping's next line hits a pipe nobody reads (SIGPIPE). A clean
 * stop kills and reaps it (tested in `shell/liveness/prober_test.ts`). Needs Linux and iputils
 * ping; skips naming the Debian package otherwise.
 */
import assert from "node:assert/strict";
import { unmet } from "./_programs.ts";

const skip = Deno.build.os !== "linux" ? "needs Linux (/proc)" : unmet({ programs: ["ping"] });

function children(ppid: number, comm: string): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      // pid (comm) state ppid …
      const m = /^\d+ \((.*)\) \S+ (\d+)/.exec(stat);
      if (m && m[1] === comm && Number(m[2]) === ppid) out.push(Number(e.name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "a failsh killed with SIGKILL leaves no liveness ping behind" +
    (skip ? ` (skipped: ${skip})` : ""),
  ignore: skip !== null,
  async fn() {
    const prober = new URL("../shell/liveness/prober.ts", import.meta.url).href;
    const peers = new URL("../shell/scheduler/peers.ts", import.meta.url).href;
    const log = new URL("../lib/log.ts", import.meta.url).href;
    const code = `
      import { LivenessMonitor } from ${JSON.stringify(prober)};
      import { realTimers } from ${JSON.stringify(peers)};
      import { Logger } from ${JSON.stringify(log)};
      const m = new LivenessMonitor({
        self: "me",
        hosts: [{ name: "a", address: "127.0.0.1", port: 7100, protocol: "http", key: null,
          liveness: { intervalMs: 10, fall: 5, stallGraceMs: 1000 } }],
        timers: realTimers,
        logger: new Logger({ sink: () => {} }),
      });
      m.onChange(() => console.log(m.status("a")?.state));
      m.start();
      await new Promise(() => {});
    `;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-lock", code],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      // Wait until its ping has answered once (so ping runs and writes lines).
      let text = "";
      while (!text.includes("alive")) {
        const r = await reader.read();
        if (r.done) break;
        text += r.value;
      }
      assert.match(text, /alive/);
      const pings = children(child.pid, "ping");
      assert.equal(pings.length, 1, "one ping per probed peer");
      child.kill("SIGKILL");
      await child.status;
      reader.cancel().catch(() => {});
      const deadline = Date.now() + 5000;
      while (alive(pings[0]!) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(alive(pings[0]!), false, "the orphaned ping exited");
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // already dead
      }
    }
  },
});
