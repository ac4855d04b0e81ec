/**
 * What a test needs from the machine: system programs (each with the Debian package that brings
 * it) and root. A test that lacks one is skipped with `Deno.test({ ignore })`, and its name says
 * why and what to install, e.g. `… (skipped: needs arping: apt-get install iputils-arping)`, so
 * the summary counts it as ignored and the reason is in the output. `.ci/run` installs every
 * package named here; `bash tests/bare_machine.sh` runs the suite without them.
 *
 * ```ts ignore
 * import { needs } from "./_programs.ts";
 * const skip = needs({ root: true, programs: ["ip", "arping"] });
 * Deno.test({ name: "takes the VIP" + skip, ignore: skip !== "", fn: async () => {} });
 * ```
 *
 * @module
 */

/** The Debian package of each system program a test runs (Debian 12). */
export const PACKAGE_OF = {
  arping: "iputils-arping",
  bash: "bash",
  chromium: "chromium",
  curl: "curl",
  dnsmasq: "dnsmasq-base",
  etcd: "etcd-server",
  etcdctl: "etcd-client",
  ip: "iproute2",
  keepalived: "keepalived",
  mkfifo: "coreutils",
  ndisc6: "ndisc6",
  openssl: "openssl",
  pgrep: "procps",
  ping: "iputils-ping",
  prlimit: "util-linux",
  setpriv: "util-linux",
  setsid: "util-linux",
  ss: "iproute2",
  "stress-ng": "stress-ng",
  sysctl: "procps",
  tcpdump: "tcpdump",
  timeout: "coreutils",
  tmux: "tmux",
  unshare: "util-linux",
} as const;

/** A program {@linkcode PACKAGE_OF} knows. */
export type Program = keyof typeof PACKAGE_OF;

/** The directories searched, in order (Debian's root PATH; /bin and /sbin for unmerged /usr). */
const DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/**
 * Where a program is installed: the first executable file of that name in the usual
 * directories, or `null`.
 *
 * @param name The program's name.
 * @returns Its absolute path, or `null` when it is absent.
 */
export function findProgram(name: Program): string | null {
  for (const dir of DIRS) {
    const path = `${dir}/${name}`;
    try {
      const st = Deno.statSync(path);
      if (st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0) return path;
    } catch {
      // Not here.
    }
  }
  return null;
}

/** What {@linkcode needs} checks. */
export interface Needs {
  /** Root (uid 0), e.g. for network namespaces. */
  root?: boolean;
  /** Programs that must be installed. */
  programs?: readonly Program[];
}

/**
 * Why a test cannot run on this machine, or `null` when it can.
 *
 * @param what Root and the programs the test needs.
 * @returns `null`, or e.g. `needs arping, ping: apt-get install iputils-arping iputils-ping`.
 */
export function unmet(what: Needs): string | null {
  const reasons: string[] = [];
  if (what.root && Deno.uid() !== 0) reasons.push("needs root (run as root, as CI does)");
  const missing = (what.programs ?? []).filter((p) => findProgram(p) === null);
  if (missing.length > 0) {
    const packages = [...new Set(missing.map((p) => PACKAGE_OF[p]))];
    reasons.push(`needs ${missing.join(", ")}: apt-get install ${packages.join(" ")}`);
  }
  return reasons.length === 0 ? null : reasons.join("; ");
}

/**
 * {@linkcode unmet} as a suffix for a test's name: `""` when the test can run.
 *
 * @param what Root and the programs the test needs.
 * @returns `""`, or e.g. ` (skipped: needs arping: apt-get install iputils-arping)`.
 */
export function needs(what: Needs): string {
  const reason = unmet(what);
  return reason === null ? "" : ` (skipped: ${reason})`;
}
