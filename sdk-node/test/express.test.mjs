// The Express example end to end: the real server, the app listening on a free port with its
// in-process worker, driven over HTTP.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./support.mjs";
import { createApp } from "../examples/express-app/app.mjs";

let server;
let built;
let http;
let base;

before(async () => {
  server = await startServer();
  built = await createApp({ address: server.address, namespace: "express_test" });
  http = await new Promise((resolve) => {
    const s = built.app.listen(0, "127.0.0.1", () => resolve(s));
  });
  base = `http://127.0.0.1:${http.address().port}`;
});

after(async () => {
  await new Promise((r) => (http ? http.close(r) : r()));
  await built?.close();
  await server?.stop();
});

const post = (path, body, headers = {}) =>
  fetch(base + path, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });

test("POST /tasks runs the task on the in-process worker; events reach the EventEmitter", { timeout: 90_000 }, async () => {
  const completed = [];
  built.events.on("task.completed", (e) => completed.push(e.taskId));

  const created = await post("/tasks", { name: "Ada" }, { "Idempotency-Key": "ada-1" });
  assert.equal(created.status, 201);
  const { taskId } = await created.json();
  assert.ok(taskId);

  const waited = await fetch(`${base}/tasks/${taskId}/wait`);
  assert.equal(waited.status, 200);
  assert.deepEqual(await waited.json(), { taskId, state: "complete", result: { shout: { loud: "HELLO, ADA!" } } });
  for (let i = 0; i < 50 && !completed.includes(taskId); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(completed.includes(taskId), "task.completed was emitted");

  // Same idempotency key: the same task, not a new one.
  const again = await post("/tasks", { name: "Ada" }, { "Idempotency-Key": "ada-1" });
  assert.equal(again.status, 200);
  assert.equal((await again.json()).taskId, taskId);
});

test("SDK errors become HTTP errors with the server's field violations", { timeout: 90_000 }, async () => {
  const bad = await post("/tasks", { name: 5 });
  assert.equal(bad.status, 400);
  const body = await bad.json();
  assert.ok(body.fieldViolations.length >= 1, JSON.stringify(body));
  const missing = await fetch(`${base}/tasks/999999`);
  assert.equal(missing.status, 404);
});
