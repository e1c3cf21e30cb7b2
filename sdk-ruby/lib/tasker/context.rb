# frozen_string_literal: true

module Tasker
  # The execution context a step handler receives, built from tasker.v1.ExecutionContext plus
  # the lease and trace fields of the assignment (the same shape as the Python and Node SDKs):
  #
  #   worker.register("ship_order") do |ctx|
  #     order_id = ctx.task.context["order_id"]
  #     payment = ctx.sequence.get("process_payment")   # the dependency's result, or nil
  #     next { "skipped" => true } if ctx.sequence.skipped?("check_inventory")
  #     { "shipped" => true, "attempt" => ctx.step.attempt }
  #   end
  # The task this step belongs to.
  TaskInfo = Struct.new(:task_id, :namespace, :name, :version, :context, :correlation_id, :priority, :tags,
                        keyword_init: true) do
    def self.from_proto(p)
      new(task_id: p.task_id, namespace: p.namespace, name: p.name, version: p.version,
          context: C.struct_to_hash(p.context), correlation_id: p.correlation_id,
          priority: p.priority, tags: p.tags.to_a.freeze).freeze
    end
  end

  # Outcome of a direct dependency: state "complete", "skipped" or "resolved_manually";
  # result is nil when it was skipped.
  DependencyResult = Struct.new(:step_name, :state, :result, keyword_init: true) do
    def self.from_proto(p)
      state = C.enum_name(p.state, "STEP_STATE_")
      new(step_name: p.step_name, state: state,
          result: state == "skipped" ? nil : C.struct_to_hash(p.result)).freeze
    end

    def skipped?
      state == "skipped"
    end
  end

  # This step's place in the task and the results of its direct dependencies.
  class SequenceInfo
    attr_reader :dependencies, :sequence_number, :total_steps

    def initialize(dependencies: {}, sequence_number: 0, total_steps: 0)
      @dependencies = dependencies.freeze
      @sequence_number = sequence_number
      @total_steps = total_steps
      freeze
    end

    def self.from_proto(p)
      deps = {}
      p.dependencies.each { |name, dep| deps[name] = DependencyResult.from_proto(dep) }
      new(dependencies: deps, sequence_number: p.sequence_number, total_steps: p.total_steps)
    end

    # The result of dependency +step_name+; nil if it was skipped or is not a dependency.
    def get(step_name)
      @dependencies[step_name.to_s]&.result
    end
    alias [] get

    # True when dependency +step_name+ was an optional step that was skipped.
    def skipped?(step_name)
      dep = @dependencies[step_name.to_s]
      !dep.nil? && dep.skipped?
    end
    alias skipped skipped?
  end

  # The step being run. timeout is in seconds (0 means none); attempt is 1-based.
  StepInfo = Struct.new(:step_id, :name, :handler, :config, :attempt, :max_attempts, :timeout, :is_fallback,
                        keyword_init: true) do
    def self.from_proto(p)
      new(step_id: p.step_id, name: p.name, handler: p.handler, config: C.struct_to_hash(p.config),
          attempt: p.attempt, max_attempts: p.max_attempts, timeout: C.duration_to_seconds(p.timeout),
          is_fallback: p.is_fallback).freeze
    end

    def fallback?
      is_fallback
    end
  end

  # Everything a handler receives. cancelled? turns true when the server cancels the lease (task
  # cancelled, lease expired) or its timeout passes; the worker then also interrupts the
  # handler's thread (Tasker::Cancelled, an Exception that `rescue => e` does not catch).
  class StepContext
    attr_reader :task, :sequence, :step, :lease_id, :traceparent, :tracestate

    def initialize(task:, sequence:, step:, lease_id: "", traceparent: "", tracestate: "")
      @task = task
      @sequence = sequence
      @step = step
      @lease_id = lease_id
      @traceparent = traceparent
      @tracestate = tracestate
      @cancelled = false
    end

    def self.from_proto(context, lease_id: "", traceparent: "", tracestate: "")
      new(task: TaskInfo.from_proto(context.task), sequence: SequenceInfo.from_proto(context.sequence),
          step: StepInfo.from_proto(context.step), lease_id: lease_id, traceparent: traceparent,
          tracestate: tracestate)
    end

    def self.from_assignment(assignment)
      from_proto(assignment.context, lease_id: assignment.lease_id, traceparent: assignment.traceparent,
                                     tracestate: assignment.tracestate)
    end

    def cancelled?
      @cancelled
    end

    # Raises Tasker::Cancelled when the lease was cancelled: call it in long loops.
    def check_cancelled!
      raise Cancelled, "lease #{lease_id} was cancelled" if @cancelled
    end

    # @api private
    def cancel!
      @cancelled = true
    end
  end

  # Delivered into a handler's thread when its lease is cancelled, times out or the worker shuts
  # down. An Exception (not a StandardError) so that a handler's `rescue => e` lets it through.
  class Cancelled < Exception # rubocop:disable Lint/InheritException
  end
end
