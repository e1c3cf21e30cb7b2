// The client: templates, tasks, events and operator actions.
//
//   const client = await Client.connect("127.0.0.1:50051");
//   await client.registerTemplate(yamlText);
//   const task = await client.createTask("fulfillment", "order", { order_id: 7 });
//   const done = await client.waitForTask(task.taskId, { timeoutMs: 60_000 });
//   client.close();
//
// Every unary RPC goes through `call` and every stream through `resumable`: errors are decoded
// there, once, by fromRpcError. Arguments are checked before any RPC (InvalidArgumentError).
import * as grpc from "@grpc/grpc-js";
import { AdminServiceClient } from "../generated/tasker/v1/admin_service";
import { EventServiceClient } from "../generated/tasker/v1/event_service";
import { TaskServiceClient } from "../generated/tasker/v1/task_service";
import { TemplateServiceClient } from "../generated/tasker/v1/template_service";
import { Backoff, callMetadata, makeClient, openChannel, sleep, unary, validateConnection, type ConnectionOptions } from "./channel";
import { NotJsonError, toJsonObject } from "./convert";
import { argumentError, fromRpcError, TaskerError, UnavailableError } from "./errors";
import {
  TASK_STATES,
  TERMINAL_EVENTS,
  FINISHED_TASK_STATES,
  taskStateValue,
  toCircuitBreaker,
  toEvent,
  toNamespace,
  toStep,
  toTask,
  toTemplate,
  toWorkerInfo,
  type CircuitBreaker,
  type Event,
  type Namespace,
  type Step,
  type Task,
  type Template,
  type TemplateProblem,
  type WorkerInfo,
} from "./models";
import { activeTraceparent } from "./tracing";

export const DEFAULT_ACTOR = "sdk-node";
/** Consecutive failed reconnects of a watch stream before the error is thrown to the caller. */
const MAX_STREAM_RETRIES = 10;
const RESUMABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.ABORTED]);

export interface ClientOptions extends ConnectionOptions {
  /** Wait this long for the server to be reachable (UnavailableError otherwise). */
  timeoutMs?: number;
}

export interface CreateTaskOptions {
  version?: string;
  idempotencyKey?: string;
  correlationId?: string;
  /** 0..100. */
  priority?: number;
  tags?: string[];
  /** A Date, or a delay from now in milliseconds. */
  deadline?: Date | number;
}

export interface ListTasksOptions {
  namespace?: string;
  /** Lowercase state name, e.g. "failed". */
  state?: string;
  templateName?: string;
  /** 1..500, default 50. */
  pageSize?: number;
}

export interface ActorOptions {
  actor?: string;
  reason?: string;
}

export interface WatchEventsOptions {
  namespaces?: string[];
  /** A trailing ".*" matches a prefix ("step.*"). */
  eventNames?: string[];
  /** Replay after this sequence; 0 replays the retained log; -1 starts at the live end. */
  afterSequence?: number;
  /** Aborting it ends the iteration (the stream is cancelled). */
  signal?: AbortSignal;
}

function requireString(value: unknown, name: string): string {
  if (typeof value !== "string" || value.length === 0) throw argumentError(name, "must be a non-empty string");
  return value;
}

function optionalString(value: unknown, name: string): string {
  if (value === undefined || value === null) return "";
  if (typeof value !== "string") throw argumentError(name, "must be a string");
  return value;
}

function strings(value: unknown, name: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
    throw argumentError(name, "must be an array of strings");
  }
  return [...value];
}

function pageSize(value: unknown): number {
  if (value === undefined) return 50;
  if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > 500) {
    throw argumentError("pageSize", "must be an integer between 1 and 500");
  }
  return value as number;
}

function jsonObject(value: unknown, name: string): Record<string, unknown> {
  try {
    return toJsonObject(value, name);
  } catch (error) {
    if (error instanceof NotJsonError) throw argumentError(error.path, error.message.slice(error.path.length + 1));
    throw error;
  }
}

function checkSignal(signal: unknown): void {
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw argumentError("signal", "must be an AbortSignal");
}

function sequenceNumber(value: unknown, name: string, min: number): number {
  if (value === undefined) return 0;
  if (!Number.isSafeInteger(value) || (value as number) < min) throw argumentError(name, `must be an integer >= ${min}`);
  return value as number;
}

/** Client for the Tasker API. Create with `Client.connect()` (or `new Client()`), end with `close()`. */
export class Client {
  readonly address: string;
  private readonly channel: grpc.Channel;
  private readonly token: string | undefined;
  private readonly tasks: TaskServiceClient;
  private readonly templates: TemplateServiceClient;
  private readonly events: EventServiceClient;
  private readonly admin: AdminServiceClient;

  constructor(address = "127.0.0.1:50051", options: ConnectionOptions = {}) {
    validateConnection(address, options);
    this.address = address;
    this.token = options.token;
    this.channel = openChannel(address, options.credentials);
    this.tasks = makeClient(TaskServiceClient, address, this.channel);
    this.templates = makeClient(TemplateServiceClient, address, this.channel);
    this.events = makeClient(EventServiceClient, address, this.channel);
    this.admin = makeClient(AdminServiceClient, address, this.channel);
  }

  /**
   * A client for `address`. With `timeoutMs`, waits that long for the server to be reachable
   * (UnavailableError otherwise); without it the connection is made on the first call.
   */
  static async connect(address = "127.0.0.1:50051", options: ClientOptions = {}): Promise<Client> {
    const { timeoutMs, ...connection } = options;
    if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && timeoutMs > 0)) {
      throw argumentError("timeoutMs", "must be a positive number of milliseconds");
    }
    const client = new Client(address, connection);
    if (timeoutMs !== undefined) {
      try {
        await new Promise<void>((resolve, reject) =>
          client.tasks.waitForReady(new Date(Date.now() + timeoutMs), (error) => (error ? reject(error) : resolve())),
        );
      } catch {
        client.close();
        throw new UnavailableError(`could not reach Tasker at ${address} within ${timeoutMs} ms`, {
          code: grpc.status.UNAVAILABLE,
        });
      }
    }
    return client;
  }

  /** Close the channel (idempotent). */
  close(): void {
    this.channel.close();
  }

  private md(extra?: Record<string, string>): grpc.Metadata {
    return callMetadata(this.token, extra);
  }

  // --- templates --------------------------------------------------------------------------------

  /** Register a template version; `.created` is false when it already existed identically. */
  async registerTemplate(yaml: string): Promise<Template> {
    requireString(yaml, "yaml");
    const resp = await unary(this.templates, this.templates.registerTemplate, { yaml }, this.md());
    return toTemplate(resp.template!, resp.created);
  }

  /** Every problem found in `yaml` (empty when valid); registers nothing. */
  async validateTemplate(yaml: string): Promise<TemplateProblem[]> {
    requireString(yaml, "yaml");
    const resp = await unary(this.templates, this.templates.validateTemplate, { yaml }, this.md());
    return resp.problems.map((p) => ({ field: p.field, description: p.description }));
  }

  /** One template version (the highest when `version` is omitted). */
  async getTemplate(namespace: string, name: string, version?: string): Promise<Template> {
    const request = {
      namespace: requireString(namespace, "namespace"),
      name: requireString(name, "name"),
      version: optionalString(version, "version"),
    };
    const resp = await unary(this.templates, this.templates.getTemplate, request, this.md());
    return toTemplate(resp.template!);
  }

  /** All registered versions (without YAML text), following pages. */
  listTemplates(options: { namespace?: string; name?: string; pageSize?: number } = {}): AsyncIterable<Template> {
    const request = {
      namespace: optionalString(options.namespace, "namespace"),
      name: optionalString(options.name, "name"),
      pageSize: pageSize(options.pageSize),
      pageToken: "",
    };
    const self = this;
    return (async function* () {
      for (;;) {
        const resp = await unary(self.templates, self.templates.listTemplates, request, self.md());
        for (const t of resp.templates) yield toTemplate(t);
        if (!resp.nextPageToken) return;
        request.pageToken = resp.nextPageToken;
      }
    })();
  }

  // --- tasks ------------------------------------------------------------------------------------

  /**
   * Start a task. With an `idempotencyKey` already used in the namespace, the existing task is
   * returned with `created: false`. The active OpenTelemetry span (if any) becomes the parent of
   * the task's step spans.
   */
  async createTask(
    namespace: string,
    templateName: string,
    context: Record<string, unknown> = {},
    options: CreateTaskOptions = {},
  ): Promise<Task> {
    const priority = options.priority ?? 0;
    if (!Number.isInteger(priority) || priority < 0 || priority > 100) {
      throw argumentError("priority", "must be an integer between 0 and 100");
    }
    let deadline: Date | undefined;
    if (typeof options.deadline === "number") {
      if (!Number.isFinite(options.deadline) || options.deadline <= 0) throw argumentError("deadline", "must be a positive delay in ms or a Date");
      deadline = new Date(Date.now() + options.deadline);
    } else if (options.deadline !== undefined) {
      if (!(options.deadline instanceof Date) || Number.isNaN(options.deadline.getTime())) throw argumentError("deadline", "must be a valid Date or a delay in ms");
      deadline = options.deadline;
    }
    const request = {
      namespace: requireString(namespace, "namespace"),
      templateName: requireString(templateName, "templateName"),
      templateVersion: optionalString(options.version, "version"),
      context: jsonObject(context ?? {}, "context"),
      idempotencyKey: optionalString(options.idempotencyKey, "idempotencyKey"),
      correlationId: optionalString(options.correlationId, "correlationId"),
      priority,
      tags: strings(options.tags, "tags"),
      deadline,
    };
    const trace = activeTraceparent();
    const resp = await unary(this.tasks, this.tasks.createTask, request, this.md(trace as Record<string, string> | undefined));
    return toTask(resp.task!, resp.created);
  }

  /** A task with its steps, results, errors and transitions (`.proto.transitions`). */
  async getTask(taskId: string): Promise<Task> {
    const resp = await unary(this.tasks, this.tasks.getTask, { taskId: requireString(taskId, "taskId") }, this.md());
    return toTask(resp.task!);
  }

  /** One page of tasks (newest first, without steps) and the token of the next ("" at the end). */
  async listTasksPage(options: ListTasksOptions = {}, pageToken = ""): Promise<{ tasks: Task[]; nextPageToken: string }> {
    const request = this.listTasksRequest(options);
    request.pageToken = optionalString(pageToken, "pageToken");
    const resp = await unary(this.tasks, this.tasks.listTasks, request, this.md());
    return { tasks: resp.tasks.map((t) => toTask(t)), nextPageToken: resp.nextPageToken };
  }

  private listTasksRequest(options: ListTasksOptions) {
    let state = 0;
    if (options.state !== undefined && options.state !== "") {
      const value = typeof options.state === "string" ? taskStateValue(options.state) : undefined;
      if (value === undefined) throw argumentError("state", `must be one of ${TASK_STATES.join(", ")}`);
      state = value;
    }
    return {
      namespace: optionalString(options.namespace, "namespace"),
      state,
      templateName: optionalString(options.templateName, "templateName"),
      pageSize: pageSize(options.pageSize),
      pageToken: "",
    };
  }

  /** Tasks newest first (without steps), following pages lazily as the iteration goes. */
  listTasks(options: ListTasksOptions = {}): AsyncIterable<Task> {
    const request = this.listTasksRequest(options); // invalid arguments throw here, before any RPC
    const self = this;
    return (async function* () {
      for (;;) {
        const resp = await unary(self.tasks, self.tasks.listTasks, request, self.md());
        for (const t of resp.tasks) yield toTask(t);
        if (!resp.nextPageToken) return;
        request.pageToken = resp.nextPageToken;
      }
    })();
  }

  /** Cancel a task; workers holding its leases are told to stop. */
  async cancelTask(taskId: string, options: ActorOptions = {}): Promise<Task> {
    const request = {
      taskId: requireString(taskId, "taskId"),
      actor: optionalString(options.actor, "actor") || DEFAULT_ACTOR,
      reason: optionalString(options.reason, "reason"),
    };
    const resp = await unary(this.tasks, this.tasks.cancelTask, request, this.md());
    return toTask(resp.task!);
  }

  // --- streams ----------------------------------------------------------------------------------

  /**
   * Events from `open(after)`, reopening the stream after UNAVAILABLE or ABORTED with the last
   * sequence received, so the caller sees no gap and no duplicate.
   */
  private async *resumable(
    open: (after: number) => grpc.ClientReadableStream<{ event?: import("../generated/tasker/v1/resources").Event }>,
    afterSequence: number,
    signal?: AbortSignal,
  ): AsyncGenerator<Event, void, undefined> {
    let last = afterSequence;
    const backoff = new Backoff(200, 5_000);
    while (!signal?.aborted) {
      const call = open(last);
      // An async generator's return() waits for a pending next(): cancelling the call is what
      // ends an iteration that is waiting for the next event.
      const cancel = () => call.cancel();
      signal?.addEventListener("abort", cancel, { once: true });
      try {
        for await (const message of call) {
          if (!message.event) continue;
          const event = toEvent(message.event);
          last = event.sequence;
          backoff.reset();
          yield event;
        }
        return;
      } catch (raw) {
        if (signal?.aborted) return;
        const error = fromRpcError(raw);
        if (error.code === undefined || !RESUMABLE.has(error.code) || backoff.failures >= MAX_STREAM_RETRIES) {
          throw error;
        }
        // On ABORTED the server names its own resume point, but the last event actually
        // received is the one that guarantees neither gap nor duplicate.
        await sleep(backoff.nextDelayMs(), signal);
      } finally {
        signal?.removeEventListener("abort", cancel);
        call.cancel();
      }
    }
  }

  /**
   * The task's events (replayed after `afterSequence`, then live), ending after its terminal
   * event. Resumes transparently after a dropped connection (UNAVAILABLE / ABORTED).
   */
  watchTask(taskId: string, options: { afterSequence?: number; signal?: AbortSignal } = {}): AsyncGenerator<Event, void, undefined> {
    requireString(taskId, "taskId");
    const after = sequenceNumber(options.afterSequence, "afterSequence", 0);
    checkSignal(options.signal);
    return this.resumable((afterSequence) => this.tasks.watchTask({ taskId, afterSequence }, this.md()), after, options.signal);
  }

  /** All matching events, never ending on its own; resumes like watchTask. */
  watchEvents(options: WatchEventsOptions = {}): AsyncGenerator<Event, void, undefined> {
    const namespaces = strings(options.namespaces, "namespaces");
    const eventNames = strings(options.eventNames, "eventNames");
    const after = sequenceNumber(options.afterSequence, "afterSequence", -1);
    checkSignal(options.signal);
    return this.resumable(
      (afterSequence) => this.events.watchEvents({ namespaces, eventNames, afterSequence }, this.md()),
      after,
      options.signal,
    );
  }

  /**
   * Wait until the task is complete, failed, cancelled or resolved manually and return it (with
   * steps). Rejects with a TaskerError (reason "TIMEOUT") after `timeoutMs`.
   */
  async waitForTask(taskId: string, options: { timeoutMs?: number } = {}): Promise<Task> {
    requireString(taskId, "taskId");
    const { timeoutMs } = options;
    if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && timeoutMs > 0)) {
      throw argumentError("timeoutMs", "must be a positive number of milliseconds");
    }
    const stop = new AbortController();
    const work = (async () => {
      while (!stop.signal.aborted) {
        const events = this.watchTask(taskId, { signal: stop.signal });
        try {
          for await (const event of events) {
            if (stop.signal.aborted) break;
            if (TERMINAL_EVENTS.has(event.eventName)) {
              const task = await this.getTask(taskId);
              // A failed task may have been retried since; keep watching then.
              if (FINISHED_TASK_STATES.has(task.state)) return task;
            }
          }
        } finally {
          await events.return(undefined);
        }
        const task = await this.getTask(taskId);
        if (FINISHED_TASK_STATES.has(task.state)) return task;
        await sleep(500, stop.signal);
      }
      return undefined;
    })();
    if (timeoutMs === undefined) return (await work)!;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        stop.abort();
        reject(new TaskerError(`task ${taskId} did not finish within ${timeoutMs} ms`, { reason: "TIMEOUT" }));
      }, timeoutMs);
    });
    try {
      return (await Promise.race([work, timeout]))!;
    } finally {
      clearTimeout(timer);
      work.catch(() => undefined);
    }
  }

  // --- operator actions (thin calls) --------------------------------------------------------------

  private actor(options: ActorOptions): { actor: string; reason: string } {
    return {
      actor: options.actor === undefined ? DEFAULT_ACTOR : requireString(options.actor, "actor"),
      reason: optionalString(options.reason, "reason"),
    };
  }

  /** Send a FAILED or BLOCKED step back to RETRYING with a fresh attempt budget. */
  async retryStep(taskId: string, stepName: string, options: ActorOptions = {}): Promise<Step> {
    const request = { taskId: requireString(taskId, "taskId"), stepName: requireString(stepName, "stepName"), ...this.actor(options) };
    return toStep((await unary(this.admin, this.admin.retryStep, request, this.md())).step!);
  }

  /** Waive a step (RESOLVED_MANUALLY); dependents receive `result`. */
  async resolveStepManually(taskId: string, stepName: string, result: Record<string, unknown> = {}, options: ActorOptions = {}): Promise<Step> {
    const request = {
      taskId: requireString(taskId, "taskId"),
      stepName: requireString(stepName, "stepName"),
      result: jsonObject(result, "result"),
      ...this.actor(options),
    };
    return toStep((await unary(this.admin, this.admin.resolveStepManually, request, this.md())).step!);
  }

  /** Mark a step COMPLETE with `result`, as if its handler had returned it. */
  async completeStepManually(taskId: string, stepName: string, result: Record<string, unknown>, options: ActorOptions = {}): Promise<Step> {
    const request = {
      taskId: requireString(taskId, "taskId"),
      stepName: requireString(stepName, "stepName"),
      result: jsonObject(result, "result"),
      ...this.actor(options),
    };
    return toStep((await unary(this.admin, this.admin.completeStepManually, request, this.md())).step!);
  }

  /** Close a whole task as RESOLVED_MANUALLY. */
  async resolveTaskManually(taskId: string, options: ActorOptions = {}): Promise<Task> {
    const request = { taskId: requireString(taskId, "taskId"), ...this.actor(options) };
    return toTask((await unary(this.admin, this.admin.resolveTaskManually, request, this.md())).task!);
  }

  /** Stop dispatching in `namespace` (tasks are still accepted). Idempotent. */
  async pauseNamespace(namespace: string, options: ActorOptions = {}): Promise<Namespace> {
    const request = { namespace: requireString(namespace, "namespace"), ...this.actor(options) };
    return toNamespace((await unary(this.admin, this.admin.pauseNamespace, request, this.md())).namespace!);
  }

  /** Resume dispatching in `namespace`. Idempotent. */
  async resumeNamespace(namespace: string, options: ActorOptions = {}): Promise<Namespace> {
    const request = { namespace: requireString(namespace, "namespace"), ...this.actor(options) };
    return toNamespace((await unary(this.admin, this.admin.resumeNamespace, request, this.md())).namespace!);
  }

  /** Set a namespace's max_parallel_tasks (0: the server-wide limit). */
  async updateNamespace(namespace: string, maxParallelTasks: number, options: ActorOptions = {}): Promise<Namespace> {
    if (!Number.isInteger(maxParallelTasks) || maxParallelTasks < 0) throw argumentError("maxParallelTasks", "must be an integer >= 0");
    const request = { namespace: requireString(namespace, "namespace"), maxParallelTasks, ...this.actor(options) };
    return toNamespace((await unary(this.admin, this.admin.updateNamespace, request, this.md())).namespace!);
  }

  /** Every known namespace with its settings (all pages). */
  async listNamespaces(): Promise<Namespace[]> {
    const out: Namespace[] = [];
    const request = { pageSize: 500, pageToken: "" };
    for (;;) {
      const resp = await unary(this.admin, this.admin.listNamespaces, request, this.md());
      out.push(...resp.namespaces.map(toNamespace));
      if (!resp.nextPageToken) return out;
      request.pageToken = resp.nextPageToken;
    }
  }

  /** Connected workers across all replicas (all pages). */
  async listWorkers(namespace?: string): Promise<WorkerInfo[]> {
    const out: WorkerInfo[] = [];
    const request = { namespace: optionalString(namespace, "namespace"), pageSize: 500, pageToken: "" };
    for (;;) {
      const resp = await unary(this.admin, this.admin.listWorkers, request, this.md());
      out.push(...resp.workers.map(toWorkerInfo));
      if (!resp.nextPageToken) return out;
      request.pageToken = resp.nextPageToken;
    }
  }

  /** Circuit breakers (all, or those with `keys`), ordered by key. */
  async getCircuitBreakers(keys: string[] = []): Promise<CircuitBreaker[]> {
    const resp = await unary(this.admin, this.admin.getCircuitBreakers, { keys: strings(keys, "keys") }, this.md());
    return resp.circuitBreakers.map(toCircuitBreaker);
  }

  /** Close a breaker and clear its failure count. */
  async resetCircuitBreaker(key: string, options: ActorOptions = {}): Promise<CircuitBreaker> {
    const request = { key: requireString(key, "key"), ...this.actor(options) };
    return toCircuitBreaker((await unary(this.admin, this.admin.resetCircuitBreaker, request, this.md())).circuitBreaker!);
  }
}
