// The worker: runs step handlers for leases received on one WorkerService.Connect stream.
//
//   const worker = new Worker("127.0.0.1:50051", ["fulfillment"], { capacity: 10 });
//   worker.register("validate_order", async (ctx) => ({ valid: true }));
//   worker.register("ship_order", new ShipOrder());          // an object with call(ctx)
//   const running = worker.run();                            // until shutdown()
//   ...
//   await worker.shutdown({ drainTimeoutMs: 30_000 });
//
// Lifecycle of a lease: assignment -> ack (at once) -> handler (under the step timeout, in an
// OpenTelemetry span) -> result | failure -> result_ack. Running leases are heartbeated every
// heartbeat_interval. A cancellation (or a heartbeat answer saying the lease is gone) aborts the
// context's signal and reports nothing. A step timeout aborts the signal and reports TRANSIENT
// StepTimeout. JavaScript cannot kill a promise: a handler that ignores its signal keeps running
// in the background, but its outcome is no longer waited for nor reported.
//
// If the stream breaks, handlers keep running; results are then sent with the unary
// ReportStepResult (and leases extended with the unary Heartbeat) while the worker reconnects
// with exponential backoff and jitter. Results sent on a stream that broke before their
// result_ack are re-sent the same way (the server records an outcome once).
//
// Shutdown is ordered and idempotent: drain -> stop taking work -> wait for in-flight handlers
// (up to drainTimeoutMs; the rest are aborted and reported as TRANSIENT WorkerShutdown) -> flush
// results -> close.
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import type { StepError } from "../generated/tasker/v1/resources";
import {
  WorkerServiceClient,
  type Assignment,
  type ConnectResponse,
  type LeaseStatus,
  type ReportStepResultRequest,
  type StepFailure,
  type StepSuccess,
  type Welcome,
} from "../generated/tasker/v1/worker_service";
import { SDK_VERSION } from "../version";
import {
  Backoff,
  callMetadata,
  makeClient,
  openChannel,
  sleep,
  unary,
  validateConnection,
  type ConnectionOptions,
} from "./channel";
import { contextFromAssignment, type StepContext } from "./context";
import { msToDuration, NotJsonError, toJsonObject } from "./convert";
import { argumentError, fromRpcError, PermanentError, RetryableError, stepErrorFromException, TaskerError } from "./errors";
import { Session } from "./session";
import { withHandlerSpan } from "./tracing";

export type HandlerResult = Record<string, unknown> | null | undefined | void;
export type HandlerFunction = (ctx: StepContext) => HandlerResult | Promise<HandlerResult>;
/** A class-based handler: any object with `call(ctx)`. */
export interface StepHandler {
  call(ctx: StepContext): HandlerResult | Promise<HandlerResult>;
}
export type Handler = HandlerFunction | StepHandler;

export interface WorkerOptions extends ConnectionOptions {
  /** Maximum steps run at once, 1..10,000 (default 10). */
  capacity?: number;
  /** Stable id, at most 64 characters (default: a random id kept across reconnects). */
  workerId?: string;
  /** Human-readable name (default host:pid). */
  name?: string;
  /** Where diagnostics go (default: console.warn for warnings, nothing for info). */
  logger?: WorkerLogger;
}

export interface WorkerLogger {
  info(message: string): void;
  warn(message: string): void;
}

export interface ShutdownOptions {
  /** How long in-flight handlers may run before they are aborted (default 30 s). */
  drainTimeoutMs?: number;
}

// Used until the server's Welcome says otherwise.
const DEFAULT_HEARTBEAT_INTERVAL_MS = 10_000;
const DEFAULT_KEEPALIVE_TIMEOUT_MS = 60_000;
const WELCOME_TIMEOUT_MS = 30_000;
const UNARY_TIMEOUT_MS = 10_000;
const FLUSH_TIMEOUT_MS = 5_000;
// Errors on which reconnecting cannot help.
const FATAL_CODES = new Set([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNIMPLEMENTED,
]);
const RETRY_UNARY = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED, grpc.status.UNKNOWN]);

type AbortCause = "server" | "timeout" | "shutdown";

interface Lease {
  leaseId: string;
  ctx: StepContext;
  controller: AbortController;
  cause: AbortCause | undefined;
  /** Settles when the lease's outcome has been handed to the reporter (or dropped). */
  finished: Promise<void>;
}

type Outcome = { kind: "result"; value: StepSuccess } | { kind: "failure"; value: StepFailure };

const silentLogger: WorkerLogger = { info: () => undefined, warn: (m) => console.warn(`[tasker] ${m}`) };

/** Runs registered step handlers for the given namespaces over one Connect stream. */
export class Worker {
  readonly address: string;
  readonly namespaces: readonly string[];
  readonly capacity: number;
  readonly name: string;
  private currentWorkerId: string;
  private readonly token: string | undefined;
  private readonly credentials: grpc.ChannelCredentials | undefined;
  private readonly log: WorkerLogger;
  private readonly handlerMap = new Map<string, HandlerFunction>();

  private readonly leases = new Map<string, Lease>();
  /** Results sent on the stream, not yet acknowledged: re-sent by unary if it breaks. */
  private unacked = new Map<string, Outcome>();
  private readonly background = new Set<Promise<void>>();
  private session: Session | undefined;
  private channel: grpc.Channel | undefined;
  private stub: WorkerServiceClient | undefined;
  private heartbeatIntervalMs = DEFAULT_HEARTBEAT_INTERVAL_MS;
  private keepaliveTimeoutMs = DEFAULT_KEEPALIVE_TIMEOUT_MS;
  private running = false;
  private stopping = false;
  private readonly stop = new AbortController();
  private connectedWaiters: (() => void)[] = [];
  private everConnected = false;
  private runPromise: Promise<void> | undefined;
  private shutdownPromise: Promise<void> | undefined;

  constructor(address: string, namespaces: string[] | string, options: WorkerOptions = {}) {
    validateConnection(address, options);
    const list = typeof namespaces === "string" ? [namespaces] : namespaces;
    if (!Array.isArray(list) || list.length === 0 || !list.every((n) => typeof n === "string" && n.length > 0)) {
      throw argumentError("namespaces", "must be a non-empty array of non-empty strings");
    }
    const capacity = options.capacity ?? 10;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 10_000) {
      throw argumentError("capacity", "must be an integer between 1 and 10,000");
    }
    if (options.workerId !== undefined && (typeof options.workerId !== "string" || options.workerId.length < 1 || options.workerId.length > 64)) {
      throw argumentError("workerId", "must be 1..64 characters");
    }
    this.address = address;
    this.namespaces = Object.freeze([...list]);
    this.capacity = capacity;
    this.currentWorkerId = options.workerId ?? randomUUID().replace(/-/g, "");
    this.name = options.name ?? `${hostname()}:${process.pid}`;
    this.token = options.token;
    this.credentials = options.credentials;
    this.log = options.logger ?? silentLogger;
  }

  /** The worker's id (as chosen, or as assigned by the server's welcome). */
  get workerId(): string {
    return this.currentWorkerId;
  }

  /** Registered handler names, sorted. */
  get handlers(): string[] {
    return [...this.handlerMap.keys()].sort();
  }

  /** Leases currently held. */
  get inFlight(): number {
    return this.leases.size;
  }

  /** True while a stream is open and welcomed. */
  get connected(): boolean {
    return this.session !== undefined;
  }

  // --- registration -----------------------------------------------------------------------------

  /** Register a handler: a function of the context, or an object with `call(ctx)`. */
  register(name: string, handler: Handler): this {
    if (typeof name !== "string" || name.length === 0 || name.trim() !== name) {
      throw argumentError("name", `invalid handler name ${JSON.stringify(name)}`);
    }
    if (this.running) throw new TaskerError("register handlers before run(): the hello lists them");
    if (this.handlerMap.has(name)) throw argumentError("name", `handler ${JSON.stringify(name)} is already registered`);
    let fn: HandlerFunction;
    if (typeof handler === "function") fn = handler;
    else if (handler !== null && typeof handler === "object" && typeof (handler as StepHandler).call === "function") {
      fn = (ctx) => (handler as StepHandler).call(ctx);
    } else throw argumentError("handler", "must be a function or an object with a call(context) method");
    this.handlerMap.set(name, fn);
    return this;
  }

  /** Resolves once the server has welcomed this worker (rejects after `timeoutMs`). */
  waitConnected(timeoutMs?: number): Promise<void> {
    if (this.everConnected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.connectedWaiters.push(done);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.connectedWaiters = this.connectedWaiters.filter((w) => w !== done);
          reject(new TaskerError(`worker not connected within ${timeoutMs} ms`, { reason: "TIMEOUT" }));
        }, timeoutMs);
      }
    });
  }

  // --- main loop ----------------------------------------------------------------------------------

  /**
   * Connect and run handlers until shutdown() completes (resolves). Rejects with a TaskerError
   * for errors that reconnecting cannot fix (INVALID_ARGUMENT, UNAUTHENTICATED,
   * PERMISSION_DENIED, UNIMPLEMENTED).
   */
  run(): Promise<void> {
    if (this.handlerMap.size === 0) return Promise.reject(new TaskerError("register at least one handler before run()"));
    if (this.runPromise) return Promise.reject(new TaskerError("this worker is already running"));
    if (this.stop.signal.aborted) return Promise.reject(new TaskerError("this worker has been shut down"));
    this.runPromise = this.loop();
    return this.runPromise;
  }

  private async loop(): Promise<void> {
    this.running = true;
    this.channel = openChannel(this.address, this.credentials);
    this.stub = makeClient(WorkerServiceClient, this.address, this.channel);
    const heartbeats = setInterval(() => this.heartbeatTick(), 250);
    const backoff = new Backoff(100, 5_000);
    try {
      while (!this.stop.signal.aborted) {
        const error = await this.runSession(backoff);
        if (this.stop.signal.aborted) break;
        const decoded = error ? fromRpcError(error) : undefined;
        if (decoded?.code !== undefined && FATAL_CODES.has(decoded.code)) throw decoded;
        const delay = backoff.nextDelayMs();
        this.log.warn(`worker stream lost (${decoded?.message ?? "ended by the server"}); reconnecting in ${Math.round(delay)} ms`);
        await sleep(delay, this.stop.signal);
      }
    } finally {
      clearInterval(heartbeats);
      if (!this.stop.signal.aborted) {
        // Fatal: stop handlers without reporting; their leases expire on the server.
        for (const lease of this.leases.values()) this.abortLease(lease, "server", "worker stopped");
      }
      if (this.background.size > 0 && this.stop.signal.aborted) {
        // Outcomes still travelling by unary (e.g. after a lost stream) need the channel.
        await Promise.race([Promise.allSettled([...this.background]), sleep(FLUSH_TIMEOUT_MS)]);
      }
      this.channel.close();
      this.stub = undefined;
      this.running = false;
    }
  }

  private async runSession(backoff: Backoff): Promise<Error | undefined> {
    const hello = {
      workerId: this.currentWorkerId,
      name: this.name,
      namespaces: [...this.namespaces],
      handlers: this.handlers,
      capacity: this.capacity,
      sdkLanguage: "node",
      sdkVersion: SDK_VERSION,
      handsOffLeases: false, // handlers run here, on this stream's leases
    };
    const session: Session = new Session(this.stub!, callMetadata(this.token), {
      onWelcome: (welcome) => {
        this.onWelcome(welcome, session);
        backoff.reset();
      },
      onMessage: (message) => this.dispatch(session, message),
    }, WELCOME_TIMEOUT_MS);
    const onStop = () => session.close();
    this.stop.signal.addEventListener("abort", onStop, { once: true });
    try {
      session.open(hello);
      return await session.done;
    } finally {
      this.stop.signal.removeEventListener("abort", onStop);
      if (this.session === session) this.session = undefined;
      session.close();
      this.resendUnacked();
    }
  }

  private onWelcome(welcome: Welcome, session: Session): void {
    this.currentWorkerId = welcome.workerId || this.currentWorkerId;
    const hb = welcome.heartbeatInterval ? welcome.heartbeatInterval.seconds * 1000 + welcome.heartbeatInterval.nanos / 1e6 : 0;
    if (hb > 0) this.heartbeatIntervalMs = hb;
    if (welcome.keepaliveTimeout) {
      const ka = welcome.keepaliveTimeout.seconds * 1000 + welcome.keepaliveTimeout.nanos / 1e6;
      this.keepaliveTimeoutMs = ka > 0 ? ka : 0;
    }
    session.setSilenceLimit(this.keepaliveTimeoutMs);
    if (welcome.unknownNamespaces.length > 0) {
      this.log.info(`namespaces without templates (yet): ${welcome.unknownNamespaces.join(", ")}`);
    }
    this.session = session;
    this.everConnected = true;
    for (const waiter of this.connectedWaiters.splice(0)) waiter();
    this.log.info(`worker ${this.currentWorkerId} connected to ${this.address} (server ${welcome.serverId})`);
    if (this.stopping) session.send({ drain: {} });
    // Leases that survived a reconnect: extend them right away.
    if (this.leases.size > 0) session.send({ heartbeat: { leaseIds: [...this.leases.keys()] } });
  }

  // --- messages from the server -------------------------------------------------------------------

  private dispatch(session: Session, message: ConnectResponse): void {
    if (message.assignment) this.onAssignment(session, message.assignment);
    else if (message.cancellation) {
      const lease = this.leases.get(message.cancellation.leaseId);
      if (lease) this.abortLease(lease, "server", message.cancellation.reason || "cancelled by the server");
    } else if (message.keepalive) session.send({ pong: { nonce: message.keepalive.nonce } });
    else if (message.resultAck) {
      const ack = message.resultAck;
      this.unacked.delete(ack.leaseId);
      if (!ack.accepted) this.log.warn(`result for lease ${ack.leaseId} rejected: ${ack.reason} ${ack.message}`);
    } else if (message.heartbeatAck) this.applyLeaseStatuses(message.heartbeatAck.leases);
  }

  private onAssignment(session: Session, assignment: Assignment): void {
    const leaseId = assignment.leaseId;
    if (this.leases.has(leaseId)) {
      session.send({ ack: { leaseId } }); // re-offered after a reconnect: already running
      return;
    }
    if (this.stopping) {
      // Not acknowledged: the server re-offers it to another worker after ack_timeout.
      this.log.info(`draining; not taking lease ${leaseId}`);
      return;
    }
    const controller = new AbortController();
    let ctx: StepContext;
    try {
      ctx = contextFromAssignment(assignment, controller.signal);
    } catch (error) {
      session.send({ ack: { leaseId } });
      this.reportFailure(leaseId, new PermanentError(`invalid assignment: ${(error as Error).message}`, { errorType: "InvalidAssignment" }), 0);
      return;
    }
    session.send({ ack: { leaseId } });
    const handler = this.handlerMap.get(ctx.step.handler);
    if (!handler) {
      const error = new RetryableError(`handler ${JSON.stringify(ctx.step.handler)} is not registered on worker ${this.currentWorkerId}`, {
        errorType: "HandlerNotFound",
      });
      this.reportFailure(leaseId, error, 0);
      return;
    }
    const lease: Lease = { leaseId, ctx, controller, cause: undefined, finished: Promise.resolve() };
    this.leases.set(leaseId, lease);
    lease.finished = this.execute(lease, handler);
  }

  private abortLease(lease: Lease, cause: AbortCause, reason: string): void {
    if (lease.controller.signal.aborted) return;
    lease.cause = cause;
    if (cause === "server") this.log.info(`lease ${lease.leaseId} cancelled by the server (${reason})`);
    const error = new Error(reason);
    error.name = cause === "timeout" ? "StepTimeout" : cause === "shutdown" ? "WorkerShutdown" : "LeaseCancelled";
    lease.controller.abort(error);
  }

  private applyLeaseStatuses(statuses: LeaseStatus[]): void {
    for (const status of statuses) {
      const lease = this.leases.get(status.leaseId);
      if (lease && !status.active) this.abortLease(lease, "server", "lease no longer active");
    }
  }

  // --- running a handler --------------------------------------------------------------------------

  private async execute(lease: Lease, handler: HandlerFunction): Promise<void> {
    const { ctx } = lease;
    const started = performance.now();
    const elapsed = () => (performance.now() - started) / 1000;
    const timeoutMs = ctx.step.timeoutMs;
    const timer = timeoutMs > 0 ? setTimeout(() => this.abortLease(lease, "timeout", `step ${ctx.step.name} exceeded its timeout of ${timeoutMs} ms`), timeoutMs) : undefined;
    const aborted = new Promise<never>((_, reject) => {
      const onAbort = () => reject(lease.controller.signal.reason);
      if (lease.controller.signal.aborted) onAbort();
      else lease.controller.signal.addEventListener("abort", onAbort, { once: true });
    });
    aborted.catch(() => undefined);
    const run = withHandlerSpan(
      {
        handler: ctx.step.handler,
        taskId: ctx.task.taskId,
        namespace: ctx.task.namespace,
        step: ctx.step.name,
        attempt: ctx.step.attempt,
        correlationId: ctx.task.correlationId,
        traceparent: ctx.traceparent,
        tracestate: ctx.tracestate,
      },
      // Called through a promise so a synchronous throw is a rejection like any other.
      async () => handler(ctx),
    );
    run.catch(() => undefined); // may settle after we stopped waiting for it
    try {
      let value: unknown;
      try {
        value = await Promise.race([run, aborted]);
      } catch (error) {
        if (lease.cause === "server") return; // the server already knows; report nothing
        if (lease.cause === "timeout") {
          this.reportFailure(lease.leaseId, new RetryableError(`step ${JSON.stringify(ctx.step.name)} exceeded its timeout of ${timeoutMs} ms`, {
            immediate: true,
            errorType: "StepTimeout",
          }), elapsed());
          return;
        }
        if (lease.cause === "shutdown") {
          this.reportFailure(lease.leaseId, new RetryableError("the worker shut down before the handler finished", {
            immediate: true,
            errorType: "WorkerShutdown",
          }), elapsed());
          return;
        }
        this.reportFailure(lease.leaseId, error, elapsed());
        return;
      }
      this.reportSuccess(lease.leaseId, value, elapsed());
    } finally {
      clearTimeout(timer);
      this.leases.delete(lease.leaseId);
    }
  }

  // --- reporting outcomes -------------------------------------------------------------------------

  private reportSuccess(leaseId: string, value: unknown, elapsedSeconds: number): void {
    let result: Record<string, unknown>;
    try {
      result = toJsonObject(value ?? {}, "result");
    } catch (error) {
      const problem = error instanceof NotJsonError
        ? `handler result is not a JSON object: ${error.message}`
        : `handler result could not be serialised: ${String(error)}`;
      this.reportFailure(leaseId, new PermanentError(problem, { errorType: "InvalidResult" }), elapsedSeconds);
      return;
    }
    this.sendOutcome(leaseId, { kind: "result", value: { leaseId, result, executionTime: msToDuration(elapsedSeconds * 1000) } });
  }

  private reportFailure(leaseId: string, thrown: unknown, elapsedSeconds: number): void {
    if (!(thrown instanceof RetryableError || thrown instanceof PermanentError)) {
      this.log.info(`handler for lease ${leaseId} failed: ${thrown instanceof Error ? thrown.message : String(thrown)}`);
    }
    let error: StepError;
    try {
      error = stepErrorFromException(thrown);
    } catch (bad) {
      error = stepErrorFromException(new Error(`unreportable handler error: ${String(bad)}`));
    }
    this.sendOutcome(leaseId, { kind: "failure", value: { leaseId, error, executionTime: msToDuration(elapsedSeconds * 1000) } });
  }

  private sendOutcome(leaseId: string, outcome: Outcome): void {
    const session = this.session;
    const message = outcome.kind === "result" ? { result: outcome.value } : { failure: outcome.value };
    if (session && session.send(message)) this.unacked.set(leaseId, outcome);
    else this.spawn(this.reportUnary(outcome));
  }

  private resendUnacked(): void {
    const pending = this.unacked;
    this.unacked = new Map();
    for (const outcome of pending.values()) this.spawn(this.reportUnary(outcome));
  }

  private spawn(promise: Promise<void>): void {
    const tracked = promise.catch((error) => this.log.warn(`background report failed: ${String(error)}`));
    this.background.add(tracked);
    void tracked.finally(() => this.background.delete(tracked));
  }

  /** Report an outcome with ReportStepResult, retrying while the server is unreachable. */
  private async reportUnary(outcome: Outcome): Promise<void> {
    const request: ReportStepResultRequest = { workerId: this.currentWorkerId };
    if (outcome.kind === "result") request.success = outcome.value;
    else request.failure = outcome.value;
    const backoff = new Backoff(200, 5_000);
    while (this.stub) {
      try {
        await unary(this.stub, this.stub.reportStepResult, request, callMetadata(this.token), UNARY_TIMEOUT_MS);
        return;
      } catch (error) {
        const code = (error as TaskerError).code;
        if (code === undefined || !RETRY_UNARY.has(code) || backoff.failures >= 8) {
          this.log.warn(`outcome of lease ${outcome.value.leaseId} not recorded: ${(error as Error).message}`);
          return;
        }
        await sleep(backoff.nextDelayMs());
      }
    }
  }

  // --- heartbeats ---------------------------------------------------------------------------------

  private lastHeartbeat = performance.now();
  private unaryHeartbeatInFlight = false;

  private heartbeatTick(): void {
    if (performance.now() - this.lastHeartbeat < this.heartbeatIntervalMs) return;
    this.lastHeartbeat = performance.now();
    const leaseIds = [...this.leases.keys()];
    if (leaseIds.length === 0) return;
    if (this.session?.send({ heartbeat: { leaseIds } })) return;
    const stub = this.stub;
    if (!stub || this.unaryHeartbeatInFlight) return;
    // No stream: keep the leases alive with the unary Heartbeat.
    this.unaryHeartbeatInFlight = true;
    unary(stub, stub.heartbeat, { workerId: this.currentWorkerId, leaseIds }, callMetadata(this.token), UNARY_TIMEOUT_MS)
      .then((resp) => this.applyLeaseStatuses(resp.leases))
      .catch(() => undefined)
      .finally(() => (this.unaryHeartbeatInFlight = false));
  }

  // --- shutdown -----------------------------------------------------------------------------------

  /**
   * Drain, wait up to `drainTimeoutMs` for in-flight handlers (then abort them, reporting
   * TRANSIENT WorkerShutdown), flush results and close. Idempotent; safe before, during or after
   * run(). Resolves when run() has finished.
   */
  shutdown(options: ShutdownOptions = {}): Promise<void> {
    const drainTimeoutMs = options.drainTimeoutMs ?? 30_000;
    if (!(typeof drainTimeoutMs === "number" && drainTimeoutMs >= 0)) {
      return Promise.reject(argumentError("drainTimeoutMs", "must be a number of milliseconds >= 0"));
    }
    this.shutdownPromise ??= this.doShutdown(drainTimeoutMs);
    return this.shutdownPromise;
  }

  private async doShutdown(drainTimeoutMs: number): Promise<void> {
    this.stopping = true;
    this.session?.send({ drain: {} });
    const inFlight = [...this.leases.values()];
    if (inFlight.length > 0) {
      this.log.info(`draining ${inFlight.length} in-flight step(s) (up to ${drainTimeoutMs} ms)`);
      const all = Promise.allSettled(inFlight.map((l) => l.finished));
      await Promise.race([all, sleep(drainTimeoutMs)]);
      for (const lease of this.leases.values()) this.abortLease(lease, "shutdown", "the worker is shutting down");
      await all;
    }
    // Give results on the stream a moment to be acknowledged before closing it; whatever is
    // still unacknowledged then is re-sent by unary as the session ends.
    const until = performance.now() + FLUSH_TIMEOUT_MS;
    while (this.unacked.size > 0 && this.session && performance.now() < until) await sleep(20);
    this.stop.abort();
    if (this.runPromise) await this.runPromise.catch(() => undefined);
  }
}
