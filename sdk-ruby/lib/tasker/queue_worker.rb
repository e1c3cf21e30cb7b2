# frozen_string_literal: true

require "base64"

module Tasker
  # The job-queue pattern: a Worker that does not run handlers itself but hands each leased step
  # to a job queue (e.g. ActiveJob with Sidekiq); the job runs the handler in whatever process
  # picks it up and reports with the lease id through WorkerService.Heartbeat/ReportStepResult
  # (Tasker::LeaseRunner). The server still bounds queued + running steps by +capacity+ while
  # the stream is up; the hello says so (hands_off_leases), so a dropped stream leaves the jobs'
  # leases to them.
  #
  #   worker = Tasker::QueueWorker.new(address, namespaces: ["fulfillment"],
  #                                    enqueue: ->(payload) { Tasker::StepJob.perform_later(payload) })
  #   worker.register("ship_order", ShipOrderHandler)   # names advertised in the hello
  #
  # It acknowledges each assignment at once, as it hands the lease to a job (no +ack_delay+): the
  # job may wait in its queue for longer than the server's ack_timeout, and only an acknowledged
  # lease outlives this stream.
  class QueueWorker < Worker
    def initialize(address, enqueue:, **options)
      raise ArgumentError, "enqueue must respond to call(payload)" unless enqueue.respond_to?(:call)
      raise ArgumentError, "a QueueWorker acknowledges each lease at once: ack_delay does not apply" if options.key?(:ack_delay)

      super(address, **options, ack_delay: 0)
      @enqueue = enqueue
    end

    private

    # The jobs heartbeat and report by lease id: the server keeps their leases if this stream
    # drops (a restart of the host process does not stop jobs already queued or running).
    def hands_off_leases?
      true
    end

    # The payload is plain JSON (strings only) so any queue can carry it.
    def run_handler(lease)
      @enqueue.call(LeaseRunner.payload(lease.assignment, worker_id: worker_id,
                                                          heartbeat_interval: @heartbeat_interval))
      HANDED_OFF
    end
  end

  # Runs one handed-off lease in a job: checks the lease is still live, runs the handler under
  # its timeout with unary heartbeats, and reports the outcome with ReportStepResult.
  class LeaseRunner
    V1 = Tasker::V1
    private_constant :V1

    def self.payload(assignment, worker_id:, heartbeat_interval:)
      { "assignment" => Base64.strict_encode64(V1::Assignment.encode(assignment)), "worker_id" => worker_id,
        "heartbeat_interval" => heartbeat_interval.to_f }
    end

    # handlers: name => object with #call(ctx).
    def initialize(address, handlers:, credentials: nil, token: nil, logger: nil)
      @stub = Internal::Channel.stub(V1::WorkerService::Stub, address, credentials)
      @metadata = Internal::Channel.metadata(token)
      @handlers = handlers
      @logger = logger || Logger.new($stderr, level: Logger::WARN, progname: "tasker.lease_runner")
    end

    # Returns :reported, :stale (the lease ended before the job ran) or :lost (not recorded).
    def run(payload)
      assignment = V1::Assignment.decode(Base64.strict_decode64(payload.fetch("assignment")))
      @worker_id = payload.fetch("worker_id", "")
      lease_id = assignment.lease_id
      @deadline = Internal::Outcome.lease_deadline(assignment)
      return :stale unless extend_lease(lease_id)

      ctx = StepContext.from_assignment(assignment)
      started = monotonic
      kind, outcome = Thread.handle_interrupt(Cancelled => :never) do
        beats = heartbeats(lease_id, ctx, payload.fetch("heartbeat_interval", 10.0).to_f)
        result = execute(ctx, started)
        beats.kill
        discard_interrupts
        result
      end
      return :stale if kind.nil?

      report(kind, outcome)
    end

    private

    def execute(ctx, started)
      handler = @handlers[ctx.step.handler]
      unless handler
        return Internal::Outcome.failure(ctx.lease_id, RetryableError.new(
                                                         "handler #{ctx.step.handler.inspect} is not registered", error_type: "HandlerNotFound"
                                                       ), 0.0)
      end
      timeout = ctx.step.timeout
      value = with_timeout(timeout, ctx) do
        Thread.handle_interrupt(Cancelled => :immediate) { Internal::Outcome.invoke(handler, ctx) }
      end
      Internal::Outcome.success(ctx.lease_id, value, monotonic - started)
    rescue Cancelled
      return [nil, nil] unless @timed_out

      Internal::Outcome.failure(ctx.lease_id, RetryableError.new(
                                                "step #{ctx.step.name.inspect} exceeded its timeout of #{format('%g', timeout)}s",
                                                immediate: true, error_type: "StepTimeout"
                                              ), monotonic - started)
    rescue Exception => e # rubocop:disable Lint/RescueException -- classified like the stream worker
      Internal::Outcome.failure(ctx.lease_id, e, monotonic - started)
    end

    def discard_interrupts
      Thread.handle_interrupt(Cancelled => :immediate) { Thread.pass } if Thread.pending_interrupt?
    rescue Cancelled
      nil
    end

    def with_timeout(seconds, ctx, &block)
      return block.call unless seconds.positive?

      runner = Thread.current
      timer = Thread.new do
        sleep seconds
        @timed_out = true
        ctx.cancel!
        runner.raise(Cancelled, "timeout")
      end
      begin
        block.call
      ensure
        timer.kill
        timer.join
      end
    end

    def heartbeats(lease_id, ctx, interval)
      runner = Thread.current
      Thread.new do
        loop do
          sleep [interval, 0.2].max
          next if extend_lease(lease_id)

          ctx.cancel! # the lease ended (task cancelled, expired): stop the handler
          runner.raise(Cancelled, "lease #{lease_id} is no longer active")
          break
        end
      end
    end

    # True while the lease is active (unknown on network trouble counts as active).
    def extend_lease(lease_id)
      response = @stub.heartbeat(V1::HeartbeatRequest.new(worker_id: @worker_id, lease_ids: [lease_id]),
                                 metadata: @metadata, deadline: Time.now + Internal::Outcome::UNARY_TIMEOUT)
      response.leases.all?(&:active)
    rescue GRPC::BadStatus => e
      @logger.warn("heartbeat for lease #{lease_id} failed: #{Error.from_grpc(e).inspect}")
      true
    end

    # Retried while the server is unreachable, until the lease's hard deadline (carried by the
    # assignment in the payload): past it the lease cannot be current any more.
    def report(kind, outcome)
      recorded = Internal::Outcome.report(@stub, @metadata, @worker_id, kind, outcome, deadline: @deadline)
      @logger.warn("outcome of lease #{outcome.lease_id} not recorded before the lease's deadline") unless recorded
      recorded ? :reported : :lost
    rescue Error => e
      return :stale if e.reason == "LEASE_STALE"

      raise
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
