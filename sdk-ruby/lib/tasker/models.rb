# frozen_string_literal: true

module Tasker
  # Read-only views of API resources. Each keeps its protobuf message in +proto+; states are
  # lowercase strings ("in_progress", "complete") as in the Python and Node SDKs.
  C = Internal::Convert # shorthand for the model and context builders
  private_constant :C

  # The server's two words for "done" (server/tasker_server/domain/states.py; a test keeps the
  # three SDKs equal to it). Final: nothing, not even an operator, changes the task again.
  FINAL_TASK_STATES = %w[complete cancelled resolved_manually].freeze
  # Finished: nothing runs. "failed" is included: nothing further runs unless an operator retries
  # a step. Waiting for a task stops here.
  FINISHED_TASK_STATES = %w[complete failed cancelled resolved_manually].freeze
  # The name earlier releases used for FINISHED_TASK_STATES.
  TERMINAL_TASK_STATES = FINISHED_TASK_STATES
  TERMINAL_EVENTS = %w[task.completed task.failed task.cancelled task.resolved_manually].freeze

  StepErrorInfo = Struct.new(:error_class, :error_type, :message, :backtrace, :retry_after, :metadata,
                             keyword_init: true) do
    def self.from_proto(p)
      return nil if p.nil?

      new(error_class: C.enum_name(p.error_class, "ERROR_CLASS_"), error_type: p.error_type,
          message: p.message, backtrace: p.backtrace,
          retry_after: p.retry_after ? C.duration_to_seconds(p.retry_after) : nil,
          metadata: C.struct_to_hash(p.metadata))
    end
  end

  Step = Struct.new(:step_id, :name, :handler, :state, :depends_on, :sequence_number, :attempts,
                    :max_attempts, :result, :last_error, :optional, :worker_id, :proto, keyword_init: true) do
    def self.from_proto(p)
      state = C.enum_name(p.state, "STEP_STATE_")
      new(step_id: p.step_id, name: p.name, handler: p.handler, state: state,
          depends_on: p.depends_on.to_a, sequence_number: p.sequence_number, attempts: p.attempts,
          max_attempts: p.max_attempts, result: p.result ? C.struct_to_hash(p.result) : nil,
          last_error: StepErrorInfo.from_proto(p.last_error), optional: p.optional,
          worker_id: p.worker_id, proto: p)
    end
  end

  Task = Struct.new(:task_id, :namespace, :template_name, :template_version, :state, :context, :result,
                    :correlation_id, :priority, :tags, :idempotency_key, :blocked, :total_steps,
                    :completed_steps, :steps, :create_time, :update_time, :start_time, :end_time,
                    :deadline, :created, :proto, keyword_init: true) do
    def self.from_proto(p, created: true)
      new(task_id: p.task_id, namespace: p.namespace, template_name: p.template_name,
          template_version: p.template_version, state: C.enum_name(p.state, "TASK_STATE_"),
          context: C.struct_to_hash(p.context), result: C.struct_to_hash(p.result),
          correlation_id: p.correlation_id, priority: p.priority, tags: p.tags.to_a,
          idempotency_key: p.idempotency_key, blocked: p.blocked, total_steps: p.total_steps,
          completed_steps: p.completed_steps, steps: p.steps.map { |s| Step.from_proto(s) },
          create_time: C.timestamp_to_time(p.create_time), update_time: C.timestamp_to_time(p.update_time),
          start_time: C.timestamp_to_time(p.start_time), end_time: C.timestamp_to_time(p.end_time),
          deadline: C.timestamp_to_time(p.deadline), created: created, proto: p)
    end

    def terminal?
      FINISHED_TASK_STATES.include?(state)
    end

    def step(name)
      steps.find { |s| s.name == name }
    end
  end

  Template = Struct.new(:namespace, :name, :version, :description, :content_hash, :yaml, :steps,
                        :max_parallel_steps, :created, :proto, keyword_init: true) do
    def self.from_proto(p, created: true)
      new(namespace: p.namespace, name: p.name, version: p.version, description: p.description,
          content_hash: p.content_hash, yaml: p.yaml, steps: p.steps.map(&:name),
          max_parallel_steps: p.max_parallel_steps, created: created, proto: p)
    end
  end

  TemplateProblem = Struct.new(:field, :description)

  Event = Struct.new(:sequence, :event_name, :task_id, :namespace, :step_name, :correlation_id,
                     :timestamp, :metadata, :proto, keyword_init: true) do
    def self.from_proto(p)
      new(sequence: p.sequence, event_name: p.event_name, task_id: p.task_id, namespace: p.namespace,
          step_name: p.step_name, correlation_id: p.correlation_id,
          timestamp: C.timestamp_to_time(p.timestamp), metadata: C.struct_to_hash(p.metadata), proto: p)
    end
  end

  WorkerInfo = Struct.new(:worker_id, :name, :namespaces, :handlers, :capacity, :in_flight,
                          :sdk_language, :sdk_version, :state, :proto, keyword_init: true) do
    def self.from_proto(p)
      new(worker_id: p.worker_id, name: p.name, namespaces: p.namespaces.to_a, handlers: p.handlers.to_a,
          capacity: p.capacity, in_flight: p.in_flight, sdk_language: p.sdk_language,
          sdk_version: p.sdk_version, state: p.state, proto: p)
    end
  end

  Namespace = Struct.new(:name, :paused, :max_parallel_tasks, :proto, keyword_init: true) do
    def self.from_proto(p)
      new(name: p.name, paused: p.paused, max_parallel_tasks: p.max_parallel_tasks, proto: p)
    end
  end

  CircuitBreaker = Struct.new(:key, :state, :failure_count, :failure_threshold, :reset_timeout,
                              :opened_time, :proto, keyword_init: true) do
    def self.from_proto(p)
      new(key: p.key, state: C.enum_name(p.state, "CIRCUIT_BREAKER_STATE_"), failure_count: p.failure_count,
          failure_threshold: p.failure_threshold, reset_timeout: C.duration_to_seconds(p.reset_timeout),
          opened_time: C.timestamp_to_time(p.opened_time), proto: p)
    end
  end
end
