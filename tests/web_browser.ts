/**
 * Headless Chromium for the web tests: the Debian package's `/usr/bin/chromium` driven by
 * playwright-core (never a downloaded browser), with a fresh profile directory each time that is
 * removed on close.
 *
 * @module
 */
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { needs } from "./_programs.ts";

/** Where Debian's chromium package puts the browser. */
export const CHROMIUM = "/usr/bin/chromium";

/** Why the browser tests are skipped (naming the package), or `""` when Chromium is there. */
export const NO_BROWSER: string = needs({ programs: ["chromium"] });

/** The flags every test browser gets. */
export const CHROMIUM_ARGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A running browser with one page. */
export interface TestBrowser {
  /** The browser context (its own profile). */
  context: BrowserContext;
  /** A page, opened on `about:blank`. */
  page: Page;
  /** Every URL the page requested. */
  requests: string[];
  /** Closes the browser and removes its profile. */
  close(): Promise<void>;
}

/**
 * Starts headless Chromium with a fresh profile.
 *
 * @param options Viewport size (default 1280x900).
 * @returns The browser and a page.
 */
export async function launchBrowser(
  options: { width?: number; height?: number } = {},
): Promise<TestBrowser> {
  const profile = await Deno.makeTempDir({ prefix: "failmon-chromium-" });
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [...CHROMIUM_ARGS],
      viewport: { width: options.width ?? 1280, height: options.height ?? 900 },
      timeout: 60_000,
    });
  } catch (error) {
    await Deno.remove(profile, { recursive: true }).catch(() => {});
    throw error;
  }
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(15_000);
  const requests: string[] = [];
  page.on("request", (r) => requests.push(r.url()));
  return {
    context,
    page,
    requests,
    async close() {
      await context.close().catch(() => {});
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    },
  };
}

/** Whether screenshots for `docs/` should be written (`FAILOVER_SCREENSHOTS=1`). */
export const WRITE_SCREENSHOTS: boolean = (() => {
  try {
    return Deno.env.get("FAILOVER_SCREENSHOTS") === "1";
  } catch {
    return false;
  }
})();

/** The `docs/` folder, where screenshots go. */
export const DOCS_DIR: string = new URL("../docs/", import.meta.url).pathname;
