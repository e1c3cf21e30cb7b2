// The server dies while a handler runs: the result is reported with the unary ReportStepResult
// while the stream is down (retried with backoff until the restarted server answers), and the
// worker reconnects on its own.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, templateYaml, sdk } from "./support.mjs";

const NS = "node_reconnect";

test("results survive a server restart; the worker reconnects", { timeout: 90_000 }, async () => {
  let server = await startServer();
  const { address, dir } = server;
  let client = await sdk.Client.connect(address, { timeoutMs: 10_000 });
  await client.registerTemplate(templateYaml({ name: "hold", namespace: NS, steps: [{ name: "s", handler: "hold", timeoutSeconds: 60 }] }));
  let started;
  const startedP = new Promise((r) => (started = r));
  let release;
  const released = new Promise((r) => (release = r));
  const worker = new sdk.Worker(address, [NS], { logger: { info() {}, warn() {} } });
  worker.register("hold", async (ctx) => {
    started();
    await released;
    return { attempt: ctx.step.attempt };
  });
  const running = worker.run();
  try {
    await worker.waitConnected(10_000);
    const task = await client.createTask(NS, "hold", {});
    await startedP;
    client.close();
    await server.stop({ signal: "SIGKILL", keep: true });
    release(); // the outcome now has no stream: unary, retried until the server is back
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(worker.connected, false);
    server = await startServer({ address, dir });
    client = await sdk.Client.connect(address, { timeoutMs: 10_000 });
    const done = await client.waitForTask(task.taskId, { timeoutMs: 30_000 });
    assert.equal(done.state, "complete");
    assert.deepEqual(done.step("s").result, { attempt: 1 });
    for (let i = 0; i < 100 && !worker.connected; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(worker.connected, true, "the worker reconnected");
  } finally {
    await worker.shutdown({ drainTimeoutMs: 1_000 });
    await running;
    client.close();
    await server.stop();
  }
});
