// The worker: runs step handlers for leases received on one WorkerService.Connect stream.
//
//   const worker = new Worker("127.0.0.1:50051", ["fulfillment"], { capacity: 10 });
//   worker.register("validate_order", async (ctx) => ({ valid: true }));
//   worker.register("ship_order", new ShipOrder());          // an object with call(ctx)
//   const running = worker.run();                            // until shutdown()
//   ...
//   await worker.shutdown({ drainTimeoutMs: 30_000 });
//
// Lifecycle of a lease: assignment -> handler (under the step timeout, in an OpenTelemetry span)
// -> result | failure -> result_ack. The assignment is acknowledged only if its handler is still
// running ackDelayMs after it arrived: a result or failure implies the acknowledgement, so a
// short step costs one message from the worker instead of two. Running leases are heartbeated every
// heartbeat_interval. A cancellation (or a heartbeat answer saying the lease is gone) aborts the
// context's signal and reports nothing. A step timeout aborts the signal and reports TRANSIENT
// StepTimeout. JavaScript cannot kill a promise: a handler that ignores its signal keeps running
// in the background, but its outcome is no longer waited for nor reported.
//
// If the stream breaks, handlers keep running (leases are extended with the unary Heartbeat)
// while the worker reconnects with exponential backoff and jitter; every hello names the leases
// the worker still holds (heldLeases: handlers running, outcomes not yet acknowledged).
//
// An outcome (result or failure) is kept until the server acknowledges it, at most until the
// lease's hard deadline (Assignment.leaseDeadline): it goes on the stream, and is sent again after
// a backoff when the result_ack says UNAVAILABLE, right after the welcome of a new stream when the
// stream broke, and by the unary ReportStepResult (retried with backoff) while there is no stream.
// It is dropped when recorded, or refused for good (LEASE_STALE, NOT_FOUND, ...). The server
// records an outcome once, so sending it again is harmless.
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
  type MessageRejected,
  type ReportStepResultRequest,
  type ResultAck,
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
  /**
   * How long a handler may run before its assignment is acknowledged (default 20 ms); one that
   * finishes sooner is never acknowledged (its outcome implies it). Capped at a quarter of the
   * server's ack_timeout; 0 acknowledges every assignment at once.
   */
  ackDelayMs?: number;
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
const DEFAULT_ACK_DELAY_MS = 20;
// Errors on which reconnecting cannot help.
const FATAL_CODES = new Set([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNIMPLEMENTED,
]);
// ReportStepResult errors after which the outcome is sent again (INTERNAL and UNKNOWN are what
// servers before UNAVAILABLE answered while their database was down).
const RETRY_UNARY = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.INTERNAL,
  grpc.status.UNKNOWN,
]);
// result_ack reasons after which the outcome is kept and sent again (INTERNAL: older servers'
// answer to a failed write, "try again").
const RESEND_REASONS = new Set(["UNAVAILABLE", "INTERNAL"]);
// Backoff between sends of an outcome the server could not record yet.
const RESEND_BACKOFF_BASE_MS = 200;
const RESEND_BACKOFF_CAP_MS = 3_000;
// How long an outcome is kept when its assignment carries no leaseDeadline (older servers).
const DEFAULT_RETENTION_MS = 300_000;
const MAX_HELD_LEASES = 10_000;

type AbortCause = "server" | "timeout" | "shutdown";

interface Lease {
  leaseId: string;
  /** The lease's hard deadline on the performance.now() clock. */
  deadline: number;
  ctx: StepContext;
  controller: AbortController;
  cause: AbortCause | undefined;
  /** Settles when the lease's outcome has been handed to the reporter (or dropped). */
  finished: Promise<void>;
  /** Sends the AssignmentAck if the handler still runs when it fires; cleared by the outcome. */
  ackTimer: NodeJS.Timeout | undefined;
}

type Outcome = { kind: "result"; value: StepSuccess } | { kind: "failure"; value: StepFailure };

/** Wakes one waiter early; remembers a wake-up that came before the wait. */
class Nudge {
  private fired = false;
  private waiters: (() => void)[] = [];

  fire(): void {
    this.fired = true;
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  clear(): void {
    this.fired = false;
  }

  /** Resolves when fired, or after `ms`. */
  wait(ms: number): Promise<void> {
    if (this.fired) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.waiters.push(done);
    });
  }
}

/** An outcome the server has not acknowledged yet, kept until the lease's hard deadline. */
interface PendingOutcome {
  leaseId: string;
  outcome: Outcome;
  /** performance.now() past which the lease cannot be current any more. */
  deadline: number;
  /** Fired by a result_ack, by the end of the stream it was sent on and by a new welcome. */
  nudge: Nudge;
  /** The stream whose result_ack it waits for. */
  sentOn: Session | undefined;
  /** The server answered UNAVAILABLE: back off, then send again. */
  resend: boolean;
}

/** No delayed ack: the outcome (or nothing, or an ack at once) replaces it. */
function cancelAck(lease: Lease): void {
  clearTimeout(lease.ackTimer);
  lease.ackTimer = undefined;
}

/** An assignment's hard deadline on the performance.now() clock. */
function leaseDeadline(assignment: Assignment): number {
  if (!assignment.leaseDeadline) return performance.now() + DEFAULT_RETENTION_MS;
  return performance.now() + (assignment.leaseDeadline.getTime() - Date.now());
}

const silentLogger: WorkerLogger = { info: () => undefined, warn: (m) => console.warn(`[tasker] ${m}`) };

/** Runs registered step handlers for the given namespaces over one Connect stream. */
export class Worker {
  readonly address: string;
  readonly namespaces: readonly string[];
  readonly capacity: number;
  readonly name: string;
  readonly ackDelayMs: number;
  private currentWorkerId: string;
  private readonly token: string | undefined;
  private readonly credentials: grpc.ChannelCredentials | undefined;
  private readonly log: WorkerLogger;
  private readonly handlerMap = new Map<string, HandlerFunction>();

  private readonly leases = new Map<string, Lease>();
  /** Outcomes not acknowledged by the server yet, each with a loop delivering it. */
  private readonly unackedOutcomes = new Map<string, PendingOutcome>();
  private readonly background = new Set<Promise<void>>();
  private session: Session | undefined;
  private channel: grpc.Channel | undefined;
  private stub: WorkerServiceClient | undefined;
  private heartbeatIntervalMs = DEFAULT_HEARTBEAT_INTERVAL_MS;
  private keepaliveTimeoutMs = DEFAULT_KEEPALIVE_TIMEOUT_MS;
  /** The welcome's ack_timeout (0: not known). */
  private ackTimeoutMs = 0;
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
    const ackDelayMs = options.ackDelayMs ?? DEFAULT_ACK_DELAY_MS;
    if (typeof ackDelayMs !== "number" || !Number.isFinite(ackDelayMs) || ackDelayMs < 0) {
      throw argumentError("ackDelayMs", "must be a number of milliseconds >= 0");
    }
    this.address = address;
    this.namespaces = Object.freeze([...list]);
    this.capacity = capacity;
    this.ackDelayMs = ackDelayMs;
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

  /**
   * Leases this worker still holds, as its hello announces them: handlers running and outcomes
   * the server has not acknowledged yet.
   */
  heldLeases(): string[] {
    return [...new Set([...this.leases.keys(), ...this.unackedOutcomes.keys()])].slice(0, MAX_HELD_LEASES);
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
      if (this.unackedOutcomes.size > 0) {
        this.log.warn(`stopping with ${this.unackedOutcomes.size} outcome(s) not acknowledged by the server: leases ${[...this.unackedOutcomes.keys()].join(", ")}`);
      }
      // Ends the delivery loops: each stops once its outcome is no longer in the map.
      const pending = [...this.unackedOutcomes.values()];
      this.unackedOutcomes.clear();
      for (const p of pending) p.nudge.fire();
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
      heldLeases: this.heldLeases(),
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
      for (const p of this.unackedOutcomes.values()) {
        if (p.sentOn === session) p.nudge.fire(); // no result_ack will come on this stream
      }
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
    if (welcome.ackTimeout) {
      const at = welcome.ackTimeout.seconds * 1000 + welcome.ackTimeout.nanos / 1e6;
      this.ackTimeoutMs = at > 0 ? at : 0;
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
    for (const p of this.unackedOutcomes.values()) {
      if (p.sentOn === undefined) p.nudge.fire(); // waiting to retry: send on this stream now
    }
  }

  // --- messages from the server -------------------------------------------------------------------

  private dispatch(session: Session, message: ConnectResponse): void {
    if (message.assignment) this.onAssignment(session, message.assignment);
    else if (message.cancellation) {
      // Nothing running (an outcome still waiting for its ack stays: the server answers it
      // DUPLICATE or LEASE_STALE).
      const lease = this.leases.get(message.cancellation.leaseId);
      if (lease) this.abortLease(lease, "server", message.cancellation.reason || "cancelled by the server");
    } else if (message.keepalive) session.send({ pong: { nonce: message.keepalive.nonce } });
    else if (message.resultAck) this.onResultAck(message.resultAck);
    else if (message.heartbeatAck) this.applyLeaseStatuses(message.heartbeatAck.leases);
    else if (message.rejected) this.onRejected(message.rejected);
  }

  // The server refused one of our messages (it did not decode, or an outcome broke a rule):
  // sending it again cannot help, so an outcome it names is given up.
  private onRejected(rejected: MessageRejected): void {
    const about = rejected.leaseId ? ` about lease ${rejected.leaseId}` : "";
    this.log.warn(`server rejected a message${about}: ${rejected.reason} ${rejected.message}`);
    const pending = this.unackedOutcomes.get(rejected.leaseId);
    this.unackedOutcomes.delete(rejected.leaseId);
    pending?.nudge.fire();
  }

  private onResultAck(ack: ResultAck): void {
    const pending = this.unackedOutcomes.get(ack.leaseId);
    if (ack.accepted || !RESEND_REASONS.has(ack.reason)) {
      this.unackedOutcomes.delete(ack.leaseId);
      if (!ack.accepted) this.log.warn(`result for lease ${ack.leaseId} rejected: ${ack.reason} ${ack.message}`);
    } else if (pending) pending.resend = true;
    pending?.nudge.fire();
  }

  private onAssignment(session: Session, assignment: Assignment): void {
    const leaseId = assignment.leaseId;
    if (this.leases.has(leaseId) || this.unackedOutcomes.has(leaseId)) {
      const held = this.leases.get(leaseId);
      if (held) cancelAck(held); // acknowledged now, not again when the delay is up
      session.send({ ack: { leaseId } }); // re-offered after a reconnect: already ours
      return;
    }
    if (this.stopping) {
      // Not acknowledged: the server re-offers it to another worker after ack_timeout.
      this.log.info(`draining; not taking lease ${leaseId}`);
      return;
    }
    const controller = new AbortController();
    const deadline = leaseDeadline(assignment);
    let ctx: StepContext;
    try {
      ctx = contextFromAssignment(assignment, controller.signal);
    } catch (error) {
      // No ack: the failure implies it.
      this.reportFailure(leaseId, deadline, new PermanentError(`invalid assignment: ${(error as Error).message}`, { errorType: "InvalidAssignment" }), 0);
      return;
    }
    const handler = this.handlerMap.get(ctx.step.handler);
    if (!handler) {
      const error = new RetryableError(`handler ${JSON.stringify(ctx.step.handler)} is not registered on worker ${this.currentWorkerId}`, {
        errorType: "HandlerNotFound",
      });
      this.reportFailure(leaseId, deadline, error, 0);
      return;
    }
    const lease: Lease = { leaseId, deadline, ctx, controller, cause: undefined, finished: Promise.resolve(), ackTimer: undefined };
    this.leases.set(leaseId, lease);
    const delayMs = this.effectiveAckDelayMs();
    if (delayMs > 0) lease.ackTimer = setTimeout(() => this.ackIfRunning(session, lease), delayMs);
    else session.send({ ack: { leaseId } });
    lease.finished = this.execute(lease, handler);
  }

  /** ackDelayMs, kept well below the server's ack_timeout so a lazy ack is never late. */
  private effectiveAckDelayMs(): number {
    return this.ackTimeoutMs > 0 ? Math.min(this.ackDelayMs, this.ackTimeoutMs / 4) : this.ackDelayMs;
  }

  /**
   * The delay is up and no outcome was sent: acknowledge, on the stream the assignment came on. A
   * new stream needs no ack: its hello listed the lease in heldLeases.
   */
  private ackIfRunning(session: Session, lease: Lease): void {
    lease.ackTimer = undefined;
    if (this.leases.get(lease.leaseId) === lease && !lease.controller.signal.aborted && this.session === session) {
      session.send({ ack: { leaseId: lease.leaseId } });
    }
  }

  private abortLease(lease: Lease, cause: AbortCause, reason: string): void {
    if (lease.controller.signal.aborted) return;
    lease.cause = cause;
    if (cause === "server") cancelAck(lease);
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
          this.reportFailure(lease.leaseId, lease.deadline, new RetryableError(`step ${JSON.stringify(ctx.step.name)} exceeded its timeout of ${timeoutMs} ms`, {
            immediate: true,
            errorType: "StepTimeout",
          }), elapsed());
          return;
        }
        if (lease.cause === "shutdown") {
          this.reportFailure(lease.leaseId, lease.deadline, new RetryableError("the worker shut down before the handler finished", {
            immediate: true,
            errorType: "WorkerShutdown",
          }), elapsed());
          return;
        }
        this.reportFailure(lease.leaseId, lease.deadline, error, elapsed());
        return;
      }
      this.reportSuccess(lease.leaseId, lease.deadline, value, elapsed());
    } finally {
      clearTimeout(timer);
      cancelAck(lease); // the outcome (or nothing) follows: no ack needed
      this.leases.delete(lease.leaseId);
    }
  }

  // --- reporting outcomes -------------------------------------------------------------------------

  private reportSuccess(leaseId: string, deadline: number, value: unknown, elapsedSeconds: number): void {
    let result: Record<string, unknown>;
    try {
      result = toJsonObject(value ?? {}, "result");
    } catch (error) {
      const problem = error instanceof NotJsonError
        ? `handler result is not a JSON object: ${error.message}`
        : `handler result could not be serialised: ${String(error)}`;
      this.reportFailure(leaseId, deadline, new PermanentError(problem, { errorType: "InvalidResult" }), elapsedSeconds);
      return;
    }
    this.keepOutcome(leaseId, deadline, { kind: "result", value: { leaseId, result, executionTime: msToDuration(elapsedSeconds * 1000) } });
  }

  private reportFailure(leaseId: string, deadline: number, thrown: unknown, elapsedSeconds: number): void {
    if (!(thrown instanceof RetryableError || thrown instanceof PermanentError)) {
      this.log.info(`handler for lease ${leaseId} failed: ${thrown instanceof Error ? thrown.message : String(thrown)}`);
    }
    let error: StepError;
    try {
      error = stepErrorFromException(thrown);
    } catch (bad) {
      error = stepErrorFromException(new Error(`unreportable handler error: ${String(bad)}`));
    }
    this.keepOutcome(leaseId, deadline, { kind: "failure", value: { leaseId, error, executionTime: msToDuration(elapsedSeconds * 1000) } });
  }

  /** Keep an outcome until the server acknowledges it; a loop of its own delivers it. */
  private keepOutcome(leaseId: string, deadline: number, outcome: Outcome): void {
    const pending: PendingOutcome = { leaseId, outcome, deadline, nudge: new Nudge(), sentOn: undefined, resend: false };
    this.unackedOutcomes.set(leaseId, pending);
    this.spawn(this.deliver(pending));
  }

  private spawn(promise: Promise<void>): void {
    const tracked = promise.catch((error) => this.log.warn(`background report failed: ${String(error)}`));
    this.background.add(tracked);
    void tracked.finally(() => this.background.delete(tracked));
  }

  /**
   * Send one outcome until it is acknowledged, refused for good or past its lease's deadline: on
   * the stream when there is one (never on the stream and by unary at once), else with
   * ReportStepResult; with backoff between attempts the server could not record.
   */
  private async deliver(pending: PendingOutcome): Promise<void> {
    const backoff = new Backoff(RESEND_BACKOFF_BASE_MS, RESEND_BACKOFF_CAP_MS);
    const remaining = () => pending.deadline - performance.now();
    const nap = (ms: number) => {
      pending.nudge.clear();
      return pending.nudge.wait(Math.min(ms, remaining()));
    };
    const message = pending.outcome.kind === "result" ? { result: pending.outcome.value } : { failure: pending.outcome.value };
    while (this.unackedOutcomes.get(pending.leaseId) === pending) {
      if (remaining() <= 0) {
        this.unackedOutcomes.delete(pending.leaseId);
        this.log.warn(`outcome of lease ${pending.leaseId} not recorded before the lease's deadline`);
        return;
      }
      if (pending.resend) {
        pending.resend = false;
        await nap(backoff.nextDelayMs());
        continue;
      }
      const session = this.session;
      pending.nudge.clear();
      if (session && session.send(message)) {
        pending.sentOn = session;
        await pending.nudge.wait(remaining()); // result_ack, or the stream ended
        pending.sentOn = undefined;
      } else if (await this.reportUnary(pending)) {
        this.unackedOutcomes.delete(pending.leaseId);
      } else if (!this.session) {
        await nap(backoff.nextDelayMs()); // else: welcomed meanwhile, send on it now
      }
    }
  }

  /**
   * One ReportStepResult: false when it is worth trying again (the server or its database
   * unreachable), true when the outcome is done with (recorded or refused).
   */
  private async reportUnary(pending: PendingOutcome): Promise<boolean> {
    const stub = this.stub;
    if (!stub) return false;
    const { outcome } = pending;
    const request: ReportStepResultRequest = { workerId: this.currentWorkerId };
    if (outcome.kind === "result") request.success = outcome.value;
    else request.failure = outcome.value;
    const timeoutMs = Math.max(100, Math.min(UNARY_TIMEOUT_MS, pending.deadline - performance.now()));
    try {
      await unary(stub, stub.reportStepResult, request, callMetadata(this.token), timeoutMs);
    } catch (error) {
      const code = (error as TaskerError).code;
      if (code !== undefined && RETRY_UNARY.has(code)) return false;
      this.log.warn(`outcome of lease ${pending.leaseId} not recorded: ${(error as Error).message}`);
    }
    return true;
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
    // Give outcomes a moment to be acknowledged before closing the stream; whatever is still
    // unacknowledged then goes on by unary (for at most another FLUSH_TIMEOUT_MS).
    const until = performance.now() + FLUSH_TIMEOUT_MS;
    while (this.unackedOutcomes.size > 0 && performance.now() < until) await sleep(20);
    this.stop.abort();
    if (this.runPromise) await this.runPromise.catch(() => undefined);
  }
}
