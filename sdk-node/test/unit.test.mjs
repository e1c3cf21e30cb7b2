// Unit tests: error decoding, handler error classification, context shape, non-JSON results,
// argument validation before any RPC, the public export list.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { BinaryWriter } from "@bufbuild/protobuf/wire";

const require = createRequire(import.meta.url);
const grpc = require("@grpc/grpc-js");
const sdk = require("../dist/index.js");
const { toJsonObject } = require("../dist/internal/convert.js");
const { parseTraceparent } = require("../dist/internal/tracing.js");
const { ErrorClass, StepState } = sdk.resources;

function any(typeUrl, bytes) {
  return new BinaryWriter().uint32(10).string(typeUrl).uint32(18).bytes(bytes).finish();
}

function statusBytes({ code, message, reason, metadata = {}, violations = [], retrySeconds }) {
  const w = new BinaryWriter().uint32(8).int32(code).uint32(18).string(message);
  const info = new BinaryWriter().uint32(10).string(reason).uint32(18).string("tasker.dev");
  for (const [k, v] of Object.entries(metadata)) {
    info.uint32(26).bytes(new BinaryWriter().uint32(10).string(k).uint32(18).string(v).finish());
  }
  w.uint32(26).bytes(any("type.googleapis.com/google.rpc.ErrorInfo", info.finish()));
  if (violations.length) {
    const bad = new BinaryWriter();
    for (const [field, description] of violations) {
      bad.uint32(10).bytes(new BinaryWriter().uint32(10).string(field).uint32(18).string(description).finish());
    }
    w.uint32(26).bytes(any("type.googleapis.com/google.rpc.BadRequest", bad.finish()));
  }
  if (retrySeconds !== undefined) {
    const dur = new BinaryWriter().uint32(8).int64(retrySeconds).finish();
    w.uint32(26).bytes(any("type.googleapis.com/google.rpc.RetryInfo", new BinaryWriter().uint32(10).bytes(dur).finish()));
  }
  // An unknown detail type is skipped.
  w.uint32(26).bytes(any("type.googleapis.com/google.rpc.Help", new Uint8Array([10, 0])));
  return w.finish();
}

function serviceError(code, details, trailer) {
  const metadata = new grpc.Metadata();
  if (trailer) metadata.set("grpc-status-details-bin", Buffer.from(trailer));
  return Object.assign(new Error(`${code} ${details}`), { code, details, metadata });
}

test("fromRpcError maps codes to the error tree and decodes ErrorInfo, BadRequest, RetryInfo", () => {
  const raw = statusBytes({
    code: 3,
    message: "template is invalid",
    reason: "TEMPLATE_INVALID",
    metadata: { template: "t" },
    violations: [["step_templates[0].name", "required"], ["yaml", "line 3"]],
    retrySeconds: 2,
  });
  const error = sdk.fromRpcError(serviceError(grpc.status.INVALID_ARGUMENT, "ignored", raw));
  assert.ok(error instanceof sdk.InvalidArgumentError);
  assert.ok(error instanceof sdk.TaskerError);
  assert.equal(error.name, "InvalidArgumentError");
  assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
  assert.equal(error.codeName, "INVALID_ARGUMENT");
  assert.equal(error.message, "template is invalid");
  assert.equal(error.reason, "TEMPLATE_INVALID");
  assert.deepEqual(error.metadata, { template: "t" });
  assert.deepEqual(error.fieldViolations, [
    { field: "step_templates[0].name", description: "required" },
    { field: "yaml", description: "line 3" },
  ]);
  assert.equal(error.retryDelayMs, 2000);

  const cases = [
    [grpc.status.NOT_FOUND, sdk.NotFoundError],
    [grpc.status.ALREADY_EXISTS, sdk.AlreadyExistsError],
    [grpc.status.FAILED_PRECONDITION, sdk.FailedPreconditionError],
    [grpc.status.RESOURCE_EXHAUSTED, sdk.ResourceExhaustedError],
    [grpc.status.ABORTED, sdk.AbortedError],
    [grpc.status.UNAVAILABLE, sdk.UnavailableError],
    [grpc.status.INTERNAL, sdk.InternalError],
    [grpc.status.UNAUTHENTICATED, sdk.UnauthenticatedError],
    [grpc.status.PERMISSION_DENIED, sdk.PermissionDeniedError],
  ];
  for (const [code, Cls] of cases) {
    const e = sdk.fromRpcError(serviceError(code, "plain details"));
    assert.ok(e instanceof Cls, `${code} -> ${Cls.name}`);
    assert.equal(e.message, "plain details");
    assert.equal(e.reason, "");
  }
  const other = sdk.fromRpcError(serviceError(grpc.status.DEADLINE_EXCEEDED, "nope"));
  assert.equal(other.constructor, sdk.TaskerError);
  assert.equal(other.code, grpc.status.DEADLINE_EXCEEDED);
  // A garbled trailer does not hide the status.
  const garbled = sdk.fromRpcError(serviceError(grpc.status.NOT_FOUND, "gone", new Uint8Array([0xff, 0xff, 0xff])));
  assert.ok(garbled instanceof sdk.NotFoundError);
  assert.equal(garbled.message, "gone");
});

test("handler errors classify like the Python SDK", () => {
  const delayed = sdk.stepErrorFromException(new sdk.RetryableError("slow down", { retryAfter: 1.5, metadata: { n: 1 } }));
  assert.equal(delayed.errorClass, ErrorClass.ERROR_CLASS_DELAYED);
  assert.equal(delayed.errorType, "RetryableError");
  assert.deepEqual(delayed.retryAfter, { seconds: 1, nanos: 500_000_000 });
  assert.deepEqual(delayed.metadata, { n: 1 });
  const transient = sdk.stepErrorFromException(new sdk.RetryableError("blip", { immediate: true }));
  assert.equal(transient.errorClass, ErrorClass.ERROR_CLASS_TRANSIENT);
  class PaymentDeclined extends sdk.PermanentError {}
  const permanent = sdk.stepErrorFromException(new PaymentDeclined("card declined"));
  assert.equal(permanent.errorClass, ErrorClass.ERROR_CLASS_PERMANENT);
  assert.equal(permanent.errorType, "PaymentDeclined");
  assert.equal(permanent.message, "card declined");
  assert.match(permanent.backtrace, /PaymentDeclined: card declined/);
  assert.equal(sdk.BusinessLogicError, sdk.ManualInterventionError);
  const business = sdk.stepErrorFromException(new sdk.BusinessLogicError("rule", { errorType: "Rule" }));
  assert.equal(business.errorClass, ErrorClass.ERROR_CLASS_BUSINESS_LOGIC);
  assert.equal(business.errorType, "Rule");
  // Unclassified errors are DELAYED, named by their class.
  const plain = sdk.stepErrorFromException(new TypeError("x is undefined"));
  assert.equal(plain.errorClass, ErrorClass.ERROR_CLASS_DELAYED);
  assert.equal(plain.errorType, "TypeError");
  // Thrown non-Error values get a clear, classified failure.
  for (const thrown of ["boom", 42, undefined, null, { a: 1 }, Symbol("s")]) {
    const e = sdk.stepErrorFromException(thrown);
    assert.equal(e.errorClass, ErrorClass.ERROR_CLASS_DELAYED);
    assert.equal(e.errorType, "NonErrorThrown");
    assert.match(e.message, /handler threw a non-Error value/);
  }
  // Long messages are cut to the proto's limits.
  const long = sdk.stepErrorFromException(new Error("x".repeat(100_000)));
  assert.ok(Buffer.byteLength(long.message) <= 16 * 1024);
  assert.throws(() => new sdk.RetryableError("bad", { retryAfter: -1 }), sdk.InvalidArgumentError);
});

test("results must be JSON objects: BigInt, functions, circular values, NaN are named", () => {
  assert.deepEqual(toJsonObject({ a: 1, b: [1, undefined, "x"], c: undefined, d: new Date(0) }, "result"), {
    a: 1,
    b: [1, null, "x"],
    d: "1970-01-01T00:00:00.000Z",
  });
  const circular = { a: {} };
  circular.a.self = circular;
  const bad = [
    [{ n: 10n }, /result\.n is a BigInt/],
    [{ f: () => 1 }, /result\.f is a function/],
    [circular, /result\.a\.self is a circular reference/],
    [{ x: [NaN] }, /result\.x\[0\] is NaN/],
    [{ m: new Map() }, /result\.m is a Map/],
    [[1, 2], /must be a JSON object, got an array/],
    ["text", /must be a JSON object, got a string/],
  ];
  for (const [value, pattern] of bad) assert.throws(() => toJsonObject(value, "result"), pattern);
  // The same value twice (not a cycle) is fine.
  const shared = { v: 1 };
  assert.deepEqual(toJsonObject({ a: shared, b: shared }, "result"), { a: { v: 1 }, b: { v: 1 } });
});

test("context has the Python SDK's shape", () => {
  const ctx = sdk.contextFromProto(
    {
      task: { taskId: "7", namespace: "ns", name: "tpl", version: "1.0.0", context: { input: 3 }, correlationId: "c", priority: 5, tags: ["a"] },
      sequence: {
        dependencies: {
          a: { stepName: "a", state: StepState.STEP_STATE_COMPLETE, result: { value: 4 } },
          b: { stepName: "b", state: StepState.STEP_STATE_SKIPPED, result: {} },
        },
        sequenceNumber: 3,
        totalSteps: 4,
      },
      step: { stepId: "s1", name: "c", handler: "sum", config: { k: "v" }, attempt: 2, maxAttempts: 3, timeout: { seconds: 30, nanos: 0 }, isFallback: false },
    },
    { leaseId: "L1", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
  );
  assert.deepEqual(ctx.task, { taskId: "7", namespace: "ns", name: "tpl", version: "1.0.0", context: { input: 3 }, correlationId: "c", priority: 5, tags: ["a"] });
  assert.deepEqual(ctx.step, { stepId: "s1", name: "c", handler: "sum", config: { k: "v" }, attempt: 2, maxAttempts: 3, timeoutMs: 30_000, isFallback: false });
  assert.equal(ctx.sequence.sequenceNumber, 3);
  assert.equal(ctx.sequence.totalSteps, 4);
  assert.deepEqual(ctx.sequence.get("a"), { value: 4 });
  assert.equal(ctx.sequence.get("b"), undefined);
  assert.equal(ctx.sequence.get("zzz"), undefined);
  assert.equal(ctx.sequence.skipped("b"), true);
  assert.equal(ctx.sequence.skipped("a"), false);
  assert.equal(ctx.sequence.skipped("toString"), false);
  assert.deepEqual(Object.keys(ctx.sequence.dependencies).sort(), ["a", "b"]);
  assert.equal(ctx.sequence.dependencies.b.state, "skipped");
  assert.equal(ctx.leaseId, "L1");
  assert.ok(ctx.signal instanceof AbortSignal);
  assert.ok(Object.isFrozen(ctx) && Object.isFrozen(ctx.step));
});

test("traceparent parsing", () => {
  const sc = parseTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "k=v");
  assert.equal(sc.traceId, "0af7651916cd43dd8448eb211c80319c");
  assert.equal(sc.spanId, "b7ad6b7169203331");
  assert.equal(sc.traceFlags, 1);
  assert.equal(sc.isRemote, true);
  assert.equal(sc.traceState.get("k"), "v");
  assert.equal(parseTraceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01"), undefined);
  assert.equal(parseTraceparent("garbage"), undefined);
});

test("invalid client and worker arguments throw InvalidArgumentError before any RPC", async () => {
  // Nothing listens on port 1: an RPC would fail with UNAVAILABLE, not InvalidArgumentError.
  const client = new sdk.Client("127.0.0.1:1");
  try {
    const invalid = (error) => error instanceof sdk.InvalidArgumentError && error.code === undefined && error.fieldViolations.length === 1;
    await assert.rejects(client.getTask(""), invalid);
    await assert.rejects(client.getTask(42), invalid);
    await assert.rejects(client.createTask("ns", "t", { n: 1n }), (e) => invalid(e) && e.fieldViolations[0].field === "context.n");
    await assert.rejects(client.createTask("ns", "t", [1]), invalid);
    await assert.rejects(client.createTask("ns", "t", {}, { priority: 101 }), invalid);
    await assert.rejects(client.createTask("ns", "t", {}, { tags: "a" }), invalid);
    await assert.rejects(client.registerTemplate(""), invalid);
    await assert.rejects(client.cancelTask("1", { actor: 5 }), invalid);
    await assert.rejects(client.waitForTask("1", { timeoutMs: -1 }), invalid);
    assert.throws(() => client.listTasks({ state: "nope" }), invalid);
    assert.throws(() => client.listTasks({ pageSize: 0 }), invalid);
    assert.throws(() => client.watchTask(""), invalid);
    assert.throws(() => client.watchEvents({ afterSequence: -2 }), invalid);
    await assert.rejects(client.completeStepManually("1", "s", () => 1), invalid);
  } finally {
    client.close();
  }
  assert.throws(() => new sdk.Client(""), sdk.InvalidArgumentError);
  assert.throws(() => new sdk.Client("h:1", { credentials: {} }), sdk.InvalidArgumentError);
  assert.throws(() => new sdk.Worker("h:1", []), sdk.InvalidArgumentError);
  assert.throws(() => new sdk.Worker("h:1", ["ns"], { capacity: 0 }), sdk.InvalidArgumentError);
  assert.throws(() => new sdk.Worker("h:1", ["ns"], { workerId: "x".repeat(65) }), sdk.InvalidArgumentError);
  const worker = new sdk.Worker("h:1", "ns");
  assert.throws(() => worker.register("h", 42), sdk.InvalidArgumentError);
  assert.throws(() => worker.register(" h", () => ({})), sdk.InvalidArgumentError);
  worker.register("h", { call: () => ({}) });
  assert.throws(() => worker.register("h", () => ({})), sdk.InvalidArgumentError);
  assert.deepEqual(worker.handlers, ["h"]);
  await assert.rejects(new sdk.Worker("h:1", "ns").run(), sdk.TaskerError); // no handlers
});

test("the public API is exactly this list", () => {
  const expected = [
    "AbortedError", "AlreadyExistsError", "BusinessLogicError", "Client", "DEFAULT_ACTOR",
    "FINAL_TASK_STATES", "FINISHED_TASK_STATES", "FailedPreconditionError", "HandlerError", "InternalError", "InvalidArgumentError",
    "ManualInterventionError", "NotFoundError", "PermanentError", "PermissionDeniedError", "ResourceExhaustedError",
    "RetryableError", "SDK_VERSION", "SequenceInfo", "TASK_STATES", "TERMINAL_EVENTS",
    "TERMINAL_TASK_STATES", "TaskEventBridge", "TaskerError", "UnauthenticatedError",
    "UnavailableError", "Worker",
    "bridgeEvents", "contextFromProto", "fromRpcError", "stepErrorFromException",
    // generated code
    "AdminServiceClient", "AdminServiceService", "EventServiceClient", "EventServiceService",
    "TaskServiceClient", "TaskServiceService", "TemplateServiceClient", "TemplateServiceService",
    "WorkerServiceClient", "WorkerServiceService", "adminService", "eventService", "resources",
    "taskService", "templateService", "workerService",
  ].sort();
  assert.deepEqual(Object.keys(sdk).filter((k) => k !== "__esModule").sort(), expected);
  const pkg = require("../package.json");
  assert.equal(sdk.SDK_VERSION, pkg.version);
});
