// Shared by the e2e tests: start the real Tasker server (../../.venv/bin/tasker, or TASKER_BIN)
// on a free port with a throwaway SQLite file and short timers, and stop it.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
export const sdk = require("../dist/index.js");

const here = path.dirname(fileURLToPath(import.meta.url));
export const taskerBin = process.env.TASKER_BIN || path.resolve(here, "../../.venv/bin/tasker");

export const FAST_TIMERS = {
  "sweep-interval-seconds": "0.2",
  "heartbeat-interval-seconds": "0.5",
  "keepalive-interval-seconds": "0.5",
  "keepalive-timeout-seconds": "3",
  "ack-timeout-seconds": "2",
  "lease-grace-seconds": "1",
  "shutdown-grace-seconds": "1",
  "log-format": "text",
  "log-level": "warning",
};

export function freePort() {
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

/** Start `tasker serve`; resolves once a client can reach it. Returns { address, stop }. */
export async function startServer({ address, dir } = {}) {
  if (!fs.existsSync(taskerBin)) throw new Error(`server executable not found: ${taskerBin} (run make install)`);
  const tmpDir = dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "tasker-node-sdk-"));
  address ??= `127.0.0.1:${await freePort()}`;
  const args = ["serve", "--listen", address, "--database-url", `sqlite+aiosqlite:///${path.join(tmpDir, "t.db")}`];
  for (const [k, v] of Object.entries(FAST_TIMERS)) args.push(`--${k}`, v);
  const child = spawn(taskerBin, args, { stdio: ["ignore", "ignore", "pipe"] });
  let output = "";
  child.stderr.on("data", (d) => (output += d));
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  /** SIGTERM (or `signal`), wait for the exit; `keep` leaves the database for a restart. */
  const stop = async ({ signal = "SIGTERM", keep = false } = {}) => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    if (!keep) fs.rmSync(tmpDir, { recursive: true, force: true });
  };
  try {
    const client = await sdk.Client.connect(address, { timeoutMs: 20_000 });
    client.close();
  } catch (error) {
    await stop();
    throw new Error(`server did not start: ${error.message}\n${output}`);
  }
  return { address, dir: tmpDir, stop, output: () => output };
}

export function templateYaml({ name, namespace, steps }) {
  const lines = [`name: ${name}`, `namespace: ${namespace}`, "version: 1.0.0", "step_templates:"];
  for (const s of steps) {
    lines.push(`  - name: ${s.name}`, `    handler_class: ${s.handler}`);
    if (s.dependsOn) lines.push(`    depends_on_steps: [${s.dependsOn.join(", ")}]`);
    if (s.timeoutSeconds) lines.push(`    timeout_seconds: ${s.timeoutSeconds}`);
    if (s.retry) lines.push(`    retry: ${JSON.stringify(s.retry)}`);
    if (s.config) lines.push(`    handler_config: ${JSON.stringify(s.config)}`);
  }
  return lines.join("\n") + "\n";
}
