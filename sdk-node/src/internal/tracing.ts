// W3C trace context on both ends: the client sends the active span as `traceparent` on
// CreateTask (the server stores it with the task), and the worker makes the assignment's
// traceparent the parent of the handler's span. Only @opentelemetry/api is used, so without
// an SDK configured by the application every span is a no-op.
import {
  context as otelContext,
  createTraceState,
  isSpanContextValid,
  SpanKind,
  SpanStatusCode,
  trace,
  type Context,
  type Span,
  type SpanContext,
} from "@opentelemetry/api";
import { SDK_VERSION } from "../version";

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** The span context a W3C traceparent (and tracestate) describes; undefined when malformed. */
export function parseTraceparent(traceparent: string, tracestate = ""): SpanContext | undefined {
  const m = TRACEPARENT.exec(traceparent.trim());
  if (!m || m[1] === "ff" || (m[1] === "00" && m[5])) return undefined;
  const spanContext: SpanContext = {
    traceId: m[2],
    spanId: m[3],
    traceFlags: parseInt(m[4], 16),
    isRemote: true,
  };
  if (tracestate) spanContext.traceState = createTraceState(tracestate);
  return isSpanContextValid(spanContext) ? spanContext : undefined;
}

/** The active span as a traceparent header value, if there is a valid one. */
export function activeTraceparent(): { traceparent: string; tracestate?: string } | undefined {
  const sc = trace.getSpanContext(otelContext.active());
  if (!sc || !isSpanContextValid(sc)) return undefined;
  const flags = (sc.traceFlags & 0xff).toString(16).padStart(2, "0");
  const out: { traceparent: string; tracestate?: string } = { traceparent: `00-${sc.traceId}-${sc.spanId}-${flags}` };
  const state = sc.traceState?.serialize();
  if (state) out.tracestate = state;
  return out;
}

export interface SpanInfo {
  handler: string;
  taskId: string;
  namespace: string;
  step: string;
  attempt: number;
  correlationId: string;
  traceparent: string;
  tracestate: string;
}

/** Run `fn` inside a CONSUMER span whose parent is the assignment's trace context. */
export async function withHandlerSpan<T>(info: SpanInfo, fn: () => Promise<T>): Promise<T> {
  const parentSc = info.traceparent ? parseTraceparent(info.traceparent, info.tracestate) : undefined;
  const parent: Context = parentSc ? trace.setSpanContext(otelContext.active(), parentSc) : otelContext.active();
  const tracer = trace.getTracer("tasker", SDK_VERSION);
  return tracer.startActiveSpan(
    `tasker.step ${info.handler}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        "tasker.task_id": info.taskId,
        "tasker.namespace": info.namespace,
        "tasker.step": info.step,
        "tasker.attempt": info.attempt,
        "tasker.correlation_id": info.correlationId,
      },
    },
    parent,
    async (span: Span) => {
      try {
        return await fn();
      } catch (error) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
        if (error instanceof Error) span.recordException(error);
        throw error;
      } finally {
        span.end();
      }
    },
  );
}
