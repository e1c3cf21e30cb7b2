// Unacknowledged outcomes: kept until the server acknowledges them or the lease's hard deadline
// passes, announced in every hello (heldLeases). The stream is an in-memory session that records
// what the worker writes; unary reports go to a port where nothing listens (a real refusal).
// Also the lazy acknowledgement: an assignment is acknowledged only if its handler still runs
// ackDelayMs after it arrived (the result implies the ack).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { freePort, sdk } from "./support.mjs";

class FakeSession {
  sent = [];
  closed = false;
  send(message) {
    this.sent.push(message);
    return true;
  }
  ofKind(kind) {
    return this.sent.filter((m) => m[kind]).map((m) => m[kind]);
  }
}

function assignment(leaseId, handler, deadlineInMs) {
  return {
    leaseId,
    leaseDeadline: deadlineInMs === undefined ? undefined : new Date(Date.now() + deadlineInMs),
    context: {
      task: { taskId: "1", namespace: "ns", name: "t", version: "1", context: { n: 2 }, correlationId: "", priority: 0, tags: [] },
      step: { stepId: "1", name: "s", handler, config: {}, attempt: 1, maxAttempts: 3, timeout: { seconds: 5, nanos: 0 }, isFallback: false },
    },
    traceparent: "",
    tracestate: "",
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function eventually(check, timeoutMs = 5_000) {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await sleep(10);
  }
}

function worker(options = {}) {
  const w = new sdk.Worker("127.0.0.1:9", ["ns"], { logger: { info() {}, warn() {} }, ...options });
  let release;
  const released = new Promise((r) => (release = r));
  w.register("double", (ctx) => ({ n: ctx.task.context.n * 2 }));
  w.register("declined", () => {
    throw new sdk.PermanentError("card declined");
  });
  w.register("hold", async () => {
    await released;
    return {};
  });
  const session = new FakeSession();
  w["session"] = session;
  return { w, session, release };
}

const deliver = (w, session, message) => w["dispatch"](session, message);
const ack = (w, session, leaseId, accepted, reason = "") =>
  deliver(w, session, { resultAck: { leaseId, accepted, reason, message: "" } });

/** Ends the delivery loops, as run() does when it stops. */
async function stop(w) {
  const pending = [...w["unackedOutcomes"].values()];
  w["unackedOutcomes"].clear();
  for (const p of pending) p.nudge.fire();
  await Promise.allSettled([...w["background"]]);
}

test("heldLeases names running handlers and unacknowledged outcomes", async () => {
  const { w, session, release } = worker();
  deliver(w, session, { assignment: assignment("DONE", "double") });
  deliver(w, session, { assignment: assignment("RUNNING", "hold") });
  await eventually(() => session.ofKind("result").length === 1);
  assert.deepEqual(w.heldLeases().sort(), ["DONE", "RUNNING"]);
  ack(w, session, "DONE", true);
  assert.deepEqual(w.heldLeases(), ["RUNNING"]);
  release();
  await eventually(() => session.ofKind("result").length === 2);
  assert.deepEqual(w.heldLeases(), ["RUNNING"]); // its outcome now waits for its ack
  await stop(w);
});

test("result_ack UNAVAILABLE keeps the outcome and sends it again after a backoff", async () => {
  const { w, session } = worker();
  deliver(w, session, { assignment: assignment("L", "double") });
  await eventually(() => session.ofKind("result").length === 1);
  ack(w, session, "L", false, "UNAVAILABLE");
  assert.deepEqual(w.heldLeases(), ["L"]);
  await sleep(50);
  assert.equal(session.ofKind("result").length, 1, "not at once: after a backoff");
  await eventually(() => session.ofKind("result").length === 2);
  ack(w, session, "L", true, "DUPLICATE");
  assert.deepEqual(w.heldLeases(), []);
  await sleep(300);
  assert.equal(session.ofKind("result").length, 2);
  await stop(w);
});

test("a cancellation keeps a pending outcome; LEASE_STALE drops it", async () => {
  const { w, session } = worker();
  deliver(w, session, { assignment: assignment("L", "declined") });
  await eventually(() => session.ofKind("failure").length === 1);
  deliver(w, session, { cancellation: { leaseId: "L", reason: "lease_expired" } });
  deliver(w, session, { cancellation: { leaseId: "NEVER_HELD", reason: "x" } });
  assert.deepEqual(w.heldLeases(), ["L"]);
  ack(w, session, "L", false, "LEASE_STALE");
  assert.deepEqual(w.heldLeases(), []);
  await sleep(300);
  assert.equal(session.ofKind("failure").length, 1);
  await stop(w);
});

test("a rejected outcome is given up; other rejections are only logged", async () => {
  const { w, session } = worker();
  deliver(w, session, { assignment: assignment("L", "declined") });
  await eventually(() => session.ofKind("failure").length === 1);
  for (const leaseId of ["", "OTHER", "L"]) {
    deliver(w, session, { rejected: { code: "INVALID_ARGUMENT", reason: "INVALID_ARGUMENT", message: "", leaseId } });
  }
  assert.deepEqual(w.heldLeases(), []);
  await sleep(300);
  assert.equal(session.ofKind("failure").length, 1, "not sent again: it cannot be recorded");
  await stop(w);
});

test("without a stream, ReportStepResult is retried until the lease's deadline", { timeout: 20_000 }, async () => {
  const { w } = worker();
  w["session"] = undefined;
  w["stub"] = new sdk.WorkerServiceClient(`127.0.0.1:${await freePort()}`, grpc.credentials.createInsecure());
  try {
    deliver(w, new FakeSession(), { assignment: assignment("L", "double", 3_000) });
    await sleep(2_000);
    assert.deepEqual(w.heldLeases(), ["L"]);
    await eventually(() => w.heldLeases().length === 0, 3_000);
    await eventually(() => w["background"].size === 0, 1_000);
  } finally {
    w["stub"].close();
  }
});

// --- lazy acknowledgement -------------------------------------------------------------------------

const kinds = (session) => session.sent.map((m) => Object.keys(m).find((k) => m[k] !== undefined));

test("a fast handler's assignment is never acknowledged: its result implies the ack", async () => {
  const { w, session } = worker({ ackDelayMs: 200 });
  deliver(w, session, { assignment: assignment("L1", "double") });
  deliver(w, session, { assignment: assignment("L2", "declined") });
  await eventually(() => session.sent.length === 2);
  await sleep(300); // past the delay: the timers were cleared with the outcomes
  assert.deepEqual(kinds(session).sort(), ["failure", "result"]);
  await stop(w);
});

test("a slow handler's assignment is acknowledged once, after ackDelayMs", async () => {
  const { w, session, release } = worker({ ackDelayMs: 50 });
  const arrived = performance.now();
  deliver(w, session, { assignment: assignment("SLOW", "hold") });
  assert.deepEqual(session.sent, []);
  assert.deepEqual(w.heldLeases(), ["SLOW"]); // held (and announced) before any ack
  await eventually(() => session.ofKind("ack").length === 1);
  assert.ok(performance.now() - arrived >= 49, "not before the delay");
  await sleep(200);
  assert.deepEqual(session.ofKind("ack"), [{ leaseId: "SLOW" }]);
  release();
  await eventually(() => session.ofKind("result").length === 1);
  assert.deepEqual(kinds(session), ["ack", "result"]);
  await stop(w);
});

test("ackDelayMs 0 acknowledges at once; a re-offered running lease is acknowledged at once, once", async () => {
  const eager = worker({ ackDelayMs: 0 });
  deliver(eager.w, eager.session, { assignment: assignment("NOW", "hold") });
  assert.deepEqual(kinds(eager.session), ["ack"]);
  const lazy = worker({ ackDelayMs: 100 });
  deliver(lazy.w, lazy.session, { assignment: assignment("AGAIN", "hold") });
  deliver(lazy.w, lazy.session, { assignment: assignment("AGAIN", "hold") }); // e.g. after a reconnect
  await sleep(200);
  assert.deepEqual(kinds(lazy.session), ["ack"]);
  for (const { w, release } of [eager, lazy]) {
    release();
    await eventually(() => w.inFlight === 0);
    await stop(w);
  }
});

test("ackDelayMs is capped at a quarter of the server's ack_timeout, and validated", () => {
  const { w } = worker({ ackDelayMs: 5_000 });
  assert.equal(w["effectiveAckDelayMs"](), 5_000);
  w["onWelcome"]({ workerId: "w", serverId: "s", ackTimeout: { seconds: 2, nanos: 0 }, unknownNamespaces: [] }, { setSilenceLimit() {}, send() {} });
  assert.equal(w["effectiveAckDelayMs"](), 500);
  for (const bad of [-1, Number.NaN, Infinity, "20"]) {
    assert.throws(() => new sdk.Worker("127.0.0.1:9", ["ns"], { ackDelayMs: bad }), sdk.InvalidArgumentError);
  }
});

test("an assignment for an unregistered handler fails without an ack", async () => {
  const { w, session } = worker({ ackDelayMs: 0 });
  deliver(w, session, { assignment: assignment("NONE", "missing") });
  await eventually(() => session.sent.length === 1);
  await sleep(50);
  assert.deepEqual(kinds(session), ["failure"]);
  assert.equal(session.ofKind("failure")[0].error.errorType, "HandlerNotFound");
  await stop(w);
});
