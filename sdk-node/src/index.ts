// Tasker Node SDK entry point.
//
// The generated code (ts-proto, grpc-js clients) lives in ./generated and is
// regenerated from ../proto by `make gen`; do not edit it by hand.
// Every generated file exports `protobufPackage`, so each file is re-exported
// as a namespace; the five service clients are also exported at top level.

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
