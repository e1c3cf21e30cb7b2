// The execution context a step handler receives, the same shape as the Python SDK's StepContext:
//
//   worker.register("ship_order", async (ctx) => {
//     const orderId = ctx.task.context.order_id;
//     const payment = ctx.sequence.get("process_payment");   // the dependency's result, or undefined
//     if (ctx.sequence.skipped("check_inventory")) { ... }
//     await fetch(url, { signal: ctx.signal });               // aborted on cancellation / timeout
//     return { shipped: true, attempt: ctx.step.attempt };
//   });
import type { Assignment } from "../generated/tasker/v1/worker_service";
import type * as pb from "../generated/tasker/v1/resources";
import { durationToMs } from "./convert";
import { stepStateName } from "./models";

export interface TaskInfo {
  readonly taskId: string;
  readonly namespace: string;
  /** Template name. */
  readonly name: string;
  /** Template version. */
  readonly version: string;
  /** The task input. */
  readonly context: Record<string, any>;
  readonly correlationId: string;
  readonly priority: number;
  readonly tags: readonly string[];
}

/** Outcome of a direct dependency; `result` is undefined when it was skipped. */
export interface DependencyResult {
  readonly stepName: string;
  /** "complete", "skipped" or "resolved_manually". */
  readonly state: string;
  readonly result: Record<string, any> | undefined;
}

/** This step's place in the task and the results of its direct dependencies. */
export class SequenceInfo {
  constructor(
    readonly dependencies: Readonly<Record<string, DependencyResult>>,
    readonly sequenceNumber = 0,
    readonly totalSteps = 0,
  ) {}

  /** The result of dependency `stepName`; undefined if it was skipped or is not a dependency. */
  get(stepName: string): Record<string, any> | undefined {
    return Object.hasOwn(this.dependencies, stepName) ? this.dependencies[stepName].result : undefined;
  }

  /** True when dependency `stepName` was an optional step that was skipped. */
  skipped(stepName: string): boolean {
    return Object.hasOwn(this.dependencies, stepName) && this.dependencies[stepName].state === "skipped";
  }
}

export interface StepInfo {
  readonly stepId: string;
  readonly name: string;
  /** The handler being run (the fallback handler when isFallback). */
  readonly handler: string;
  readonly config: Record<string, any>;
  /** 1-based. */
  readonly attempt: number;
  readonly maxAttempts: number;
  /** Execution timeout in milliseconds (0: none). The signal aborts past it. */
  readonly timeoutMs: number;
  readonly isFallback: boolean;
}

/** Everything a handler receives. */
export interface StepContext {
  readonly task: TaskInfo;
  readonly sequence: SequenceInfo;
  readonly step: StepInfo;
  readonly leaseId: string;
  readonly traceparent: string;
  readonly tracestate: string;
  /**
   * Aborted when the handler should stop: the server cancelled the lease (task cancelled,
   * lease expired), the step timed out, or the worker shut down past its drain timeout.
   * `signal.reason` says which. Pass it to fetch() and other abortable APIs.
   */
  readonly signal: AbortSignal;
}

function dependencyResult(p: pb.DependencyResult): DependencyResult {
  const state = stepStateName(p.state);
  return Object.freeze({ stepName: p.stepName, state, result: state === "skipped" ? undefined : (p.result ?? {}) });
}

/** Build a StepContext from a tasker.v1.ExecutionContext (plus lease and trace fields). */
export function contextFromProto(
  context: pb.ExecutionContext | undefined,
  extra: { leaseId?: string; traceparent?: string; tracestate?: string; signal?: AbortSignal } = {},
): StepContext {
  if (!context?.task || !context.step) throw new TypeError("execution context without task or step");
  const t = context.task;
  const s = context.step;
  const seq = context.sequence;
  const deps: Record<string, DependencyResult> = {};
  for (const [name, dep] of Object.entries(seq?.dependencies ?? {})) deps[name] = dependencyResult(dep);
  return Object.freeze({
    task: Object.freeze({
      taskId: t.taskId,
      namespace: t.namespace,
      name: t.name,
      version: t.version,
      context: t.context ?? {},
      correlationId: t.correlationId,
      priority: t.priority,
      tags: Object.freeze([...t.tags]),
    }),
    sequence: new SequenceInfo(Object.freeze(deps), seq?.sequenceNumber ?? 0, seq?.totalSteps ?? 0),
    step: Object.freeze({
      stepId: s.stepId,
      name: s.name,
      handler: s.handler,
      config: s.config ?? {},
      attempt: s.attempt,
      maxAttempts: s.maxAttempts,
      timeoutMs: durationToMs(s.timeout),
      isFallback: s.isFallback,
    }),
    leaseId: extra.leaseId ?? "",
    traceparent: extra.traceparent ?? "",
    tracestate: extra.tracestate ?? "",
    signal: extra.signal ?? new AbortController().signal,
  });
}

/** Build a StepContext from a tasker.v1.Assignment. */
export function contextFromAssignment(assignment: Assignment, signal?: AbortSignal): StepContext {
  return contextFromProto(assignment.context, {
    leaseId: assignment.leaseId,
    traceparent: assignment.traceparent,
    tracestate: assignment.tracestate,
    signal,
  });
}
