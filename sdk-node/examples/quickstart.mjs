// The smallest Tasker program: register a template, run a worker, create a task, wait for it.
//
//   node quickstart.mjs --address 127.0.0.1:50051
//
// Prints the finished task's state and result as one JSON line.
import { parseArgs } from "node:util";
import { Client, Worker } from "@tasker/sdk";

const { values } = parseArgs({ options: { address: { type: "string", default: "127.0.0.1:50051" } } });
const namespace = "node_quickstart";

const client = await Client.connect(values.address, { timeoutMs: 10_000 });
await client.registerTemplate(`
name: double
namespace: ${namespace}
version: 1.0.0
step_templates:
  - {name: double, handler_class: double}
  - {name: report, handler_class: report, depends_on_steps: [double]}
`);

const worker = new Worker(values.address, [namespace]);
worker.register("double", async (ctx) => ({ value: ctx.task.context.n * 2 }));
worker.register("report", async (ctx) => ({ text: `doubled: ${ctx.sequence.get("double").value}` }));
const running = worker.run();

const task = await client.createTask(namespace, "double", { n: 21 });
const done = await client.waitForTask(task.taskId, { timeoutMs: 30_000 });
console.log(JSON.stringify({ state: done.state, result: done.result }));

await worker.shutdown({ drainTimeoutMs: 5_000 });
await running;
client.close();
