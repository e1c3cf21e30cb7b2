# frozen_string_literal: true

module Tasker
  # The client: templates, tasks, events and operator actions.
  #
  #   client = Tasker::Client.new("127.0.0.1:50051")
  #   client.register_template(File.read("order.yaml"))
  #   task = client.create_task("fulfillment", "order_fulfillment", { "order_id" => 7 })
  #   done = client.wait_for_task(task.task_id, timeout: 60)
  #
  # Every unary RPC goes through #call and every stream through #resumable: errors are decoded
  # once there by Tasker::Error.from_grpc. Invalid arguments raise ArgumentError before any RPC.
  class Client
    DEFAULT_ACTOR = "sdk-ruby"
    # Consecutive failed reconnects of a watch stream before the error reaches the caller.
    MAX_STREAM_RETRIES = 10
    RESUMABLE_CODES = [GRPC::Core::StatusCodes::UNAVAILABLE, GRPC::Core::StatusCodes::ABORTED].freeze

    V1 = Tasker::V1
    C = Internal::Convert
    private_constant :V1, :C

    attr_reader :address

    # credentials: GRPC::Core::ChannelCredentials for TLS (nil: plaintext); token: sent as
    # "authorization: Bearer <token>" metadata on every call; timeout: default deadline (s)
    # of unary calls.
    def initialize(address = "127.0.0.1:50051", credentials: nil, token: nil, timeout: 30)
      Internal::Channel.validate_address!(address)
      Internal::Channel.validate_credentials!(credentials)
      raise ArgumentError, "token must be a String" unless token.nil? || token.is_a?(String)

      @address = address
      @metadata = Internal::Channel.metadata(token)
      @timeout = timeout
      @tasks = Internal::Channel.stub(V1::TaskService::Stub, address, credentials)
      @templates = Internal::Channel.stub(V1::TemplateService::Stub, address, credentials)
      @events = Internal::Channel.stub(V1::EventService::Stub, address, credentials)
      @admin = Internal::Channel.stub(V1::AdminService::Stub, address, credentials)
    end

    # Closes the channels (idempotent).
    def close
      [@tasks, @templates, @events, @admin].each { |s| s.instance_variable_get(:@ch)&.close }
    rescue StandardError
      nil
    end

    # --- templates -----------------------------------------------------------------------------

    # Registers a template version; #created is false when it already existed identically.
    # InvalidArgumentError lists every problem in field_violations.
    def register_template(yaml)
      req!(yaml, "yaml")
      resp = call(@templates, :register_template, V1::RegisterTemplateRequest.new(yaml: yaml))
      Template.from_proto(resp.template, created: resp.created)
    end

    # Every problem found in +yaml+ (empty when valid); registers nothing.
    def validate_template(yaml)
      req!(yaml, "yaml")
      resp = call(@templates, :validate_template, V1::ValidateTemplateRequest.new(yaml: yaml))
      resp.problems.map { |p| TemplateProblem.new(p.field, p.description) }
    end

    # One template version (the highest when version is nil).
    def get_template(namespace, name, version: nil)
      request = V1::GetTemplateRequest.new(namespace: req!(namespace, "namespace"), name: req!(name, "name"),
                                           version: opt!(version, "version"))
      Template.from_proto(call(@templates, :get_template, request).template)
    end

    # Enumerator over every registered version (without YAML text), following pages.
    def list_templates(namespace: nil, name: nil, page_size: 50)
      request = V1::ListTemplatesRequest.new(namespace: opt!(namespace, "namespace"), name: opt!(name, "name"),
                                             page_size: page_size!(page_size))
      paged(@templates, :list_templates, request, :templates) { |t| Template.from_proto(t) }
    end

    # --- tasks ---------------------------------------------------------------------------------

    # Starts a task. With an idempotency_key already used in the namespace the existing task is
    # returned with created == false. deadline: a Time, or seconds from now. The task joins the
    # caller's trace: +traceparent+/+tracestate+ (W3C) when given, else the current
    # OpenTelemetry context when the API is loaded; handlers see it as ctx.traceparent.
    def create_task(namespace, template_name, context = {}, version: nil, idempotency_key: nil,
                    correlation_id: nil, priority: 0, tags: [], deadline: nil, traceparent: nil, tracestate: nil)
      raise ArgumentError, "priority must be an Integer between 0 and 100" unless priority.is_a?(Integer) && priority.between?(0, 100)

      request = V1::CreateTaskRequest.new(
        namespace: req!(namespace, "namespace"), template_name: req!(template_name, "template_name"),
        template_version: opt!(version, "version"), context: struct!(context, "context"),
        idempotency_key: opt!(idempotency_key, "idempotency_key"),
        correlation_id: opt!(correlation_id, "correlation_id"), priority: priority, tags: strings!(tags, "tags")
      )
      case deadline
      when nil then nil
      when Time then request.deadline = C.time_to_timestamp(deadline)
      when Numeric then request.deadline = C.time_to_timestamp(Time.now + deadline)
      else raise ArgumentError, "deadline must be a Time or a number of seconds"
      end
      trace = Internal::Tracing.headers(opt!(traceparent, "traceparent"), opt!(tracestate, "tracestate"))
      resp = call(@tasks, :create_task, request, trace)
      Task.from_proto(resp.task, created: resp.created)
    end

    # A task with its steps, results, errors and transitions (task.proto.transitions).
    def get_task(task_id)
      Task.from_proto(call(@tasks, :get_task, V1::GetTaskRequest.new(task_id: id!(task_id))).task)
    end

    # Enumerator over tasks, newest first (without steps), following pages. state is a
    # lowercase state name such as "failed".
    def list_tasks(namespace: nil, state: nil, template_name: nil, page_size: 50)
      request = V1::ListTasksRequest.new(namespace: opt!(namespace, "namespace"), state: task_state!(state),
                                         template_name: opt!(template_name, "template_name"),
                                         page_size: page_size!(page_size))
      paged(@tasks, :list_tasks, request, :tasks) { |t| Task.from_proto(t) }
    end

    # Cancels a task; workers holding its leases are told to stop.
    def cancel_task(task_id, actor: DEFAULT_ACTOR, reason: "")
      request = V1::CancelTaskRequest.new(task_id: id!(task_id), actor: req!(actor, "actor"),
                                          reason: opt!(reason, "reason"))
      Task.from_proto(call(@tasks, :cancel_task, request).task)
    end

    # Enumerator over the task's events (replayed after after_sequence, then live), ending after
    # its terminal event. Reconnects after UNAVAILABLE/ABORTED from the last sequence seen.
    def watch_task(task_id, after_sequence: 0)
      id!(task_id)
      raise ArgumentError, "after_sequence must be an Integer" unless after_sequence.is_a?(Integer)

      resumable(after_sequence) do |after|
        @tasks.watch_task(V1::WatchTaskRequest.new(task_id: task_id.to_s, after_sequence: after),
                          metadata: @metadata, return_op: true)
      end
    end

    # Enumerator over all matching events (event_names may use a "step.*" prefix), never ending
    # on its own; after_sequence: -1 starts at the live end. Resumes like watch_task.
    def watch_events(namespaces: [], event_names: [], after_sequence: 0)
      ns = strings!(namespaces, "namespaces")
      names = strings!(event_names, "event_names")
      raise ArgumentError, "after_sequence must be an Integer" unless after_sequence.is_a?(Integer)

      resumable(after_sequence) do |after|
        @events.watch_events(V1::WatchEventsRequest.new(namespaces: ns, event_names: names, after_sequence: after),
                             metadata: @metadata, return_op: true)
      end
    end

    # Waits until the task is complete, failed, cancelled or resolved manually and returns it.
    # Raises Timeout::Error after +timeout+ seconds.
    def wait_for_task(task_id, timeout: nil)
      id!(task_id)
      deadline = timeout && (monotonic + timeout)
      loop do
        task = get_task(task_id)
        return task if task.terminal?

        remaining = deadline && (deadline - monotonic)
        raise Timeout::Error, "task #{task_id} is still #{task.state} after #{timeout} s" if remaining && remaining <= 0

        wait_for_terminal_event(task_id, remaining)
      end
    end

    # --- operator actions ----------------------------------------------------------------------

    def retry_step(task_id, step_name, actor: DEFAULT_ACTOR, reason: "")
      request = V1::RetryStepRequest.new(task_id: id!(task_id), step_name: req!(step_name, "step_name"),
                                         actor: req!(actor, "actor"), reason: opt!(reason, "reason"))
      Step.from_proto(call(@admin, :retry_step, request).step)
    end

    def resolve_step_manually(task_id, step_name, result = {}, actor: DEFAULT_ACTOR, reason: "")
      request = V1::ResolveStepManuallyRequest.new(
        task_id: id!(task_id), step_name: req!(step_name, "step_name"), result: struct!(result, "result"),
        actor: req!(actor, "actor"), reason: opt!(reason, "reason")
      )
      Step.from_proto(call(@admin, :resolve_step_manually, request).step)
    end

    def complete_step_manually(task_id, step_name, result, actor: DEFAULT_ACTOR, reason: "")
      raise ArgumentError, "result is required (use {} for an empty result)" if result.nil?

      request = V1::CompleteStepManuallyRequest.new(
        task_id: id!(task_id), step_name: req!(step_name, "step_name"), result: struct!(result, "result"),
        actor: req!(actor, "actor"), reason: opt!(reason, "reason")
      )
      Step.from_proto(call(@admin, :complete_step_manually, request).step)
    end

    def resolve_task_manually(task_id, actor: DEFAULT_ACTOR, reason: "")
      request = V1::ResolveTaskManuallyRequest.new(task_id: id!(task_id), actor: req!(actor, "actor"),
                                                   reason: opt!(reason, "reason"))
      Task.from_proto(call(@admin, :resolve_task_manually, request).task)
    end

    def pause_namespace(namespace, actor: DEFAULT_ACTOR, reason: "")
      request = V1::PauseNamespaceRequest.new(namespace: req!(namespace, "namespace"), actor: req!(actor, "actor"),
                                              reason: opt!(reason, "reason"))
      Namespace.from_proto(call(@admin, :pause_namespace, request).namespace)
    end

    def resume_namespace(namespace, actor: DEFAULT_ACTOR, reason: "")
      request = V1::ResumeNamespaceRequest.new(namespace: req!(namespace, "namespace"), actor: req!(actor, "actor"),
                                               reason: opt!(reason, "reason"))
      Namespace.from_proto(call(@admin, :resume_namespace, request).namespace)
    end

    def list_namespaces
      paged(@admin, :list_namespaces, V1::ListNamespacesRequest.new(page_size: 500), :namespaces) do |n|
        Namespace.from_proto(n)
      end.to_a
    end

    def list_workers(namespace: nil)
      request = V1::ListWorkersRequest.new(namespace: opt!(namespace, "namespace"), page_size: 500)
      paged(@admin, :list_workers, request, :workers) { |w| WorkerInfo.from_proto(w) }.to_a
    end

    def get_circuit_breakers(keys: [])
      request = V1::GetCircuitBreakersRequest.new(keys: strings!(keys, "keys"))
      call(@admin, :get_circuit_breakers, request).circuit_breakers.map { |b| CircuitBreaker.from_proto(b) }
    end

    def reset_circuit_breaker(key, actor: DEFAULT_ACTOR, reason: "")
      request = V1::ResetCircuitBreakerRequest.new(key: req!(key, "key"), actor: req!(actor, "actor"),
                                                   reason: opt!(reason, "reason"))
      CircuitBreaker.from_proto(call(@admin, :reset_circuit_breaker, request).circuit_breaker)
    end

    private

    # The one place unary RPCs happen.
    def call(stub, method, request, extra_metadata = {})
      stub.public_send(method, request, metadata: @metadata.merge(extra_metadata),
                                        deadline: @timeout && (Time.now + @timeout))
    rescue GRPC::BadStatus => e
      raise Error.from_grpc(e)
    end

    def paged(stub, method, request, field, &convert)
      Enumerator.new do |y|
        loop do
          resp = call(stub, method, request)
          resp.public_send(field).each { |item| y << convert.call(item) }
          break if resp.next_page_token.empty?

          request.page_token = resp.next_page_token
        end
      end
    end

    # Events from the stream opened by the block (given the sequence to resume after),
    # reopening it after UNAVAILABLE or ABORTED so the caller sees no gap and no duplicate.
    def resumable(after_sequence, &open_stream)
      Enumerator.new do |y|
        last = after_sequence
        backoff = Internal::Backoff.new(0.2, 5.0)
        loop do
          op = open_stream.call(last)
          begin
            op.execute.each do |message|
              event = Event.from_proto(message.event)
              last = event.sequence
              backoff.reset
              y << event
            end
            break
          rescue GRPC::BadStatus => e
            error = Error.from_grpc(e)
            raise error unless RESUMABLE_CODES.include?(error.code) && backoff.failures < MAX_STREAM_RETRIES

            sleep(backoff.next_delay)
          ensure
            op.cancel unless op.cancelled?
          end
        end
      end
    end

    def wait_for_terminal_event(task_id, remaining)
      finished = Queue.new
      thread = Thread.new do
        watch_task(task_id).each { |event| break if TERMINAL_EVENTS.include?(event.event_name) }
      rescue Error
        sleep 0.5 # fall back to polling GetTask
      ensure
        finished << true
      end
      if remaining
        waiter = Thread.new { sleep remaining; finished << false }
        finished.pop
        waiter.kill
      else
        finished.pop
      end
      thread.kill
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    # --- argument checks (before any RPC) -------------------------------------------------------

    def req!(value, name)
      raise ArgumentError, "#{name} must be a String, got #{value.class}" unless value.is_a?(String)
      raise ArgumentError, "#{name} must not be empty" if value.empty?

      value
    end

    def opt!(value, name)
      return "" if value.nil?
      raise ArgumentError, "#{name} must be a String, got #{value.class}" unless value.is_a?(String)

      value
    end

    def id!(task_id)
      task_id = task_id.to_s if task_id.is_a?(Integer) && task_id.positive?
      req!(task_id, "task_id")
    end

    def page_size!(size)
      raise ArgumentError, "page_size must be an Integer between 1 and 500" unless size.is_a?(Integer) && size.between?(1, 500)

      size
    end

    def strings!(values, name)
      raise ArgumentError, "#{name} must be an Array of Strings" unless values.is_a?(Array) && values.all?(String)

      values
    end

    def struct!(hash, name)
      C.hash_to_struct(hash, name)
    rescue C::NotJSON => e
      raise ArgumentError, "#{name} is not a JSON object: #{e.message}"
    end

    def task_state!(state)
      return :TASK_STATE_UNSPECIFIED if state.nil?

      symbol = :"TASK_STATE_#{state.to_s.upcase}"
      raise ArgumentError, "unknown task state #{state.inspect}" if V1::TaskState.resolve(symbol).nil? || symbol == :TASK_STATE_UNSPECIFIED

      symbol
    end
  end
end
