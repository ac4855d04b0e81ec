/**
 * A lab stand-in for a host whose only rule is the arbiter: it runs `EtcdArbiter` for one service
 * and puts the VIP on its link exactly while the verdict is `grant` (address added, epoch file
 * written, one gratuitous ARP), and takes it off when the verdict goes (epoch file removed, address
 * deleted), then competes again. No faild, no failsh: it isolates the arbiter's rule so the
 * history checker can judge it on the kernel's record. Prints one JSON line per event.
 *
 * ```sh
 * ip netns exec NS deno run -A tests/lab/arbiter_host.ts --host h1 \
 *   --endpoints http://198.19.7.11:2379,http://198.19.7.12:2379,http://198.19.7.13:2379 \
 *   --address 198.18.7.100/24 --epoch-file /tmp/lab/h1.epoch --timing '{"ttlMs":2000}'
 * ```
 *
 * Stops (releasing the address, revoking its lease) on SIGTERM, stdin EOF or `--max-life` ms.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { EtcdGateway } from "../../shell/arbiter/etcd_gateway.ts";
import { type ArbiterStatus, type ArbiterTiming, EtcdArbiter } from "../../shell/arbiter/lease.ts";

function out(event: Record<string, unknown>): void {
  console.log(JSON.stringify({ at: Date.now(), ...event }));
}

async function exec(argv: string[]): Promise<{ code: number; stderr: string }> {
  const [cmd, ...args] = argv;
  const r = await new Deno.Command(cmd!, {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(5000),
  }).output();
  return { code: r.code, stderr: new TextDecoder().decode(r.stderr).trim() };
}

/**
 * Runs the stand-in until stopped.
 *
 * @param args Command-line arguments.
 * @returns Exit code.
 */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      host: { type: "string" },
      endpoints: { type: "string" },
      prefix: { type: "string", default: "/failover/lab/" },
      service: { type: "string", default: "vip" },
      address: { type: "string" },
      device: { type: "string", default: "eth0" },
      "epoch-file": { type: "string" },
      timing: { type: "string", default: "{}" },
      "max-life": { type: "string", default: "600000" },
    },
  });
  const { host, endpoints, address } = values;
  if (!host || !endpoints || !address || !/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(address)) {
    console.error("Missing or invalid --host, --endpoints or --address (IPv4/len)");
    return 2;
  }
  const timing = JSON.parse(values.timing) as Partial<ArbiterTiming>;
  const service = values.service;
  const device = values.device;
  const epochFile = values["epoch-file"];
  const ip = address.split("/")[0]!;
  let holding = false;
  let queue = Promise.resolve();
  let stopping = false;

  const arbiter: EtcdArbiter = new EtcdArbiter({
    gateway: new EtcdGateway({
      endpoints: endpoints.split(","),
      timeoutMs: timing.timeoutMs ?? 500,
    }),
    host,
    prefix: values.prefix,
    timing,
    onChange: (s) => {
      out({
        event: "status",
        state: s.state,
        verdict: s.verdict,
        epoch: s.epoch,
        rule: s.rule,
        reason: s.reason,
      });
      queue = queue.then(() => follow(s)).catch((e) => out({ event: "error", message: String(e) }));
    },
    log: (line) => out({ event: "log", line }),
  });

  async function follow(s: ArbiterStatus): Promise<void> {
    if (s.verdict === "grant" && !holding && !stopping) {
      const r = await exec(["ip", "addr", "add", address!, "dev", device]);
      if (r.code !== 0 && !/exists/i.test(r.stderr)) throw new Error(`ip addr add: ${r.stderr}`);
      holding = true;
      if (epochFile) await Deno.writeTextFile(epochFile, `${s.epoch}\n`);
      out({ event: "add", epoch: s.epoch });
      exec(["arping", "-U", "-c", "1", "-I", device, ip]).catch(() => {});
    } else if (s.verdict === "deny" && holding) {
      await release();
    }
    if (s.state === "lost" && !stopping) {
      // The address is gone: acknowledge, and compete again.
      arbiter.unwant(service);
      arbiter.want(service);
    }
  }

  async function release(): Promise<void> {
    if (!holding) return;
    if (epochFile) await Deno.remove(epochFile).catch(() => {});
    const r = await exec(["ip", "addr", "del", address!, "dev", device]);
    holding = false;
    out({ event: "del", ok: r.code === 0 });
  }

  let done: () => void = () => {};
  const finished = new Promise<void>((r) => done = r);
  const stop = () => done();
  Deno.addSignalListener("SIGTERM", stop);
  const life = setTimeout(stop, Number(values["max-life"]));
  (async () => {
    try {
      for await (const _ of Deno.stdin.readable) { /* ignore */ }
    } catch {
      // No stdin.
    }
    stop();
  })();

  arbiter.start();
  arbiter.want(service);
  out({ event: "started", host });
  await finished;
  stopping = true;
  clearTimeout(life);
  await queue.catch(() => {});
  await release();
  await arbiter.stop();
  out({ event: "stopped" });
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
