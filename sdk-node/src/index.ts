// Tasker Node SDK: the public API. Everything here is re-exported from private modules in
// ./internal; a test pins this list (test/exports.test.mjs).
//
// - Client: templates, tasks, events (async iterables that resume), operator actions.
// - Worker: runs step handlers for leases received over one gRPC stream.
// - Errors: everything derives from TaskerError (see internal/errors.ts for the tree).
// - bridgeEvents: the event log as a Node EventEmitter (e.g. for an Express app).
//
// The generated code (ts-proto, grpc-js clients) lives in ./generated and is regenerated from
// ../proto by `make gen`; do not edit it by hand. Each generated file is re-exported as a
// namespace; the five service clients are also exported at top level.

export { Client, DEFAULT_ACTOR } from "./internal/client";
export type {
  ActorOptions,
  ClientOptions,
  CreateTaskOptions,
  ListTasksOptions,
  WatchEventsOptions,
} from "./internal/client";
export type { ConnectionOptions } from "./internal/channel";
export { Worker } from "./internal/worker";
export type {
  Handler,
  HandlerFunction,
  HandlerResult,
  ShutdownOptions,
  StepHandler,
  WorkerLogger,
  WorkerOptions,
} from "./internal/worker";
export { SequenceInfo, contextFromProto } from "./internal/context";
export type { DependencyResult, StepContext, StepInfo, TaskInfo } from "./internal/context";
export {
  AbortedError,
  AlreadyExistsError,
  BusinessLogicError,
  FailedPreconditionError,
  HandlerError,
  InternalError,
  InvalidArgumentError,
  ManualInterventionError,
  NotFoundError,
  PermanentError,
  PermissionDeniedError,
  ResourceExhaustedError,
  RetryableError,
  TaskerError,
  UnavailableError,
  UnauthenticatedError,
  fromRpcError,
  stepErrorFromException,
} from "./internal/errors";
export type { FieldViolation, HandlerErrorOptions, RetryableErrorOptions, TaskerErrorOptions } from "./internal/errors";
export {
  FINAL_TASK_STATES,
  FINISHED_TASK_STATES,
  TASK_STATES,
  TERMINAL_EVENTS,
  TERMINAL_TASK_STATES,
} from "./internal/models";
export type {
  CircuitBreaker,
  Event,
  Namespace,
  Step,
  StepErrorInfo,
  StepTemplate,
  Task,
  Template,
  TemplateProblem,
  WorkerInfo,
} from "./internal/models";
export { TaskEventBridge, bridgeEvents } from "./internal/events";
export { SDK_VERSION } from "./version";

export * as resources from "./generated/tasker/v1/resources";
export * as taskService from "./generated/tasker/v1/task_service";
export * as templateService from "./generated/tasker/v1/template_service";
export * as workerService from "./generated/tasker/v1/worker_service";
export * as adminService from "./generated/tasker/v1/admin_service";
export * as eventService from "./generated/tasker/v1/event_service";

export { TaskServiceClient, TaskServiceService } from "./generated/tasker/v1/task_service";
export { TemplateServiceClient, TemplateServiceService } from "./generated/tasker/v1/template_service";
export { WorkerServiceClient, WorkerServiceService } from "./generated/tasker/v1/worker_service";
export { AdminServiceClient, AdminServiceService } from "./generated/tasker/v1/admin_service";
export { EventServiceClient, EventServiceService } from "./generated/tasker/v1/event_service";
