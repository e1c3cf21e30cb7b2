// End-to-end smoke test: starts the real Tasker server as a child process and
// calls it through the generated grpc-js client.
//
// The server binary defaults to ../.venv/bin/tasker (created by `make install`);
// set TASKER_BIN to use another executable with the same CLI.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const grpc = require("@grpc/grpc-js");
const sdk = require("../dist/index.js");

const here = path.dirname(fileURLToPath(import.meta.url));
const taskerBin = process.env.TASKER_BIN || path.resolve(here, "../../.venv/bin/tasker");
const STARTUP_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 15_000;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function getTask(client, taskId) {
  return new Promise((resolve) => {
    const deadline = new Date(Date.now() + 2000);
    client.getTask({ taskId }, new grpc.Metadata(), { deadline }, (err, res) => resolve({ err, res }));
  });
}

let child;
let exited; // Promise resolving to { code, signal }
let output = "";
let tmpDir;
let address;

async function startServer() {
  assert.ok(fs.existsSync(taskerBin), `server executable not found: ${taskerBin} (run make install)`);
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "tasker-node-test-"));
  const port = await freePort();
  address = `127.0.0.1:${port}`;
  child = spawn(
    taskerBin,
    ["serve", "--listen", address, "--database-url", `sqlite+aiosqlite:///${path.join(tmpDir, "t.db")}`],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
}

after(async () => {
  if (child && child.exitCode === null && child.signalCode === null) {
    child.kill("SIGKILL");
    await exited;
  }
  if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
});

test("generated clients exist for all five services", () => {
  for (const name of ["TaskService", "TemplateService", "WorkerService", "AdminService", "EventService"]) {
    const Client = sdk[`${name}Client`];
    assert.equal(typeof Client, "function", `${name}Client missing`);
    assert.equal(typeof Client.service, "object", `${name}Client.service missing`);
    const def = sdk[`${name}Service`];
    assert.ok(def && Object.keys(def).length > 0, `${name}Service definition missing`);
    for (const method of Object.values(def)) {
      assert.match(method.path, new RegExp(`^/tasker\\.v1\\.${name}/`));
    }
  }
  assert.equal(typeof sdk.TaskServiceClient.prototype.getTask, "function");
});

test("server answers GetTask for an unknown task with NOT_FOUND and stops on SIGTERM", async () => {
  await startServer();
  const client = new sdk.TaskServiceClient(address, grpc.credentials.createInsecure(), {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 500,
  });
  try {
    const start = Date.now();
    let result;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        assert.fail(`server exited early (code ${child.exitCode}, signal ${child.signalCode}):\n${output}`);
      }
      result = await getTask(client, "999999");
      const code = result.err?.code;
      if (code !== grpc.status.UNAVAILABLE && code !== grpc.status.DEADLINE_EXCEEDED) break;
      if (Date.now() - start > STARTUP_TIMEOUT_MS) {
        assert.fail(`server not reachable at ${address} after ${STARTUP_TIMEOUT_MS} ms:\n${output}`);
      }
      await sleep(200);
    }
    assert.ok(result.err, `expected NOT_FOUND, got a response: ${JSON.stringify(result.res)}`);
    assert.equal(result.err.code, grpc.status.NOT_FOUND, `expected NOT_FOUND (5), got ${result.err.code}: ${result.err.details}`);
  } finally {
    client.close();
  }

  child.kill("SIGTERM");
  let timer;
  const timeout = new Promise((r) => (timer = setTimeout(() => r("timeout"), STOP_TIMEOUT_MS)));
  const outcome = await Promise.race([exited, timeout]);
  clearTimeout(timer);
  assert.notEqual(outcome, "timeout", `server did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM:\n${output}`);
});
