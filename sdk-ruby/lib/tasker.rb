# frozen_string_literal: true

# Tasker Ruby SDK entry point. The generated messages and service stubs live in
# lib/tasker/v1 (regenerated from ../proto by `make gen`; do not edit them).
require "tasker/v1/resources_pb"
require "tasker/v1/task_service_services_pb"
require "tasker/v1/template_service_services_pb"
require "tasker/v1/worker_service_services_pb"
require "tasker/v1/admin_service_services_pb"
require "tasker/v1/event_service_services_pb"

module Tasker
  VERSION = "0.1.0"
end
