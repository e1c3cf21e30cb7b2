// The Node SDK's conformance worker: every behaviour of tests/conformance/README.md.
//
//   node tests/conformance/node_worker.mjs --address 127.0.0.1:50051 --namespace conformance \
//       [--capacity 10] [--worker-id ID]
//
// Imports the BUILT package (sdk-node/dist: `npm run build`). Registers the handlers sum,
// echo_config, sleep, fail_permanent, fail_then_succeed and fail_business, prints
// `READY <worker_id>` on stdout once the server has welcomed it, and on SIGTERM (or SIGINT)
// shuts down through Worker.shutdown and exits 0.
import { createRequire } from "node:module";
import { setTimeout as delay } from "node:timers/promises";
import { parseArgs } from "node:util";

const require = createRequire(import.meta.url);
const { Worker, PermanentError, RetryableError, ManualInterventionError } = require("../../sdk-node/dist/index.js");

/** Root: {value: input + 1}; otherwise {value: 1 + Σ parent values} (skipped parents add 0 and
 * are listed, sorted, under "skipped"). */
function sumValue(ctx) {
  const names = Object.keys(ctx.sequence.dependencies).sort();
  if (names.length === 0) return { value: Number(ctx.task.context.input) + 1 };
  let total = 1;
  const skipped = [];
  for (const name of names) {
    if (ctx.sequence.skipped(name)) {
      skipped.push(name);
      continue;
    }
    const value = (ctx.sequence.get(name) ?? {}).value;
    if (typeof value === "number" && Number.isFinite(value)) total += Math.trunc(value);
  }
  const out = { value: total };
  if (skipped.length > 0) out.skipped = skipped;
  return out;
}

const HANDLERS = {
  sum: async (ctx) => sumValue(ctx),
  echo_config: async (ctx) => ({ ...ctx.step.config }),
  sleep: async (ctx) => {
    await delay(Number(ctx.step.config.ms ?? 0), undefined, { signal: ctx.signal }).catch(() => undefined);
    return sumValue(ctx);
  },
  fail_permanent: async (ctx) => {
    throw new PermanentError(`step ${ctx.step.name} fails permanently`, { errorType: "ConformancePermanent" });
  },
  fail_then_succeed: async (ctx) => {
    const succeedOn = Number(ctx.step.config.succeed_on_attempt ?? 1);
    if (ctx.step.attempt < succeedOn) {
      throw new RetryableError(`attempt ${ctx.step.attempt} of ${ctx.step.name} fails (succeeds on ${succeedOn})`, {
        errorType: "ConformanceRetryable",
      });
    }
    return sumValue(ctx);
  },
  fail_business: async (ctx) => {
    throw new ManualInterventionError(`step ${ctx.step.name} needs an operator`, { errorType: "ConformanceBusinessRule" });
  },
};

const { values: args } = parseArgs({
  options: {
    address: { type: "string" },
    namespace: { type: "string", default: "conformance" },
    capacity: { type: "string", default: "10" },
    "worker-id": { type: "string" },
  },
});
if (!args.address) {
  process.stderr.write("usage: node_worker.mjs --address HOST:PORT [--namespace N] [--capacity C] [--worker-id ID]\n");
  process.exit(2);
}

const worker = new Worker(args.address, [args.namespace], {
  capacity: Number(args.capacity),
  workerId: args["worker-id"],
  logger: { info: (m) => process.stderr.write(`[worker] ${m}\n`), warn: (m) => process.stderr.write(`[worker] ${m}\n`) },
});
for (const [name, handler] of Object.entries(HANDLERS)) worker.register(name, handler);

let stopping;
const stop = () => {
  stopping ??= worker.shutdown({ drainTimeoutMs: 10_000 });
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

const running = worker.run();
worker.waitConnected().then(() => process.stdout.write(`READY ${worker.workerId}\n`));
try {
  await running;
  if (stopping) await stopping;
  process.exit(0);
} catch (error) {
  process.stderr.write(`worker failed: ${error?.stack ?? error}\n`);
  process.exit(1);
}
