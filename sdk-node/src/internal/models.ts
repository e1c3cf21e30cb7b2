// Read-only views of the API's resources, the same fields as the Python SDK's models (camelCase):
// states are lowercase names ("in_progress"), JSON payloads are plain objects, times are Dates
// (undefined when unset), durations are milliseconds. The raw message is kept as `proto`.
import * as pb from "../generated/tasker/v1/resources";
import { durationToMs, enumName } from "./convert";

export const TASK_STATES = ["pending", "in_progress", "complete", "failed", "cancelled", "resolved_manually"] as const;
export type TaskStateName = (typeof TASK_STATES)[number];
// The server's two words for "done" (server/tasker_server/domain/states.py; a test keeps the three
// SDKs equal to it).
/** Final: nothing, not even an operator, changes the task again. */
export const FINAL_TASK_STATES: ReadonlySet<string> = new Set(["complete", "cancelled", "resolved_manually"]);
/** Finished: nothing runs. `failed` is included: nothing further runs unless an operator retries a step. */
export const FINISHED_TASK_STATES: ReadonlySet<string> = new Set(["complete", "failed", "cancelled", "resolved_manually"]);
/** The name earlier releases used for FINISHED_TASK_STATES. */
export const TERMINAL_TASK_STATES: ReadonlySet<string> = FINISHED_TASK_STATES;
export const TERMINAL_EVENTS: ReadonlySet<string> = new Set([
  "task.completed",
  "task.failed",
  "task.cancelled",
  "task.resolved_manually",
]);

export const taskStateName = (v: pb.TaskState): string => enumName(pb.taskStateToJSON(v), "TASK_STATE_");
export const stepStateName = (v: pb.StepState): string => enumName(pb.stepStateToJSON(v), "STEP_STATE_");
export const errorClassName = (v: pb.ErrorClass): string => enumName(pb.errorClassToJSON(v), "ERROR_CLASS_");

/** "in_progress" -> TaskState.TASK_STATE_IN_PROGRESS; undefined for unknown names. */
export function taskStateValue(state: string): pb.TaskState | undefined {
  if (!(TASK_STATES as readonly string[]).includes(state)) return undefined;
  return pb.taskStateFromJSON(`TASK_STATE_${state.toUpperCase()}`);
}

export interface StepErrorInfo {
  errorClass: string;
  errorType: string;
  message: string;
  backtrace: string;
  /** Seconds, when the handler gave a hint. */
  retryAfter: number | undefined;
  metadata: Record<string, unknown>;
}

export function stepErrorInfo(p: pb.StepError): StepErrorInfo {
  return {
    errorClass: errorClassName(p.errorClass),
    errorType: p.errorType,
    message: p.message,
    backtrace: p.backtrace,
    retryAfter: p.retryAfter ? durationToMs(p.retryAfter) / 1000 : undefined,
    metadata: p.metadata ?? {},
  };
}

export interface Step {
  stepId: string;
  name: string;
  handler: string;
  state: string;
  dependsOn: string[];
  sequenceNumber: number;
  attempts: number;
  maxAttempts: number;
  result: Record<string, unknown> | undefined;
  lastError: StepErrorInfo | undefined;
  optional: boolean;
  workerId: string;
  proto: pb.Step;
}

export function toStep(p: pb.Step): Step {
  return {
    stepId: p.stepId,
    name: p.name,
    handler: p.handler,
    state: stepStateName(p.state),
    dependsOn: [...p.dependsOn],
    sequenceNumber: p.sequenceNumber,
    attempts: p.attempts,
    maxAttempts: p.maxAttempts,
    result: p.result,
    lastError: p.lastError ? stepErrorInfo(p.lastError) : undefined,
    optional: p.optional,
    workerId: p.workerId,
    proto: p,
  };
}

export interface Task {
  taskId: string;
  namespace: string;
  templateName: string;
  templateVersion: string;
  state: string;
  context: Record<string, unknown>;
  result: Record<string, unknown>;
  correlationId: string;
  priority: number;
  tags: string[];
  idempotencyKey: string;
  blocked: boolean;
  totalSteps: number;
  completedSteps: number;
  /** Filled by getTask / createTask; empty in listTasks. */
  steps: Step[];
  createTime: Date | undefined;
  updateTime: Date | undefined;
  startTime: Date | undefined;
  endTime: Date | undefined;
  deadline: Date | undefined;
  /** False when createTask returned an existing task for its idempotency key. */
  created: boolean;
  isTerminal: boolean;
  /** The step named `name` (throws when there is none). */
  step(name: string): Step;
  proto: pb.Task;
}

export function toTask(p: pb.Task, created = true): Task {
  const steps = p.steps.map(toStep);
  const state = taskStateName(p.state);
  return {
    taskId: p.taskId,
    namespace: p.namespace,
    templateName: p.templateName,
    templateVersion: p.templateVersion,
    state,
    context: p.context ?? {},
    result: p.result ?? {},
    correlationId: p.correlationId,
    priority: p.priority,
    tags: [...p.tags],
    idempotencyKey: p.idempotencyKey,
    blocked: p.blocked,
    totalSteps: p.totalSteps,
    completedSteps: p.completedSteps,
    steps,
    createTime: p.createTime,
    updateTime: p.updateTime,
    startTime: p.startTime,
    endTime: p.endTime,
    deadline: p.deadline,
    created,
    isTerminal: FINISHED_TASK_STATES.has(state),
    step(name: string): Step {
      const found = steps.find((s) => s.name === name);
      if (!found) throw new RangeError(`task ${p.taskId} has no step ${JSON.stringify(name)}`);
      return found;
    },
    proto: p,
  };
}

export interface StepTemplate {
  name: string;
  handler: string;
  dependsOn: string[];
  /** Milliseconds. */
  timeoutMs: number;
  optional: boolean;
  fallbackHandler: string;
  circuitBreakerKey: string;
  handlerConfig: Record<string, unknown>;
  proto: pb.StepTemplate;
}

export interface Template {
  namespace: string;
  name: string;
  version: string;
  description: string;
  contentHash: string;
  yaml: string;
  steps: StepTemplate[];
  inputSchema: Record<string, unknown> | undefined;
  maxParallelSteps: number;
  createTime: Date | undefined;
  /** False when registerTemplate found the identical version already registered. */
  created: boolean;
  proto: pb.Template;
}

export function toTemplate(p: pb.Template, created = true): Template {
  return {
    namespace: p.namespace,
    name: p.name,
    version: p.version,
    description: p.description,
    contentHash: p.contentHash,
    yaml: p.yaml,
    steps: p.steps.map((s) => ({
      name: s.name,
      handler: s.handler,
      dependsOn: [...s.dependsOn],
      timeoutMs: durationToMs(s.timeout),
      optional: s.optional,
      fallbackHandler: s.fallbackHandler,
      circuitBreakerKey: s.circuitBreakerKey,
      handlerConfig: s.handlerConfig ?? {},
      proto: s,
    })),
    inputSchema: p.inputSchema,
    maxParallelSteps: p.maxParallelSteps,
    createTime: p.createTime,
    created,
    proto: p,
  };
}

export interface TemplateProblem {
  field: string;
  description: string;
}

export interface Event {
  sequence: number;
  eventName: string;
  taskId: string;
  namespace: string;
  stepName: string;
  correlationId: string;
  timestamp: Date | undefined;
  metadata: Record<string, unknown>;
  proto: pb.Event;
}

export function toEvent(p: pb.Event): Event {
  return {
    sequence: p.sequence,
    eventName: p.eventName,
    taskId: p.taskId,
    namespace: p.namespace,
    stepName: p.stepName,
    correlationId: p.correlationId,
    timestamp: p.timestamp,
    metadata: p.metadata ?? {},
    proto: p,
  };
}

export interface WorkerInfo {
  workerId: string;
  name: string;
  namespaces: string[];
  handlers: string[];
  capacity: number;
  inFlight: number;
  sdkLanguage: string;
  sdkVersion: string;
  state: string;
  proto: pb.Worker;
}

export function toWorkerInfo(p: pb.Worker): WorkerInfo {
  return {
    workerId: p.workerId,
    name: p.name,
    namespaces: [...p.namespaces],
    handlers: [...p.handlers],
    capacity: p.capacity,
    inFlight: p.inFlight,
    sdkLanguage: p.sdkLanguage,
    sdkVersion: p.sdkVersion,
    state: p.state,
    proto: p,
  };
}

export interface CircuitBreaker {
  key: string;
  state: string;
  failureCount: number;
  failureThreshold: number;
  resetTimeoutMs: number;
  openedTime: Date | undefined;
  proto: pb.CircuitBreaker;
}

export function toCircuitBreaker(p: pb.CircuitBreaker): CircuitBreaker {
  return {
    key: p.key,
    state: enumName(pb.circuitBreakerStateToJSON(p.state), "CIRCUIT_BREAKER_STATE_"),
    failureCount: p.failureCount,
    failureThreshold: p.failureThreshold,
    resetTimeoutMs: durationToMs(p.resetTimeout),
    openedTime: p.openedTime,
    proto: p,
  };
}

export interface Namespace {
  name: string;
  paused: boolean;
  maxParallelTasks: number;
  proto: pb.Namespace;
}

export function toNamespace(p: pb.Namespace): Namespace {
  return { name: p.name, paused: p.paused, maxParallelTasks: p.maxParallelTasks, proto: p };
}
