// An Express app that embeds a Tasker worker and starts tasks over HTTP.
//
//   node examples/express-app/app.mjs --address 127.0.0.1:50051 [--port 3000]
//   curl -XPOST localhost:3000/tasks -H 'content-type: application/json' -d '{"name": "Ada"}'
//   curl localhost:3000/tasks/<taskId>/wait
//
// - POST /tasks            creates a `greeting` task (201 {taskId, state})
// - GET  /tasks/:id        the task's state and result
// - GET  /tasks/:id/wait   long-polls until the task ends, through the EventEmitter bridge
// The worker runs in the same process; task events are bridged to an EventEmitter
// (`bridgeEvents`), so any part of the app can listen: events.on("task.completed", ...).
import { setTimeout as delay } from "node:timers/promises";
import express from "express";
import { Client, Worker, bridgeEvents, TaskerError, InvalidArgumentError, NotFoundError, TERMINAL_EVENTS, TERMINAL_TASK_STATES } from "@tasker/sdk";

export const templateYaml = (namespace) => `
name: greeting
namespace: ${namespace}
version: 1.0.0
input_schema:
  type: object
  required: [name]
  properties: {name: {type: string}}
step_templates:
  - name: greet
    handler_class: greet
  - name: shout
    handler_class: shout
    depends_on_steps: [greet]
`;

const view = (task) => ({ taskId: task.taskId, state: task.state, result: task.result });

/** Build the app: client, in-process worker, event bridge and routes. */
export async function createApp({ address, namespace = "express_demo", waitTimeoutMs = 30_000 }) {
  const client = await Client.connect(address, { timeoutMs: 10_000 });
  await client.registerTemplate(templateYaml(namespace));

  const worker = new Worker(address, [namespace], { capacity: 4 });
  worker.register("greet", async (ctx) => ({ greeting: `Hello, ${ctx.task.context.name}!` }));
  worker.register("shout", async (ctx) => ({ loud: ctx.sequence.get("greet").greeting.toUpperCase() }));
  const running = worker.run();
  await worker.waitConnected(10_000);

  const events = bridgeEvents(client, { namespaces: [namespace] });
  events.on("error", (error) => console.error("event stream failed:", error.message));

  const app = express();
  app.use(express.json());

  app.post("/tasks", async (req, res, next) => {
    try {
      const task = await client.createTask(namespace, "greeting", req.body ?? {}, {
        idempotencyKey: req.get("Idempotency-Key") || undefined,
      });
      res.status(task.created ? 201 : 200).json(view(task));
    } catch (error) {
      next(error);
    }
  });

  app.get("/tasks/:id", async (req, res, next) => {
    try {
      res.json(view(await client.getTask(req.params.id)));
    } catch (error) {
      next(error);
    }
  });

  app.get("/tasks/:id/wait", async (req, res, next) => {
    const taskId = req.params.id;
    // Listen first, then look: a task that ends in between is not missed.
    const ended = events.waitFor((e) => e.taskId === taskId && TERMINAL_EVENTS.has(e.eventName), waitTimeoutMs);
    ended.catch(() => undefined);
    try {
      let task = await client.getTask(taskId);
      const deadline = Date.now() + waitTimeoutMs;
      while (!TERMINAL_TASK_STATES.has(task.state) && Date.now() < deadline) {
        // The terminal event normally wakes us; the periodic look covers a bridge that was not
        // yet live when the task ended (it starts at the live end of the log).
        await Promise.race([ended, delay(1_000)]).catch(() => undefined);
        task = await client.getTask(taskId);
      }
      res.json(view(task));
    } catch (error) {
      next(error);
    }
  });

  // SDK errors -> HTTP: the error tree carries the status code and the field violations.
  app.use((error, _req, res, _next) => {
    if (error instanceof InvalidArgumentError) {
      res.status(400).json({ error: error.message, reason: error.reason, fieldViolations: error.fieldViolations });
    } else if (error instanceof NotFoundError) {
      res.status(404).json({ error: error.message, reason: error.reason });
    } else if (error instanceof TaskerError) {
      res.status(502).json({ error: error.message, reason: error.reason });
    } else {
      res.status(500).json({ error: String(error?.message ?? error) });
    }
  });

  const close = async () => {
    await events.close();
    await worker.shutdown({ drainTimeoutMs: 5_000 });
    await running;
    client.close();
  };
  return { app, client, worker, events, close };
}

// Run directly: node app.mjs --address HOST:PORT [--port N]
if (import.meta.url === `file://${process.argv[1]}`) {
  const { parseArgs } = await import("node:util");
  const { values } = parseArgs({ options: { address: { type: "string", default: "127.0.0.1:50051" }, port: { type: "string", default: "3000" } } });
  const { app, close } = await createApp({ address: values.address });
  const http = app.listen(Number(values.port), () => console.log(`listening on http://127.0.0.1:${http.address().port}`));
  const stop = () => http.close(() => close().then(() => process.exit(0)));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
