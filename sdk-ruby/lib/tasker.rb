# frozen_string_literal: true

# Tasker Ruby SDK. Public API:
#
#   Tasker::Client        templates, tasks, events, operator actions (errors: Tasker::Error tree)
#   Tasker::Worker        runs step handlers for leases from one WorkerService.Connect stream
#   Tasker::StepContext   what a handler receives (task, sequence, step, traceparent, cancelled?)
#   Tasker::RetryableError, PermanentError, ManualInterventionError (BusinessLogicError)
#   Tasker::Railtie       Rails integration (loaded with "tasker/rails" inside a Rails app)
#
# The generated messages and service stubs live in lib/tasker/v1 (regenerated from ../proto by
# `make gen`; do not edit them). Everything under Tasker::Internal is private.
require "monitor"
require "timeout"
require "tasker/v1/resources_pb"
require "tasker/v1/task_service_services_pb"
require "tasker/v1/template_service_services_pb"
require "tasker/v1/worker_service_services_pb"
require "tasker/v1/admin_service_services_pb"
require "tasker/v1/event_service_services_pb"

module Tasker
  VERSION = "0.1.0"
end

require "tasker/errors"
require "tasker/internal/convert"
require "tasker/internal/channel"
require "tasker/models"
require "tasker/context"
require "tasker/internal/outcome"
require "tasker/internal/session"
require "tasker/client"
require "tasker/worker"
require "tasker/queue_worker"

require "tasker/rails" if defined?(::Rails::Railtie)
