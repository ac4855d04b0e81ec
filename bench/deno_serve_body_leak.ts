/**
 * The reproduction behind faild's own HTTP server (docs/security.md, "faild", finding 7): a
 * 15-line `Deno.serve` that reads a request body with a deadline and, when the body is too slow,
 * cancels it and answers 408, leaks native memory on every such request. Run it after a Deno
 * upgrade to see whether `Deno.serve` could serve faild again.
 *
 * ```sh
 * deno run -A bench/deno_serve_body_leak.ts            # every mode, 6000 slow bodies each
 * deno run -A bench/deno_serve_body_leak.ts cancel 3000
 * ```
 *
 * Modes of the server: `cancel` (cancel the body, answer 408), `keep` (answer 408 without
 * cancelling), `close` (answer 408 with `connection: close`, without cancelling), and `raw`
 * (the same exchange over `Deno.listen`, as faild's `daemon/faild/http.ts` does). Each slow client
 * sends a head declaring 100 bytes, then 10 bytes, then waits for the answer; 50 at a time.
 *
 * @module
 */

const MODES = ["cancel", "keep", "close", "raw"] as const;
type Mode = typeof MODES[number];

async function server(mode: Mode): Promise<void> {
  const slow = () => new Promise<"slow">((r) => setTimeout(() => r("slow"), 300));
  if (mode === "raw") {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    console.log(`port ${listener.addr.port}`);
    const answer = new TextEncoder().encode(
      "HTTP/1.1 408 Request Timeout\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow",
    );
    for await (const conn of listener) {
      (async () => {
        const buf = new Uint8Array(4096);
        const timer = setTimeout(() => conn.write(answer).finally(() => conn.close()), 300);
        try {
          while ((await conn.read(buf)) !== null) { /* the body never completes */ }
        } catch {
          // Closed by the timer.
        }
        clearTimeout(timer);
      })();
    }
    return;
  }
  Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: (a) => console.log(`port ${a.port}`),
  }, async (req) => {
    const reader = req.body!.getReader();
    const deadline = slow();
    while (true) {
      const next = await Promise.race([reader.read(), deadline]);
      if (next === "slow") break;
      if (next.done) return new Response("done");
    }
    if (mode === "cancel") await reader.cancel().catch(() => {});
    return new Response("slow", {
      status: 408,
      headers: mode === "close" ? { connection: "close" } : {},
    });
  });
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function measure(mode: Mode, count: number): Promise<number[]> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--v8-flags=--max-semi-space-size=1,--max-opt=2,--optimize-for-size",
      "-A",
      new URL(import.meta.url).pathname,
      "--server",
      mode,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!/port \d+\n/.test(out)) out += (await reader.read()).value ?? "";
  const port = Number(/port (\d+)/.exec(out)![1]);
  const head = new TextEncoder().encode(
    "PUT /x HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789",
  );
  const figures = [rssMiB(child.pid)];
  let sent = 0;
  for (let round = 0; round < 3; round++) {
    const end = sent + Math.ceil(count / 3);
    await Promise.all(Array.from({ length: 50 }, async () => {
      while (sent < end) {
        sent++;
        const c = await Deno.connect({ hostname: "127.0.0.1", port });
        try {
          await c.write(head);
          await c.read(new Uint8Array(1024));
        } catch {
          // Reset.
        } finally {
          c.close();
        }
      }
    }));
    await new Promise((r) => setTimeout(r, 1000));
    figures.push(rssMiB(child.pid));
  }
  child.kill("SIGKILL");
  await child.status;
  await reader.cancel();
  return figures;
}

if (import.meta.main) {
  if (Deno.args[0] === "--server") await server(Deno.args[1] as Mode);
  else {
    const modes = Deno.args[0] ? [Deno.args[0] as Mode] : [...MODES];
    const count = Number(Deno.args[1] ?? 6000);
    console.log(`slow bodies: ${count} per mode, 50 at a time; server RSS in MiB`);
    for (const mode of modes) {
      const f = await measure(mode, count);
      console.log(
        `${mode.padEnd(7)} start ${f[0]!.toFixed(1)}, then ${
          f.slice(1).map((v) => v.toFixed(1)).join(", ")
        } (${
          ((f[3]! - f[1]!) * 1024 / (count * 2 / 3)).toFixed(1)
        } KiB per request after the first third)`,
      );
    }
  }
}
