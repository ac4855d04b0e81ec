/**
 * failmon as a user runs it: a real process against a fake monitor port (tests/fake_failsh.ts).
 */
import assert from "node:assert/strict";
import { failoverSnapshot, startFakeFailsh } from "./fake_failsh.ts";

const FAILMON = new URL("../scripts/failmon.ts", import.meta.url).pathname;
const decoder = new TextDecoder();

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs failmon to completion, killing it after `timeoutMs`. */
async function run(
  args: string[],
  options: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Result> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FAILMON, ...args],
    env: { NO_COLOR: "1", ...options.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 30_000);
  try {
    const out = await child.output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Reads a child's stdout line by line. */
class Lines {
  #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }
  /** The next line, or `null` at the end. */
  async next(): Promise<string | null> {
    for (;;) {
      const nl = this.#buffer.indexOf("\n");
      if (nl >= 0) {
        const line = this.#buffer.slice(0, nl);
        this.#buffer = this.#buffer.slice(nl + 1);
        return line;
      }
      const { value, done } = await this.#reader.read();
      if (done) return null;
      this.#buffer += value;
    }
  }
  /** Reads until a line matches. */
  async until(pattern: RegExp): Promise<string[]> {
    const seen: string[] = [];
    for (;;) {
      const line = await this.next();
      if (line === null) throw new Error(`End of output before ${pattern}: ${seen.join("\n")}`);
      seen.push(line);
      if (pattern.test(line)) return seen;
    }
  }
  /** Everything left. */
  async rest(): Promise<string> {
    let text = this.#buffer;
    for (;;) {
      const { value, done } = await this.#reader.read();
      if (done) return text;
      text += value;
    }
  }
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("failmon --help documents the modes, keys and exit codes", async () => {
  const r = await run(["--help"]);
  assert.equal(r.code, 0);
  for (const text of ["-m c", "l, Left", "s, Right", "Tab", "--json", "--serve", "69"]) {
    assert.ok(r.stdout.includes(text), `help mentions ${text}`);
  }
});

Deno.test("failmon refuses a bad command line with exit code 64", async () => {
  const bad = await run(["-m", "x"]);
  assert.equal(bad.code, 64);
  assert.match(
    bad.stderr,
    /Invalid mode "x": expected c \(terminal\), l \(line\), h \(HTML\) or 1/,
  );
  const url = await run(["--url", "ftp://x"]);
  assert.equal(url.code, 64);
  assert.match(url.stderr, /scheme must be http or https/);
  assert.equal((await run(["-m", "h", "--json"])).code, 64);
});

Deno.test("failmon -m 1 prints one snapshot as text and exits", async () => {
  const fake = startFakeFailsh();
  try {
    const r = await run(["-m", "1", "--url", fake.url]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^failsh alpha/);
    assert.match(r.stdout, /alpha \(self\)\s+yes/);
    assert.match(r.stdout, /db\s+UP\s+master/);
  } finally {
    await fake.close();
  }
});

Deno.test("failmon -m 1 --json prints the snapshot exactly as served", async () => {
  const fake = startFakeFailsh();
  try {
    const r = await run(["-m", "1", "--json", fake.url]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), fake.snapshot);
  } finally {
    await fake.close();
  }
});

Deno.test("failmon -m 1 on a closed port says so and exits 69", async () => {
  const port = freePort();
  const r = await run(["-m", "1", "--url", `127.0.0.1:${port}`]);
  assert.equal(r.code, 69);
  assert.match(
    r.stderr,
    /Cannot read failsh monitor at http:\/\/127\.0\.0\.1:\d+\/v1\/stream: connection refused/,
  );
});

Deno.test("failmon -m h writes HTML; as a CGI it adds the header", async (t) => {
  const fake = startFakeFailsh();
  try {
    await t.step("plain -m h", async () => {
      const r = await run(["-m", "h", "--url", fake.url]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^<!doctype html>/);
      assert.match(r.stdout, /<span class="state UP" data-state="UP">UP<\/span>/);
    });
    await t.step("CGI: GATEWAY_INTERFACE set, URL from FAILMON_URL", async () => {
      const r = await run([], { env: { GATEWAY_INTERFACE: "CGI/1.1", FAILMON_URL: fake.url } });
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stdout,
        /^Content-Type: text\/html; charset=utf-8\r\n.*\r\n\r\n<!doctype html>/s,
      );
    });
    await t.step("CGI with the monitor down: a 502 page", async () => {
      const port = freePort();
      const r = await run([], {
        env: { GATEWAY_INTERFACE: "CGI/1.1", FAILMON_URL: `http://127.0.0.1:${port}` },
      });
      assert.equal(r.code, 69);
      assert.match(r.stdout, /^Status: 502 Bad Gateway\r\n/);
      assert.match(r.stdout, /connection refused/);
    });
  } finally {
    await fake.close();
  }
});

Deno.test("failmon --json prints one line per update and nothing while nothing changes", async () => {
  const fake = startFakeFailsh({ keepaliveMs: 30 });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FAILMON, "--json", "--count", "2", "--url", fake.url],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const lines = new Lines(child.stdout);
  try {
    const first = JSON.parse((await lines.next())!);
    assert.equal(first.services.find((s: { name: string }) => s.name === "web").state, "FAIL");
    // Keepalives arrive every 30 ms; over 300 ms none of them may produce output.
    let extra = false;
    const probe = lines.next().then((l) => {
      extra = true;
      return l;
    });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(extra, false, "no output without a change");
    fake.set(failoverSnapshot(fake.snapshot));
    const second = JSON.parse((await probe)!);
    assert.equal(second.services.find((s: { name: string }) => s.name === "web").state, "UP");
    assert.equal((await child.status).code, 0, "exits after --count updates");
    assert.equal(await lines.rest(), "");
  } finally {
    clearTimeout(timer);
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
    await fake.close();
  }
});

Deno.test("failmon -m l prints a dump each time Return is pressed", async () => {
  const fake = startFakeFailsh();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FAILMON, "-m", "l", "--url", fake.url],
    env: { NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const lines = new Lines(child.stdout);
  const stdin = child.stdin.getWriter();
  try {
    await fake.waitClients(1);
    let first = "";
    while (!first.includes("EVENTS")) {
      // Return pressed before the first snapshot arrived gives "No snapshot received yet".
      await stdin.write(new TextEncoder().encode("\n"));
      first = (await lines.until(/^(EVENTS|No snapshot received yet)/)).join("\n");
    }
    assert.match(first, /web\s+FAIL\s+slave/);
    const clients = fake.clients;
    fake.set(failoverSnapshot(fake.snapshot));
    // The dump shows the state at the time Return is pressed; give the update time to arrive.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(fake.clients, clients);
    await stdin.write(new TextEncoder().encode("\n"));
    const second = (await lines.until(/^EVENTS/)).join("\n");
    assert.match(second, /web\s+UP\s+slave/);
    assert.match(second, /beta\s+NO/);
    await stdin.close();
    assert.equal((await child.status).code, 0, "end of input ends line mode");
  } finally {
    clearTimeout(timer);
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
    await lines.rest().catch(() => "");
    await fake.close();
  }
});
