# frozen_string_literal: true

module Tasker
  module Internal
    # Runs one handler and turns what happened into a StepSuccess or StepFailure message. Shared
    # by the stream worker and the ActiveJob step job, so both classify failures identically.
    module Outcome
      V1 = Tasker::V1
      C = Internal::Convert

      # StepError field limits from resources.proto (the server truncates too).
      MAX_MESSAGE = 16 * 1024
      MAX_BACKTRACE = 64 * 1024
      MAX_TYPE = 256
      ERROR_CLASSES = {
        transient: :ERROR_CLASS_TRANSIENT, delayed: :ERROR_CLASS_DELAYED,
        business_logic: :ERROR_CLASS_BUSINESS_LOGIC, permanent: :ERROR_CLASS_PERMANENT
      }.freeze

      # ReportStepResult statuses after which the outcome is sent again: UNAVAILABLE,
      # DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, and INTERNAL and UNKNOWN (what servers before
      # UNAVAILABLE answered while their database was down).
      RETRY_CODES = [14, 4, 8, 13, 2].freeze
      UNARY_TIMEOUT = 10.0
      # Backoff between sends of an outcome the server could not record yet.
      RESEND_BACKOFF = [0.2, 3.0].freeze
      # How long an outcome is kept when its assignment carries no lease_deadline (older servers).
      DEFAULT_RETENTION = 300.0

      module_function

      # Sends an outcome (+kind+ :result or :failure) with WorkerService.ReportStepResult,
      # retrying with backoff while the server (or its database) is unreachable, until the
      # lease's hard deadline +deadline+ (monotonic seconds). Returns true once recorded, false
      # when the deadline passed first; raises Tasker::Error when refused for good (LEASE_STALE).
      def report(stub, metadata, worker_id, kind, outcome, deadline:)
        backoff = Internal::Backoff.new(*RESEND_BACKOFF)
        until report_once(stub, metadata, worker_id, kind, outcome, deadline)
          remaining = deadline - monotonic
          return false if remaining <= 0

          sleep [backoff.next_delay, remaining].min
        end
        true
      end

      # One ReportStepResult: true when recorded, false when worth trying again; raises
      # Tasker::Error when refused for good.
      def report_once(stub, metadata, worker_id, kind, outcome, deadline)
        request = V1::ReportStepResultRequest.new(worker_id: worker_id)
        kind == :result ? request.success = outcome : request.failure = outcome
        timeout = (deadline - monotonic).clamp(0.1, UNARY_TIMEOUT)
        stub.report_step_result(request, metadata: metadata, deadline: Time.now + timeout)
        true
      rescue GRPC::BadStatus => e
        error = Error.from_grpc(e)
        raise error unless RETRY_CODES.include?(error.code)

        false
      end

      # The assignment's hard deadline (lease_deadline) on the monotonic clock.
      def lease_deadline(assignment)
        ts = assignment.lease_deadline
        return monotonic + DEFAULT_RETENTION unless ts

        monotonic + (ts.seconds + (ts.nanos / 1e9) - Time.now.to_f)
      end

      def monotonic
        Process.clock_gettime(Process::CLOCK_MONOTONIC)
      end

      # Calls the handler in a span joined to the assignment's trace; returns its value.
      def invoke(handler, ctx)
        Tracing.in_step_span(ctx) { handler.call(ctx) }
      end

      # The success message for +value+, or a PERMANENT InvalidResult failure when the handler
      # returned something that is not a JSON object (nil counts as {}).
      def success(lease_id, value, elapsed)
        value = {} if value.nil?
        unless value.is_a?(Hash)
          return failure(lease_id, PermanentError.new(
                                     "handler returned #{value.class}; it must return a Hash (JSON object) or nil",
                                     error_type: "InvalidResult"
                                   ), elapsed)
        end
        begin
          struct = C.hash_to_struct(value, "result")
        rescue C::NotJSON => e
          return failure(lease_id, PermanentError.new("handler result is not JSON: #{e.message}",
                                                      error_type: "InvalidResult"), elapsed)
        end
        [:result, V1::StepSuccess.new(lease_id: lease_id, result: struct,
                                      execution_time: C.seconds_to_duration(elapsed))]
      end

      def failure(lease_id, exception, elapsed)
        [:failure, V1::StepFailure.new(lease_id: lease_id, error: step_error(exception),
                                       execution_time: C.seconds_to_duration(elapsed))]
      end

      # Classifies an exception raised by a handler into a tasker.v1.StepError (see errors.rb).
      def step_error(exc)
        retry_after = nil
        details = {}
        if exc.is_a?(HandlerError)
          klass = exc.error_class
          type = exc.error_type
          details = exc.metadata
          retry_after = exc.retry_after if exc.is_a?(RetryableError)
        else
          klass = exc.is_a?(ScriptError) ? :permanent : :delayed
          type = exc.class.name || "Exception"
        end
        message = exc.message.to_s
        message = type if message.empty?
        error = V1::StepError.new(
          error_class: ERROR_CLASSES.fetch(klass), error_type: head(type, MAX_TYPE),
          message: head(message, MAX_MESSAGE), backtrace: tail(backtrace(exc), MAX_BACKTRACE)
        )
        error.retry_after = C.seconds_to_duration(retry_after) if retry_after
        unless details.empty?
          error.metadata = begin
            C.hash_to_struct(details, "metadata")
          rescue C::NotJSON => e
            C.hash_to_struct({ "metadata_error" => e.message })
          end
        end
        error
      end

      def backtrace(exc)
        lines = ["#{exc.class}: #{exc.message}", *(exc.backtrace || []).map { |l| "  #{l}" }]
        cause = exc.cause
        lines << "caused by #{cause.class}: #{cause.message}" if cause
        lines.join("\n")
      end

      def head(text, limit)
        text.bytesize <= limit ? text : "#{text.byteslice(0, limit - 3).scrub('')}…"
      end

      def tail(text, limit)
        text.bytesize <= limit ? text : "…#{text.byteslice(-(limit - 3), limit - 3).scrub('')}"
      end
    end

    # W3C trace context for handlers: with the OpenTelemetry API loaded, the handler runs in a
    # consumer span whose parent is the assignment's traceparent; without it the raw values are
    # on the context (ctx.traceparent / ctx.tracestate).
    module Tracing
      module_function

      def in_step_span(ctx, &block)
        return block.call unless otel?

        carrier = {}
        carrier["traceparent"] = ctx.traceparent unless ctx.traceparent.to_s.empty?
        carrier["tracestate"] = ctx.tracestate unless ctx.tracestate.to_s.empty?
        parent = ::OpenTelemetry.propagation.extract(carrier)
        tracer = ::OpenTelemetry.tracer_provider.tracer("tasker", Tasker::VERSION)
        ::OpenTelemetry::Context.with_current(parent) do
          tracer.in_span("tasker.step #{ctx.step.handler}", kind: :consumer, attributes: {
                           "tasker.task_id" => ctx.task.task_id, "tasker.namespace" => ctx.task.namespace,
                           "tasker.step" => ctx.step.name, "tasker.attempt" => ctx.step.attempt,
                           "tasker.correlation_id" => ctx.task.correlation_id
                         }, &block)
        end
      end

      # Metadata carrying the caller's trace context to CreateTask.
      def headers(traceparent, tracestate)
        carrier = {}
        if !traceparent.empty?
          carrier["traceparent"] = traceparent
          carrier["tracestate"] = tracestate unless tracestate.empty?
        elsif otel?
          ::OpenTelemetry.propagation.inject(carrier)
        end
        carrier.slice("traceparent", "tracestate")
      end

      def otel?
        defined?(::OpenTelemetry) && ::OpenTelemetry.respond_to?(:propagation) &&
          ::OpenTelemetry.respond_to?(:tracer_provider)
      end
    end
  end
end
