/**
 * failmon's terminal UI in a real terminal: tmux runs it at 120x40, the test types keys with
 * `send-keys` and reads the screen with `capture-pane`, against a fake monitor port whose state
 * the test changes while the UI runs.
 */
import assert from "node:assert/strict";
import { failoverSnapshot, startFakeFailsh } from "./fake_failsh.ts";
import { NO_TMUX, Tmux } from "./failmon_tmux.ts";

const FAILMON = new URL("../scripts/failmon.ts", import.meta.url).pathname;
const SKIP = NO_TMUX;
/** The shell command tmux runs: failmon, then its exit code and the terminal mode. */
function failmonCommand(url: string, extra = ""): string {
  return `${Deno.execPath()} run -A ${FAILMON} -m c --url ${url} ${extra}; ` +
    `echo "FAILMON-EXIT=$?"; stty -a | grep -o -- '-\\?icanon' | sed 's/^/MODE=/'; sleep 60`;
}

Deno.test({
  name: "failmon terminal UI: hosts, l services, s detail, c toggle, live update, q quits" + SKIP,
  ignore: SKIP !== "",
  async fn(t) {
    const fake = startFakeFailsh();
    const tmux = new Tmux();
    try {
      await tmux.start(failmonCommand(fake.url));
      await t.step("the hosts view shows every host with last connect", async () => {
        const s = await tmux.waitFor(/beta\s+yes/);
        assert.match(s, /failmon {2}alpha @ http:\/\/127\.0\.0\.1:\d+/);
        assert.match(s, /connected: live updates/);
        assert.match(s, /HOST\s+REACHABLE\s+LAST CONNECT\s+LATENCY\s+KERNEL\s+MISSES\s+SERVICES/);
        assert.match(s, /alpha \(self\)\s+yes\s+19:59:59 \(200ms ago\)\s+0\.31ms\s+-\s+0\s+2/);
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
        // Wait for the whole redraw, down to the addresses: a capture can catch failmon half-way
        // through writing the screen (the top new, the bottom still the old view).
        const s = await tmux.waitFor(
          /Last decision start: master beta is FAIL[\s\S]*198\.18\.0\.100\/24 on eth0/,
        );
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
  ignore: SKIP !== "",
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
