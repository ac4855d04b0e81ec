/**
 * failmon's terminal UI in a real terminal: tmux runs it at 120x40, the test types keys with
 * `send-keys` and reads the screen with `capture-pane`, against a fake monitor port whose state
 * the test changes while the UI runs.
 */
import assert from "node:assert/strict";
import { failoverSnapshot, startFakeFailsh } from "./fake_failsh.ts";

const FAILMON = new URL("../scripts/failmon.ts", import.meta.url).pathname;
const HAVE_TMUX = (() => {
  try {
    return new Deno.Command("tmux", { args: ["-V"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
})();
const SKIP = HAVE_TMUX ? "" : " (skipped: tmux is not installed)";
let sessions = 0;

/** A tmux server of its own (unique socket name), killed by {@linkcode Tmux.kill}. */
export class Tmux {
  readonly socket = `failmon-test-${Deno.pid}-${++sessions}`;

  /** Runs a tmux command with a time limit and returns its stdout. */
  async run(...args: string[]): Promise<string> {
    const child = new Deno.Command("tmux", {
      args: ["-L", this.socket, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    try {
      const out = await child.output();
      if (!out.success) {
        throw new Error(`tmux ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
      }
      return new TextDecoder().decode(out.stdout);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Starts a 120x40 session running a shell command. */
  async start(command: string, size = { x: 120, y: 40 }): Promise<void> {
    await this.run(
      "new-session",
      "-d",
      "-x",
      String(size.x),
      "-y",
      String(size.y),
      "-s",
      "t",
      command,
    );
  }

  /** The visible screen as text (`escapes`: with colour escapes). */
  screen(escapes = false): Promise<string> {
    return this.run("capture-pane", "-p", ...(escapes ? ["-e"] : []), "-t", "t");
  }

  /** Types keys (tmux key names such as `Down`, `Tab`, `q`). */
  async keys(...keys: string[]): Promise<void> {
    await this.run("send-keys", "-t", "t", ...keys);
  }

  /** Waits (at most 15 s) until the screen matches; returns it. */
  async waitFor(pattern: RegExp, what = String(pattern)): Promise<string> {
    const deadline = Date.now() + 15_000;
    let text = "";
    while (Date.now() < deadline) {
      text = await this.screen();
      if (pattern.test(text)) return text;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`Timed out waiting for ${what}; the screen was:\n${text}`);
  }

  /** Kills the server (and the programs in it). */
  async kill(): Promise<void> {
    await this.run("kill-server").catch(() => {});
  }
}

/** The shell command tmux runs: failmon, then its exit code and the terminal mode. */
function failmonCommand(url: string, extra = ""): string {
  return `${Deno.execPath()} run -A ${FAILMON} -m c --url ${url} ${extra}; ` +
    `echo "FAILMON-EXIT=$?"; stty -a | grep -o -- '-\\?icanon' | sed 's/^/MODE=/'; sleep 60`;
}

Deno.test({
  name: "failmon terminal UI: hosts, l services, s detail, c toggle, live update, q quits" + SKIP,
  ignore: !HAVE_TMUX,
  async fn(t) {
    const fake = startFakeFailsh();
    const tmux = new Tmux();
    try {
      await tmux.start(failmonCommand(fake.url));
      await t.step("the hosts view shows every host with last connect", async () => {
        const s = await tmux.waitFor(/beta\s+yes/);
        assert.match(s, /failmon {2}alpha @ http:\/\/127\.0\.0\.1:\d+/);
        assert.match(s, /connected: live updates/);
        assert.match(s, /HOST\s+REACHABLE\s+LAST CONNECT\s+LATENCY\s+MISSES\s+SERVICES/);
        assert.match(s, /alpha \(self\)\s+yes\s+19:59:59 \(200ms ago\)\s+0\.31ms\s+0\s+2/);
      });
      await t.step("c toggles the column to last call and back", async () => {
        await tmux.keys("c");
        await tmux.waitFor(/REACHABLE\s+LAST CALL\s+LATENCY/);
        await tmux.keys("c");
        await tmux.waitFor(/REACHABLE\s+LAST CONNECT\s+LATENCY/);
      });
      await t.step("l shows the services of the selected host", async () => {
        await tmux.keys("l");
        const s = await tmux.waitFor(/Services of alpha/);
        assert.match(s, /db\s+UP\s+master/);
        assert.match(s, /web\s+FAIL\s+slave/);
      });
      await t.step("Down then s shows one service's detail", async () => {
        await tmux.keys("Down", "s");
        const s = await tmux.waitFor(/Service web/);
        assert.match(s, /State\s+FAIL/);
        assert.match(s, /Role\s+slave/);
        assert.match(s, /Masters\s+beta/);
        assert.match(s, /Last decision none: master beta is UP/);
      });
      await t.step("a failover redraws the open view without a key", async () => {
        fake.set(failoverSnapshot(fake.snapshot));
        const s = await tmux.waitFor(/Last decision start: master beta is FAIL/);
        assert.match(s, /State\s+UP/);
        assert.match(s, /Last handler\s+start -> UP in 300ms/);
        assert.match(s, /198\.18\.0\.100\/24 on eth0/);
      });
      await t.step("h goes back to hosts; Tab goes to services; Left too", async () => {
        await tmux.keys("h");
        const s = await tmux.waitFor(/Hosts seen by alpha/);
        assert.match(s, /beta\s+NO\s.*connection refused/);
        await tmux.keys("Tab");
        await tmux.waitFor(/Services of alpha/);
        await tmux.keys("h", "Down", "Left");
        await tmux.waitFor(/Services of beta \(last reported/);
      });
      await t.step("a lost connection is shown and retried", async () => {
        await fake.stop();
        const s = await tmux.waitFor(/connection lost: .*retrying in/);
        assert.match(s, /showing the last snapshot/);
        assert.match(s, /web\s+UP\?/, "the last snapshot stays on screen");
        fake.restart();
        await tmux.waitFor(/connected: live updates/);
      });
      await t.step("q quits and restores the terminal", async () => {
        await tmux.keys("q");
        const s = await tmux.waitFor(/MODE=/);
        assert.match(s, /FAILMON-EXIT=0/);
        assert.match(s, /MODE=icanon/, "raw mode is off again");
        assert.doesNotMatch(s, /Up\/Down select/, "the main screen is back");
      });
    } finally {
      await tmux.kill();
      await fake.close();
    }
  },
});

Deno.test({
  name: "failmon terminal UI: Ctrl-C quits cleanly, SIGINT from outside too" + SKIP,
  ignore: !HAVE_TMUX,
  async fn() {
    const fake = startFakeFailsh();
    const tmux = new Tmux();
    try {
      await tmux.start(failmonCommand(fake.url));
      await tmux.waitFor(/beta\s+yes/);
      await tmux.keys("C-c");
      const s = await tmux.waitFor(/MODE=/);
      assert.match(s, /FAILMON-EXIT=0/);
      assert.match(s, /MODE=icanon/);

      const other = new Tmux();
      try {
        await other.start(
          `${Deno.execPath()} run -A ${FAILMON} -m c --url ${fake.url} </dev/tty & pid=$!; ` +
            `sleep 3; kill -INT $pid; wait $pid; echo "FAILMON-EXIT=$?"; ` +
            `stty -a | grep -o -- '-\\?icanon' | sed 's/^/MODE=/'; sleep 60`,
        );
        const o = await other.waitFor(/MODE=/);
        assert.match(o, /FAILMON-EXIT=130/);
        assert.match(o, /MODE=icanon/);
      } finally {
        await other.kill();
      }
    } finally {
      await tmux.kill();
      await fake.close();
    }
  },
});
