/**
 * Every error the SDK throws or understands, under one root (the same names as the Python SDK):
 *
 *     TaskerError                      root: catch this to catch everything from the SDK
 *     ├── InvalidArgumentError         INVALID_ARGUMENT (fieldViolations lists every problem);
 *     │                                also thrown before any RPC for invalid client arguments
 *     ├── NotFoundError                NOT_FOUND
 *     ├── AlreadyExistsError           ALREADY_EXISTS
 *     ├── FailedPreconditionError      FAILED_PRECONDITION (e.g. an illegal state transition)
 *     ├── ResourceExhaustedError       RESOURCE_EXHAUSTED (payload or template limits)
 *     ├── AbortedError                 ABORTED
 *     ├── UnavailableError             UNAVAILABLE (server down or restarting)
 *     ├── InternalError                INTERNAL
 *     ├── UnauthenticatedError         UNAUTHENTICATED (no or unknown token or client certificate)
 *     ├── PermissionDeniedError        PERMISSION_DENIED (the identity lacks a permission there)
 *     │   (any other status code is a plain TaskerError carrying its `code`)
 *     └── HandlerError                 thrown *by step handlers* to classify a failure
 *         ├── RetryableError           DELAYED (or TRANSIENT with `immediate: true`)
 *         ├── PermanentError           PERMANENT: fail the step (or skip it / run its fallback)
 *         └── ManualInterventionError  BUSINESS_LOGIC: block the step for an operator
 *             (alias BusinessLogicError)
 *
 * RPC errors are decoded in exactly one place, `fromRpcError`, which reads the
 * `grpc-status-details-bin` trailer (google.rpc.Status with ErrorInfo / BadRequest / RetryInfo).
 * Anything a handler throws that is not a HandlerError (including non-Error values) is reported
 * as DELAYED: unclassified failures are retried with backoff until the attempts run out.
 */
import { inspect } from "node:util";
import { status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";
import { ErrorClass, type StepError } from "../generated/tasker/v1/resources";
import { decodeStatusDetails } from "./status";
import { msToDuration, toJsonObject } from "./convert";

export interface FieldViolation {
  field: string;
  description: string;
}

export interface TaskerErrorOptions {
  code?: number;
  reason?: string;
  metadata?: Record<string, unknown>;
  fieldViolations?: FieldViolation[];
  retryDelayMs?: number;
  cause?: unknown;
}

/** Root of every SDK error. `code` is the gRPC status code (undefined when not from an RPC). */
export class TaskerError extends Error {
  readonly code: number | undefined;
  readonly reason: string;
  readonly metadata: Record<string, unknown>;
  readonly fieldViolations: FieldViolation[];
  /** From google.rpc.RetryInfo when the server sends one. */
  readonly retryDelayMs: number | undefined;

  constructor(message: string, options: TaskerErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code;
    this.reason = options.reason ?? "";
    this.metadata = { ...(options.metadata ?? {}) };
    this.fieldViolations = [...(options.fieldViolations ?? [])];
    this.retryDelayMs = options.retryDelayMs;
  }

  /** The status code's name, e.g. "NOT_FOUND" (undefined when not from an RPC). */
  get codeName(): string | undefined {
    return this.code === undefined ? undefined : GrpcStatus[this.code];
  }

  override toString(): string {
    const lines = this.fieldViolations.map((v) => `\n  ${v.field}: ${v.description}`);
    return `${this.name}: ${this.message}${lines.join("")}`;
  }
}

/** The request was invalid; `fieldViolations` names every problem. */
export class InvalidArgumentError extends TaskerError {}
/** The task, template, step, lease or breaker does not exist. */
export class NotFoundError extends TaskerError {}
/** E.g. the same template version registered with different content. */
export class AlreadyExistsError extends TaskerError {}
/** The resource is in a state that does not allow the call (the message names it). */
export class FailedPreconditionError extends TaskerError {}
/** A size or count limit was exceeded. */
export class ResourceExhaustedError extends TaskerError {}
/** The call was aborted, e.g. a watcher fell too far behind. */
export class AbortedError extends TaskerError {}
/** The server could not be reached; safe to retry. */
export class UnavailableError extends TaskerError {}
/** The server failed unexpectedly; its log has the details. */
export class InternalError extends TaskerError {}
/** No bearer token or client certificate, or one the server does not accept. */
export class UnauthenticatedError extends TaskerError {}
/** The caller's identity lacks the permission the call needs in its namespace (the message
 * names both; metadata: identity, permission, namespace). */
export class PermissionDeniedError extends TaskerError {}

const ERROR_BY_CODE: Record<number, new (m: string, o: TaskerErrorOptions) => TaskerError> = {
  [GrpcStatus.INVALID_ARGUMENT]: InvalidArgumentError,
  [GrpcStatus.NOT_FOUND]: NotFoundError,
  [GrpcStatus.ALREADY_EXISTS]: AlreadyExistsError,
  [GrpcStatus.FAILED_PRECONDITION]: FailedPreconditionError,
  [GrpcStatus.RESOURCE_EXHAUSTED]: ResourceExhaustedError,
  [GrpcStatus.ABORTED]: AbortedError,
  [GrpcStatus.UNAVAILABLE]: UnavailableError,
  [GrpcStatus.INTERNAL]: InternalError,
  [GrpcStatus.UNAUTHENTICATED]: UnauthenticatedError,
  [GrpcStatus.PERMISSION_DENIED]: PermissionDeniedError,
};

const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/**
 * Turn a failed grpc-js call (a ServiceError: code, details, metadata) into the matching
 * TaskerError subclass, decoding ErrorInfo, BadRequest and RetryInfo. The one place where
 * RPC errors are decoded.
 */
export function fromRpcError(error: unknown): TaskerError {
  if (error instanceof TaskerError) return error;
  const e = (error ?? {}) as Partial<ServiceError>;
  const code = typeof e.code === "number" ? e.code : undefined;
  let message = e.details || (error instanceof Error ? error.message : String(error));
  let reason = "";
  let metadata: Record<string, unknown> = {};
  let fieldViolations: FieldViolation[] = [];
  let retryDelayMs: number | undefined;
  const raw = typeof e.metadata?.get === "function" ? e.metadata.get(STATUS_DETAILS_KEY)[0] : undefined;
  if (raw instanceof Uint8Array) {
    try {
      const details = decodeStatusDetails(raw);
      message = details.message || message;
      reason = details.reason;
      metadata = details.metadata;
      fieldViolations = details.fieldViolations;
      retryDelayMs = details.retryDelayMs;
    } catch {
      // A garbled trailer must not hide the status code itself.
    }
  }
  const Cls = code === undefined ? TaskerError : (ERROR_BY_CODE[code] ?? TaskerError);
  return new Cls(message, { code, reason, metadata, fieldViolations, retryDelayMs, cause: error });
}

/** An invalid argument to an SDK call, thrown before any RPC is made. */
export function argumentError(field: string, description: string): InvalidArgumentError {
  return new InvalidArgumentError(`invalid argument ${field}: ${description}`, {
    reason: "INVALID_CLIENT_ARGUMENT",
    fieldViolations: [{ field, description }],
  });
}

// --- errors thrown by step handlers ------------------------------------------------------------

export interface HandlerErrorOptions {
  /** Names the failure in the step's history; defaults to the class name. */
  errorType?: string;
  /** Free-form JSON details. */
  metadata?: Record<string, unknown>;
  cause?: unknown;
}

/**
 * Base of the errors a step handler throws to say how its failure should be treated.
 * `errorType` defaults to the class name, so `class PaymentDeclined extends PermanentError {}`
 * names the failure in the step's history.
 */
export class HandlerError extends TaskerError {
  readonly errorType: string;
  errorClass: ErrorClass = ErrorClass.ERROR_CLASS_DELAYED;

  constructor(message: string, options: HandlerErrorOptions = {}) {
    super(message, { metadata: options.metadata, cause: options.cause });
    this.errorType = options.errorType || new.target.name;
  }
}

export interface RetryableErrorOptions extends HandlerErrorOptions {
  /** Retry after this many seconds (a hint, clamped by the server into [0, max_delay]). */
  retryAfter?: number;
  /** Retry at once (TRANSIENT) instead of after the backoff delay (DELAYED). */
  immediate?: boolean;
}

/** Retry the step: after the backoff delay, after `retryAfter` seconds, or at once (`immediate`). */
export class RetryableError extends HandlerError {
  readonly retryAfter: number | undefined;
  readonly immediate: boolean;

  constructor(message: string, options: RetryableErrorOptions = {}) {
    super(message, options);
    const { retryAfter } = options;
    if (retryAfter !== undefined && !(typeof retryAfter === "number" && retryAfter >= 0 && Number.isFinite(retryAfter))) {
      throw argumentError("retryAfter", "must be a finite number of seconds >= 0");
    }
    this.retryAfter = retryAfter;
    this.immediate = options.immediate ?? false;
    this.errorClass = this.immediate ? ErrorClass.ERROR_CLASS_TRANSIENT : ErrorClass.ERROR_CLASS_DELAYED;
  }
}

/** Do not retry: the step fails (or is skipped when optional, or runs its fallback). */
export class PermanentError extends HandlerError {
  override errorClass = ErrorClass.ERROR_CLASS_PERMANENT;
}

/** A business rule failed: the step becomes BLOCKED until an operator acts. */
export class ManualInterventionError extends HandlerError {
  override errorClass = ErrorClass.ERROR_CLASS_BUSINESS_LOGIC;
}

/** Alias of ManualInterventionError. */
export const BusinessLogicError = ManualInterventionError;
export type BusinessLogicError = ManualInterventionError;

// StepError field limits from resources.proto (bytes).
const MAX_MESSAGE = 16 * 1024;
const MAX_BACKTRACE = 64 * 1024;
const MAX_TYPE = 256;

function head(text: string, limit: number): string {
  const data = Buffer.from(text);
  return data.length <= limit ? text : data.subarray(0, limit - 3).toString().replace(/\uFFFD$/, "") + "…";
}

function tail(text: string, limit: number): string {
  const data = Buffer.from(text);
  return data.length <= limit ? text : "…" + data.subarray(data.length - (limit - 3)).toString().replace(/^\uFFFD/, "");
}

function describe(value: unknown): string {
  try {
    return inspect(value, { depth: 2, breakLength: Infinity });
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/**
 * Classify whatever a handler threw into a tasker.v1.StepError. HandlerErrors carry their class;
 * any other Error is DELAYED with its name as the type; a thrown non-Error value is DELAYED with
 * type "NonErrorThrown".
 */
export function stepErrorFromException(thrown: unknown): StepError {
  let errorClass = ErrorClass.ERROR_CLASS_DELAYED;
  let errorType: string;
  let message: string;
  let backtrace = "";
  let retryAfter: number | undefined;
  let metadata: Record<string, unknown> = {};
  if (thrown instanceof Error) {
    if (thrown instanceof HandlerError) {
      errorClass = thrown.errorClass;
      errorType = thrown.errorType;
      metadata = thrown.metadata;
      if (thrown instanceof RetryableError) retryAfter = thrown.retryAfter;
    } else {
      errorType = thrown.name || thrown.constructor?.name || "Error";
    }
    message = thrown.message || errorType;
    backtrace = typeof thrown.stack === "string" ? thrown.stack : "";
  } else {
    errorType = "NonErrorThrown";
    message = `handler threw a non-Error value: ${describe(thrown)}`;
  }
  const error: StepError = {
    errorClass,
    errorType: head(errorType, MAX_TYPE),
    message: head(message, MAX_MESSAGE),
    backtrace: tail(backtrace, MAX_BACKTRACE),
    retryAfter: retryAfter === undefined ? undefined : msToDuration(retryAfter * 1000),
    metadata: undefined,
  };
  if (Object.keys(metadata).length > 0) {
    try {
      error.metadata = toJsonObject(metadata, "metadata");
    } catch (bad) {
      error.metadata = { metadata_error: String((bad as Error).message) };
    }
  }
  return error;
}
