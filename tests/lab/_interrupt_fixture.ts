// Fixture of netns_lab_test.ts: builds a lab with a running service, prints its namespaces as
// JSON, then waits to be interrupted (the lab's SIGINT handler must remove everything).
import { Lab } from "./netns.ts";

const lab = await Lab.create({ hosts: 2 });
await lab.startServices(8080);
console.log(JSON.stringify(lab.namespaces));
await new Promise((r) => setTimeout(r, 60_000));
await lab.teardown();
