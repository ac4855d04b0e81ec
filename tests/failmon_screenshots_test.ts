/**
 * Makes the screenshots in `docs/` with the tests' own tooling, from the real loopback demo
 * cluster (tests/web_demo_cluster.ts) just after the standby took over: the live web page and the
 * aggregate page in headless Chromium, and the terminal UI in tmux (`capture-pane -e`, its colours converted to HTML, drawn
 * by the same Chromium). Writes files only with `FAILOVER_SCREENSHOTS=1`, so that ordinary test
 * runs never dirty the tree:
 *
 *     FAILOVER_SCREENSHOTS=1 deno test -A tests/failmon_screenshots_test.ts
 */
import assert from "node:assert/strict";
import { escapeHtml } from "../shell/web/page.ts";
import { serveAggregate } from "../scripts/failmon/aggregate.ts";
import { prepareDemoCluster, snapshotOf, startAndSettle, until } from "./web_demo_cluster.ts";
import { NO_TMUX, Tmux } from "./failmon_tmux.ts";
import { DOCS_DIR, launchBrowser, NO_BROWSER, WRITE_SCREENSHOTS } from "./web_browser.ts";

const FAILMON = new URL("../scripts/failmon.ts", import.meta.url).pathname;

const PALETTE = [
  "#2e3436",
  "#cc0000",
  "#4e9a06",
  "#c4a000",
  "#3465a4",
  "#75507b",
  "#06989a",
  "#d3d7cf",
  "#555753",
  "#ef2929",
  "#8ae234",
  "#fce94f",
  "#729fcf",
  "#ad7fa8",
  "#34e2e2",
  "#eeeeec",
];
const FG = "#d3d7cf";
const BG = "#1e1e1e";

function color256(n: number): string {
  if (n < 16) return PALETTE[n]!;
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v},${v},${v})`;
  }
  const i = n - 16;
  const c = (x: number) => (x === 0 ? 0 : 55 + x * 40);
  return `rgb(${c(Math.floor(i / 36))},${c(Math.floor(i / 6) % 6)},${c(i % 6)})`;
}

/**
 * Converts terminal text with SGR escapes (as `tmux capture-pane -e` prints it) to HTML spans.
 *
 * @param text The captured screen.
 * @returns HTML for the inside of a `<pre>`.
 */
export function ansiToHtml(text: string): string {
  let bold = false, dim = false, reverse = false;
  let fg: string | null = null, bg: string | null = null;
  let html = "";
  // deno-lint-ignore no-control-regex
  const parts = text.split(/(\x1b\[[0-9;]*m)/);
  for (const part of parts) {
    // deno-lint-ignore no-control-regex
    const m = /^\x1b\[([0-9;]*)m$/.exec(part);
    if (!m) {
      if (part === "") continue;
      // deno-lint-ignore no-control-regex
      const clean = part.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");
      let f = fg ?? FG, b = bg ?? "transparent";
      if (reverse) [f, b] = [bg ?? BG, fg ?? FG];
      const style = `color:${f};background:${b};${bold ? "font-weight:bold;" : ""}${
        dim ? "opacity:.6;" : ""
      }`;
      html += `<span style="${style}">${escapeHtml(clean)}</span>`;
      continue;
    }
    const codes = m[1] === "" ? [0] : m[1]!.split(";").map(Number);
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i]!;
      if (c === 0) {
        bold = dim = reverse = false;
        fg = bg = null;
      } else if (c === 1) bold = true;
      else if (c === 2) dim = true;
      else if (c === 7) reverse = true;
      else if (c === 22) bold = dim = false;
      else if (c === 27) reverse = false;
      else if (c >= 30 && c <= 37) fg = PALETTE[c - 30]!;
      else if (c >= 90 && c <= 97) fg = PALETTE[c - 90 + 8]!;
      else if (c >= 40 && c <= 47) bg = PALETTE[c - 40]!;
      else if (c >= 100 && c <= 107) bg = PALETTE[c - 100 + 8]!;
      else if (c === 39) fg = null;
      else if (c === 49) bg = null;
      else if ((c === 38 || c === 48) && codes[i + 1] === 5) {
        const v = color256(codes[i + 2] ?? 7);
        if (c === 38) fg = v;
        else bg = v;
        i += 2;
      }
    }
  }
  return html;
}

Deno.test("ansiToHtml keeps colours, reverse video and escapes text", () => {
  const html = ansiToHtml("a\x1b[1;32mUP\x1b[0m \x1b[7m<sel>\x1b[0m");
  assert.match(html, /color:#4e9a06;background:transparent;font-weight:bold;">UP</);
  assert.match(html, /color:#1e1e1e;background:#d3d7cf;">&lt;sel&gt;</);
});

const SKIP = !WRITE_SCREENSHOTS
  ? " (skipped: set FAILOVER_SCREENSHOTS=1 to write docs/*.png)"
  : NO_BROWSER || NO_TMUX;

Deno.test({
  name: "screenshots: docs/failmon-web.png, failmon-aggregate.png, failmon-tui.png" + SKIP,
  ignore: SKIP !== "",
  async fn() {
    // The real loopback demo cluster; alpha (master) is killed and beta takes web over.
    const cluster = await prepareDemoCluster();
    const tmux = new Tmux();
    const browser = await launchBrowser({ width: 1280, height: 900 });
    const aggregate = serveAggregate([cluster.monitorUrl("alpha"), cluster.monitorUrl("beta")]);
    try {
      await startAndSettle(cluster);
      const { page } = browser;
      await page.goto(cluster.monitorUrl("beta") + "/");
      await page.waitForSelector("table.services tr[data-service=web][data-state=FAIL]");
      await tmux.start(
        `${Deno.execPath()} run -A ${FAILMON} -m c --url ${cluster.monitorUrl("beta")}; sleep 60`,
      );
      await tmux.waitFor(/alpha\s+yes/);
      await cluster.stop("alpha", "SIGKILL");
      await until("beta to take web over", 30_000, async () => {
        const s = await snapshotOf(cluster.monitorUrl("beta"));
        return s.services.find((v) => v.name === "web")?.state === "UP" ? s : null;
      });

      // The web page of beta, just after the takeover.
      await page.waitForSelector("table.services tr[data-service=web][data-state=UP]");
      await page.waitForSelector("table.hosts tr[data-host=alpha].unreachable");
      await page.screenshot({ path: DOCS_DIR + "failmon-web.png", fullPage: true });

      // The aggregate page of both hosts: alpha unreachable, beta serving.
      await page.goto(aggregate.url + "/");
      await page.waitForSelector(
        `section.source[data-source='${cluster.monitorUrl("alpha")}'][data-status=lost]`,
      );
      await page.screenshot({ path: DOCS_DIR + "failmon-aggregate.png", fullPage: true });

      // The terminal UI on beta: hosts view, then the detail of web.
      await tmux.waitFor(/alpha\s+NO/);
      await tmux.keys("Down", "l", "s");
      await tmux.waitFor(/Last decision/);
      const captured = await tmux.screen(true);
      const html = `<!doctype html><html><head><meta charset="utf-8"><style>
        body { margin: 0; background: ${BG}; }
        pre { margin: 0; padding: 12px 14px; color: ${FG}; background: ${BG};
          font: 14px/1.25 "DejaVu Sans Mono", "Liberation Mono", monospace; }
        </style></head><body><pre id="term">${ansiToHtml(captured)}</pre></body></html>`;
      await page.setViewportSize({ width: 1100, height: 700 });
      await page.setContent(html);
      await page.locator("#term").screenshot({ path: DOCS_DIR + "failmon-tui.png" });
      for (const name of ["failmon-web.png", "failmon-aggregate.png", "failmon-tui.png"]) {
        const info = await Deno.stat(DOCS_DIR + name);
        assert.ok(info.size > 10_000, `${name} has content`);
      }
    } finally {
      await tmux.kill();
      await browser.close();
      await aggregate.close();
      await cluster.close();
    }
  },
});
