// watchTask / watchEvents resume after a dropped stream from the last sequence seen: a fake
// TaskService/EventService (grpc-js, in process) drops the first streams with UNAVAILABLE and
// ABORTED and records the after_sequence of every (re)open.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const grpc = require("@grpc/grpc-js");
const sdk = require("../dist/index.js");

const event = (sequence, eventName) => ({ event: { sequence, eventName, taskId: "1", namespace: "ns", stepName: "", correlationId: "" } });

test("watch streams resume without gaps or duplicates, with the bearer token", async () => {
  const opened = [];
  const tokens = [];
  const server = new grpc.Server();
  server.addService(sdk.TaskServiceService, {
    watchTask(call) {
      opened.push(["task", call.request.afterSequence]);
      tokens.push(call.metadata.get("authorization")[0]);
      const after = call.request.afterSequence;
      if (after === 0) {
        call.write(event(1, "task.started"));
        call.write(event(2, "step.started"));
        setTimeout(() => call.emit("error", { code: grpc.status.UNAVAILABLE, details: "connection dropped" }), 20);
      } else {
        call.write(event(3, "step.completed"));
        call.write(event(4, "task.completed"));
        call.end();
      }
    },
  });
  server.addService(sdk.EventServiceService, {
    watchEvents(call) {
      opened.push(["events", call.request.afterSequence]);
      const after = call.request.afterSequence;
      if (after === 10) {
        call.write(event(11, "a"));
        setTimeout(() => call.emit("error", { code: grpc.status.ABORTED, details: "too slow" }), 20);
      } else if (after === 11) {
        call.write(event(12, "b"));
        // Never ends on its own; the consumer stops iterating.
      } else {
        call.emit("error", { code: grpc.status.INVALID_ARGUMENT, details: "bad" });
      }
    },
  });
  const port = await new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  const client = new sdk.Client(`127.0.0.1:${port}`, { token: "s3cret" });
  try {
    const seen = [];
    for await (const e of client.watchTask("1")) seen.push([e.sequence, e.eventName]);
    assert.deepEqual(seen, [[1, "task.started"], [2, "step.started"], [3, "step.completed"], [4, "task.completed"]]);

    const events = [];
    for await (const e of client.watchEvents({ afterSequence: 10 })) {
      events.push(e.sequence);
      if (e.sequence === 12) break;
    }
    assert.deepEqual(events, [11, 12]);
    assert.deepEqual(opened, [["task", 0], ["task", 2], ["events", 10], ["events", 11]]);
    assert.deepEqual(tokens, ["Bearer s3cret", "Bearer s3cret"]);

    // Errors that resuming cannot fix are thrown, decoded.
    await assert.rejects(async () => {
      for await (const _ of client.watchEvents({ afterSequence: 5 })) { /* nothing */ }
    }, sdk.InvalidArgumentError);
  } finally {
    client.close();
    server.forceShutdown();
  }
});
