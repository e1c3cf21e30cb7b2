// The Worker against the real server: class and function handlers, data flow, bad handlers
// (non-Error thrown, non-JSON results, never resolving) classified while the worker keeps
// running, cancellation as an AbortSignal, and the W3C trace context from CreateTask becoming
// the parent of the handler's span.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import { createRequire } from "node:module";
import { startServer, templateYaml, sdk } from "./support.mjs";

const require = createRequire(import.meta.url);
const otel = require("@opentelemetry/api");

const NS = "node_worker_e2e";
let server;
let client;
let worker;
let running;
const spans = [];
const aborts = [];
let cancelStarted;
const cancelStartedP = new Promise((r) => (cancelStarted = r));

// A minimal OpenTelemetry setup (what an app's SDK would provide): async context + a tracer that
// records each span's parent.
class AlsContextManager {
  als = new AsyncLocalStorage();
  active() { return this.als.getStore() ?? otel.ROOT_CONTEXT; }
  with(ctx, fn, thisArg, ...args) { return this.als.run(ctx, () => fn.call(thisArg, ...args)); }
  bind(_ctx, target) { return target; }
  enable() { return this; }
  disable() { return this; }
}
const tracer = {
  startSpan(name, _options, ctx = otel.context.active()) {
    return otel.trace.wrapSpanContext({ traceId: otel.trace.getSpanContext(ctx)?.traceId ?? "1".repeat(32), spanId: "2".repeat(16), traceFlags: 1 });
  },
  startActiveSpan(name, options, ctx, fn) {
    spans.push({ name, parent: otel.trace.getSpanContext(ctx), attributes: options.attributes });
    const span = this.startSpan(name, options, ctx);
    return otel.context.with(otel.trace.setSpan(ctx, span), fn, undefined, span);
  },
};

class Add {
  call(ctx) {
    return { value: (ctx.sequence.get("first")?.value ?? ctx.task.context.input) + 1, attempt: ctx.step.attempt };
  }
}

before(async () => {
  otel.context.setGlobalContextManager(new AlsContextManager());
  otel.trace.setGlobalTracerProvider({ getTracer: () => tracer });
  server = await startServer();
  client = await sdk.Client.connect(server.address, { timeoutMs: 10_000 });
  const once = { max_attempts: 1 };
  const templates = {
    chain: [{ name: "first", handler: "add" }, { name: "second", handler: "add", dependsOn: ["first"] }],
    throws_string: [{ name: "s", handler: "throws_string", retry: once }],
    bigint: [{ name: "s", handler: "bigint", retry: once }],
    circular: [{ name: "s", handler: "circular", retry: once }],
    forever: [{ name: "s", handler: "forever", timeoutSeconds: 1, retry: { max_attempts: 2 } }],
    waits: [{ name: "s", handler: "waits" }],
  };
  for (const [name, steps] of Object.entries(templates)) {
    await client.registerTemplate(templateYaml({ name, namespace: NS, steps }));
  }
  worker = new sdk.Worker(server.address, [NS], { capacity: 4, token: "t0k" });
  worker.register("add", new Add());
  worker.register("throws_string", () => {
    throw "plain string";
  });
  worker.register("bigint", async () => ({ n: 10n }));
  worker.register("circular", async () => {
    const o = {};
    o.self = o;
    return o;
  });
  worker.register("forever", (ctx) => {
    ctx.signal.addEventListener("abort", () => aborts.push(["forever", ctx.signal.reason.name]));
    return new Promise(() => {});
  });
  worker.register("waits", (ctx) => {
    cancelStarted();
    return new Promise((_, reject) => {
      ctx.signal.addEventListener("abort", () => {
        aborts.push(["waits", ctx.signal.reason.name]);
        reject(ctx.signal.reason);
      });
    });
  });
  running = worker.run();
  await worker.waitConnected(10_000);
});

after(async () => {
  await worker?.shutdown({ drainTimeoutMs: 1000 });
  await running;
  client?.close();
  await server?.stop();
});

const run = async (name, context = { input: 1 }) => {
  const task = await client.createTask(NS, name, context);
  return client.waitForTask(task.taskId, { timeoutMs: 30_000 });
};

test("a class handler gets its dependency's result; the span's parent is the creator's span", { timeout: 90_000 }, async () => {
  const parent = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", traceFlags: 1 };
  const created = await otel.context.with(otel.trace.setSpanContext(otel.ROOT_CONTEXT, parent), () =>
    client.createTask(NS, "chain", { input: 1 }),
  );
  const task = await client.waitForTask(created.taskId, { timeoutMs: 30_000 });
  assert.equal(task.state, "complete");
  assert.deepEqual(task.step("second").result, { value: 3, attempt: 1 });
  assert.deepEqual(task.result, { second: { value: 3, attempt: 1 } });
  const mine = spans.filter((s) => s.attributes["tasker.task_id"] === task.taskId);
  assert.equal(mine.length, 2);
  for (const span of mine) {
    assert.equal(span.name, "tasker.step add");
    assert.equal(span.parent.traceId, parent.traceId);
    assert.equal(span.parent.isRemote, true);
  }
});

test("bad handlers get clear, classified failures and the worker keeps running", { timeout: 90_000 }, async () => {
  const [str, big, circ, forever] = await Promise.all(["throws_string", "bigint", "circular", "forever"].map((n) => run(n)));
  const err = (task) => task.step("s").lastError;
  assert.equal(str.state, "failed");
  assert.equal(err(str).errorType, "NonErrorThrown");
  assert.equal(err(str).errorClass, "delayed");
  assert.match(err(str).message, /non-Error value: 'plain string'/);
  assert.equal(big.state, "failed");
  assert.equal(err(big).errorType, "InvalidResult");
  assert.equal(err(big).errorClass, "permanent");
  assert.match(err(big).message, /result\.n is a BigInt/);
  assert.equal(circ.state, "failed");
  assert.match(err(circ).message, /result\.self is a circular reference/);
  assert.equal(forever.state, "failed");
  assert.equal(forever.step("s").attempts, 2);
  assert.equal(err(forever).errorType, "StepTimeout");
  assert.equal(err(forever).errorClass, "transient");
  assert.deepEqual(aborts.filter(([n]) => n === "forever").map(([, r]) => r), ["StepTimeout", "StepTimeout"]);
  // Still serving.
  assert.equal((await run("chain")).state, "complete");
  assert.equal(worker.connected, true);
});

test("cancelling a task aborts the handler's signal and reports nothing", { timeout: 90_000 }, async () => {
  const task = await client.createTask(NS, "waits", {});
  await cancelStartedP;
  await client.cancelTask(task.taskId, { reason: "test" });
  const done = await client.waitForTask(task.taskId, { timeoutMs: 10_000 });
  assert.equal(done.state, "cancelled");
  for (let i = 0; i < 50 && !aborts.some(([n]) => n === "waits"); i++) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(aborts.filter(([n]) => n === "waits"), [["waits", "LeaseCancelled"]]);
  assert.equal(done.step("s").state, "cancelled");
});
