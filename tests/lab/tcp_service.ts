/**
 * The lab's "service behind the VIP": a TCP server that answers every connection with its name and
 * a newline, then closes. Run inside a host's namespace:
 *
 * ```sh
 * ip netns exec NS deno run --allow-net tests/lab/tcp_service.ts --port 8080 --name h1
 * ```
 *
 * It binds 0.0.0.0, so it answers on the VIP whenever the VIP is on this host. It stops on SIGTERM,
 * on stdin EOF, or after `--max-life` ms.
 *
 * With `--epoch-file PATH` it answers `name@epoch` while that file holds an epoch (a decimal
 * number, read at each connection; written by whatever holds the service under an arbiter), so
 * the history checker (`history.ts`) can see which epoch served each request.
 *
 * @module
 */
import { stopOnEndOfLife } from "./_lifetime.ts";
import { parseArgs } from "node:util";

/**
 * Runs the server until stopped.
 *
 * @param args Command-line arguments.
 * @returns Exit code.
 */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      port: { type: "string" },
      name: { type: "string" },
      host: { type: "string", default: "0.0.0.0" },
      "max-life": { type: "string", default: "1800000" },
      "epoch-file": { type: "string" },
      // faild's state file and a service name: the epoch of that service's record while UP.
      "epoch-state": { type: "string" },
      "epoch-service": { type: "string", default: "vip" },
    },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    console.error(`Invalid --port: ${values.port}: expected 1 to 65535`);
    return 2;
  }
  if (!values.name) {
    console.error("Missing --name: the name to answer with");
    return 2;
  }
  const plain = new TextEncoder().encode(values.name + "\n");
  const epochFile = values["epoch-file"];
  const epochState = values["epoch-state"];
  const epochOf = (): string => {
    if (epochState) {
      const state = JSON.parse(Deno.readTextFileSync(epochState));
      const rec = state?.services?.find?.((s: { name?: string }) =>
        s.name === values["epoch-service"]
      );
      return rec?.state === "UP" && typeof rec.epoch === "string" ? rec.epoch : "";
    }
    return Deno.readTextFileSync(epochFile!).trim();
  };
  const answer = (): Uint8Array => {
    if (!epochFile && !epochState) return plain;
    try {
      const epoch = epochOf();
      if (/^\d{1,20}$/.test(epoch)) return new TextEncoder().encode(`${values.name}@${epoch}\n`);
    } catch {
      // No epoch (yet): the plain name.
    }
    return plain;
  };
  const listener = Deno.listen({ hostname: values.host, port });
  console.log(`listening ${values.host}:${port} as ${values.name}`);
  const stop = () => {
    try {
      listener.close();
    } catch {
      // Closed already.
    }
  };
  const endLife = stopOnEndOfLife(Number(values["max-life"]), stop);
  try {
    for await (const conn of listener) {
      conn.write(answer()).catch(() => {}).finally(() => {
        try {
          conn.close();
        } catch {
          // Closed by the peer.
        }
      });
    }
  } catch {
    // Listener closed.
  }
  endLife();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
