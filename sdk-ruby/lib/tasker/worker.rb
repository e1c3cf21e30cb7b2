# frozen_string_literal: true

require "logger"
require "securerandom"
require "socket"

module Tasker
  # Runs registered step handlers for leases received on one WorkerService.Connect stream.
  #
  #   worker = Tasker::Worker.new("127.0.0.1:50051", namespaces: ["fulfillment"], capacity: 10)
  #   worker.register("validate_order") { |ctx| { "valid" => true } }
  #   worker.register("ship_order", ShipOrderHandler)      # a class (instantiated) or object with #call(ctx)
  #   trap("TERM") { Thread.new { worker.shutdown(drain_timeout: 30) } }
  #   worker.run                                           # blocks until shutdown completes
  #
  # Lifecycle of a lease: assignment -> handler on one of +capacity+ pool threads (under the step
  # timeout, in an OpenTelemetry span when available) -> result | failure -> result_ack. The
  # assignment is acknowledged only if its handler is still running (or queued for a pool thread)
  # +ack_delay+ seconds after it arrived: a result or failure implies the acknowledgement, so a
  # short step costs one message from the worker instead of two (a QueueWorker acknowledges at
  # once). Running leases are heartbeated every heartbeat_interval. A cancellation (or a
  # heartbeat answer saying the lease is gone) sets ctx.cancelled?, interrupts the handler's
  # thread with Tasker::Cancelled and reports nothing. A timeout reports TRANSIENT StepTimeout
  # and interrupts the handler the same way.
  #
  # If the stream breaks (or the server is silent past keepalive_timeout), handlers keep
  # running (leases are extended with the unary Heartbeat) while the worker reconnects with
  # exponential backoff and jitter; every hello names the leases the worker still holds
  # (held_leases: handlers running, outcomes not yet acknowledged).
  #
  # An outcome (result or failure) is kept until the server acknowledges it, at most until the
  # lease's hard deadline (Assignment#lease_deadline): it goes on the stream, and is sent again
  # after a backoff when the result_ack says UNAVAILABLE, right after the welcome of a new stream
  # when the stream broke, and by the unary ReportStepResult (retried with backoff) while there
  # is no stream. It is dropped when recorded, or refused for good (LEASE_STALE, NOT_FOUND, ...).
  # The server records an outcome once, so sending it again is harmless.
  #
  # Shutdown is ordered and idempotent: drain -> stop taking work -> wait for in-flight handlers
  # (up to drain_timeout; the rest are interrupted and reported as TRANSIENT WorkerShutdown) ->
  # flush results -> close.
  class Worker
    DEFAULT_HEARTBEAT_INTERVAL = 10.0
    DEFAULT_KEEPALIVE_TIMEOUT = 60.0
    WELCOME_TIMEOUT = 30.0
    UNARY_TIMEOUT = Internal::Outcome::UNARY_TIMEOUT
    FLUSH_TIMEOUT = 5.0
    DEFAULT_ACK_DELAY = 0.02
    TICK = 0.1
    HANDED_OFF = [].freeze # run_handler's answer when another process reports the outcome
    FATAL_CODES = [3, 16, 7, 12].freeze # INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED
    # result_ack reasons after which the outcome is kept and sent again (INTERNAL: older servers'
    # answer to a failed write, "try again").
    RESEND_REASONS = %w[UNAVAILABLE INTERNAL].freeze
    MAX_HELD_LEASES = 10_000

    V1 = Tasker::V1
    private_constant :V1

    # One held lease. state: :queued -> :running -> :finished; +reported+ makes the first
    # outcome win (the handler's, a timeout's or shutdown's).
    # +deadline+ is the step timeout's, +hard_deadline+ the lease's (monotonic seconds).
    Lease = Struct.new(:lease_id, :assignment, :ctx, :handler, :state, :thread, :reported, :cancelled_by_server,
                       :deadline, :started, :hard_deadline, keyword_init: true)
    private_constant :Lease

    # An outcome the server has not acknowledged yet, kept until +deadline+ (the lease's hard
    # deadline, monotonic). +sent_on+: the stream whose result_ack it waits for; +resend+: the
    # server answered UNAVAILABLE; +nudged+: an ack, the end of its stream or a new welcome came.
    PendingOutcome = Struct.new(:lease_id, :kind, :outcome, :deadline, :sent_on, :resend, :nudged,
                                keyword_init: true)
    private_constant :PendingOutcome

    attr_reader :address, :namespaces, :capacity, :worker_id, :name, :ack_delay

    # +ack_delay+ (seconds, default 0.02): how long a handler may run before its assignment is
    # acknowledged; one that finishes sooner is never acknowledged (its outcome implies it).
    # Capped at a quarter of the server's ack_timeout; 0 acknowledges every assignment at once.
    def initialize(address, namespaces:, capacity: 10, worker_id: nil, name: nil, credentials: nil, token: nil,
                   logger: nil, ack_delay: DEFAULT_ACK_DELAY)
      Internal::Channel.validate_address!(address)
      Internal::Channel.validate_credentials!(credentials)
      namespaces = [namespaces] if namespaces.is_a?(String)
      unless namespaces.is_a?(Array) && !namespaces.empty? && namespaces.all? { |n| n.is_a?(String) && !n.empty? }
        raise ArgumentError, "namespaces must be a non-empty Array of non-empty Strings"
      end
      raise ArgumentError, "capacity must be an Integer between 1 and 10,000" unless capacity.is_a?(Integer) && capacity.between?(1, 10_000)
      if worker_id && !(worker_id.is_a?(String) && worker_id.length.between?(1, 64))
        raise ArgumentError, "worker_id must be a String of 1..64 characters"
      end
      unless ack_delay.is_a?(Numeric) && ack_delay.to_f.finite? && ack_delay >= 0
        raise ArgumentError, "ack_delay must be a number of seconds >= 0"
      end

      @address = address
      @namespaces = namespaces.dup.freeze
      @capacity = capacity
      @ack_delay = ack_delay.to_f
      @worker_id = worker_id || SecureRandom.hex(16)
      @name = name || "#{Socket.gethostname}:#{Process.pid}"
      @credentials = credentials
      @metadata = Internal::Channel.metadata(token)
      @logger = logger || Logger.new($stderr, level: Logger::WARN, progname: "tasker.worker")
      @handlers = {}

      @lock = Monitor.new
      @changed = @lock.new_cond
      @leases = {}
      @unacked_outcomes = {} # lease id => PendingOutcome, each with a thread delivering it
      @acks_due = {} # lease id => [monotonic time, session, lease]: delayed acks, sent by ack_loop
      @ack_due_changed = @lock.new_cond
      @background = []
      @session = nil
      @jobs = Queue.new
      @heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL
      @keepalive_timeout = DEFAULT_KEEPALIVE_TIMEOUT
      @ack_timeout = nil # the welcome's
      @running = false
      @stopping = false
      @stopped = false
      @connected = false
      @shutdown_thread = nil
    end

    # --- registration --------------------------------------------------------------------------

    # Registers the handler +name+: an object with #call(ctx), a class whose instances have one
    # (instantiated once here), or a block. The handler returns a Hash (JSON object) or nil.
    def register(name, handler = nil, &block)
      raise ArgumentError, "handler name must be a non-empty String without surrounding spaces" unless name.is_a?(String) && !name.empty? && name.strip == name
      raise ArgumentError, "give a handler or a block, not both" if handler && block
      raise ArgumentError, "handler #{name.inspect} is already registered" if @handlers.key?(name)
      raise Error, "register handlers before run: the hello lists them" if @running

      handler = block if block
      handler = handler.new if handler.is_a?(Class)
      raise ArgumentError, "handler must respond to call(context)" unless handler.respond_to?(:call)

      @handlers[name] = handler
      self
    end
    alias handle register

    def handlers
      @handlers.keys.sort
    end

    # Leases currently held (running or waiting for a pool thread).
    def in_flight
      @lock.synchronize { @leases.size }
    end

    # Leases this worker still holds, as its hello announces them: handlers running (or queued
    # for a pool thread) and outcomes the server has not acknowledged yet.
    def held_leases
      @lock.synchronize { (@leases.keys | @unacked_outcomes.keys).first(MAX_HELD_LEASES) }
    end

    # True while a stream is open and welcomed.
    def connected?
      @lock.synchronize { !@session.nil? }
    end

    # Waits until the first welcome; false on timeout.
    def wait_connected(timeout: nil)
      deadline = timeout && (monotonic + timeout)
      @lock.synchronize do
        until @connected
          remaining = deadline && (deadline - monotonic)
          return false if remaining && remaining <= 0

          @changed.wait(remaining ? [remaining, 0.5].min : 0.5)
        end
      end
      true
    end

    # --- main loop -----------------------------------------------------------------------------

    # Connects and runs handlers until #shutdown completes. Raises Tasker::Error for errors that
    # reconnecting cannot fix (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED,
    # UNIMPLEMENTED).
    def run
      raise ArgumentError, "register at least one handler before run" if @handlers.empty?

      @lock.synchronize do
        raise Error, "this worker is already running" if @running
        raise Error, "this worker has been shut down" if @stopped || @stopping

        @running = true
      end
      @stub = Internal::Channel.stub(V1::WorkerService::Stub, @address, @credentials)
      @pool = Array.new(@capacity) { |i| Thread.new { pool_loop }.tap { |t| t.name = "tasker-pool-#{i}" } }
      @monitor = Thread.new { monitor_loop }.tap { |t| t.name = "tasker-monitor" }
      @acker = Thread.new { ack_loop }.tap { |t| t.name = "tasker-acks" }
      backoff = Internal::Backoff.new(0.1, 5.0)
      begin
        until @stopped
          error = run_session(backoff)
          break if @stopped

          if error.is_a?(Error) && FATAL_CODES.include?(error.code)
            raise error
          end

          delay = backoff.next_delay
          @logger.warn("worker stream lost (#{error&.message || 'ended by server'}); reconnecting in #{delay.round(2)}s")
          # Other signals on @changed (a lease finishing) must not cut the backoff short.
          wake_at = monotonic + delay
          @lock.synchronize do
            @changed.wait(wake_at - monotonic) while !@stopped && monotonic < wake_at
          end
        end
      ensure
        finish_run
      end
      self
    end

    # Runs #run on a background thread; returns the thread.
    def start
      Thread.new do
        run
      rescue Exception => e # rubocop:disable Lint/RescueException
        @logger.error("worker stopped: #{e.class}: #{e.message}")
        raise
      end.tap { |t| t.name = "tasker-worker" }
    end

    # Drains, waits up to +drain_timeout+ s for in-flight handlers (then interrupts them,
    # reporting TRANSIENT WorkerShutdown), flushes results and closes. Idempotent and
    # thread-safe; returns once the worker has stopped. Do not call it from a trap context
    # directly: trap("TERM") { Thread.new { worker.shutdown } }.
    def shutdown(drain_timeout: 30)
      thread = @lock.synchronize do
        @shutdown_thread ||= Thread.new { perform_shutdown(drain_timeout) }
      end
      thread.join
      @lock.synchronize { @changed.wait(0.1) while @running }
      nil
    end

    private

    def run_session(backoff)
      session = Internal::Session.new(@stub, @metadata)
      hello = V1::WorkerHello.new(worker_id: @worker_id, name: @name, namespaces: @namespaces,
                                  handlers: handlers, capacity: @capacity, sdk_language: "ruby",
                                  sdk_version: Tasker::VERSION, hands_off_leases: hands_off_leases?,
                                  held_leases: held_leases)
      @pending_session = session
      welcomed = false
      session.each(hello) do |message|
        unless welcomed
          raise Error, "expected welcome, got #{message.message}" unless message.message == :welcome

          welcomed = true
          on_welcome(message.welcome, session)
          backoff.reset
          next
        end
        dispatch(session, message)
      end
      nil
    rescue GRPC::BadStatus => e
      Error.from_grpc(e)
    rescue StandardError => e
      e
    ensure
      @pending_session = nil
      @lock.synchronize do
        @session = nil if @session.equal?(session)
        # No result_ack will come on this stream: its outcomes go by unary or the next stream.
        @unacked_outcomes.each_value { |p| nudge(p) if p.sent_on.equal?(session) }
      end
    end

    def on_welcome(welcome, session)
      @worker_id = welcome.worker_id unless welcome.worker_id.empty?
      if welcome.heartbeat_interval
        interval = Internal::Convert.duration_to_seconds(welcome.heartbeat_interval)
        @heartbeat_interval = interval if interval.positive?
      end
      if welcome.keepalive_timeout
        timeout = Internal::Convert.duration_to_seconds(welcome.keepalive_timeout)
        @keepalive_timeout = timeout.positive? ? timeout : nil
      end
      if welcome.ack_timeout
        ack_timeout = Internal::Convert.duration_to_seconds(welcome.ack_timeout)
        @ack_timeout = ack_timeout.positive? ? ack_timeout : nil
      end
      unless welcome.unknown_namespaces.empty?
        @logger.warn("namespaces without templates (yet): #{welcome.unknown_namespaces.to_a.join(', ')}")
      end
      held = @lock.synchronize do
        @session = session
        @connected = true
        # Outcomes waiting to retry: send them on this stream now.
        @unacked_outcomes.each_value { |p| nudge(p) if p.sent_on.nil? }
        @changed.broadcast
        @leases.keys
      end
      session.push(heartbeat_message(held)) unless held.empty? # leases that survived a reconnect
      session.push(V1::ConnectRequest.new(drain: V1::Drain.new)) if @stopping
      @logger.info("worker #{@worker_id} connected to #{@address} (server #{welcome.server_id})")
    end

    # --- messages from the server --------------------------------------------------------------

    def dispatch(session, message)
      case message.message
      when :assignment then on_assignment(session, message.assignment)
      when :cancellation then cancel_lease(message.cancellation.lease_id, message.cancellation.reason)
      when :keepalive
        session.push(V1::ConnectRequest.new(pong: V1::KeepalivePong.new(nonce: message.keepalive.nonce)))
      when :result_ack then on_result_ack(message.result_ack)
      when :heartbeat_ack then apply_lease_statuses(message.heartbeat_ack.leases)
      when :rejected then on_rejected(message.rejected)
      end
    end

    # The server refused one of our messages (it did not decode, or an outcome broke a rule):
    # sending it again cannot help, so an outcome it names is given up.
    def on_rejected(rejected)
      about = rejected.lease_id.empty? ? "" : " about lease #{rejected.lease_id}"
      @logger.warn("server rejected a message#{about}: #{rejected.reason} #{rejected.message}")
      @lock.synchronize do
        pending = @unacked_outcomes.delete(rejected.lease_id)
        nudge(pending) if pending
      end
    end

    def on_result_ack(ack)
      final = ack.accepted || !RESEND_REASONS.include?(ack.reason)
      @lock.synchronize do
        pending = @unacked_outcomes[ack.lease_id]
        @unacked_outcomes.delete(ack.lease_id) if final
        pending.resend = true if pending && !final
        nudge(pending) if pending
      end
      @logger.warn("result for lease #{ack.lease_id} rejected: #{ack.reason} #{ack.message}") unless ack.accepted || !final
    end

    def on_assignment(session, assignment)
      lease_id = assignment.lease_id
      held = @lock.synchronize do
        @acks_due.delete(lease_id) # acknowledged now, not again when the delay is up
        @leases.key?(lease_id) || @unacked_outcomes.key?(lease_id)
      end
      if held
        session.push(ack_message(lease_id)) # re-offered after a reconnect: already ours
        return
      end
      if @stopping # not acknowledged: the server re-offers it elsewhere after ack_timeout
        @logger.info("draining; not taking lease #{lease_id}")
        return
      end
      # Invalid or unhandled: no ack, the failure implies it.
      hard_deadline = Internal::Outcome.lease_deadline(assignment)
      begin
        ctx = StepContext.from_assignment(assignment)
      rescue StandardError => e
        keep_outcome(lease_id, hard_deadline,
                     *Internal::Outcome.failure(lease_id, PermanentError.new("invalid assignment: #{e.message}"), 0.0))
        return
      end
      handler = @handlers[ctx.step.handler]
      unless handler
        error = RetryableError.new("handler #{ctx.step.handler.inspect} is not registered on worker #{@worker_id}",
                                   error_type: "HandlerNotFound")
        keep_outcome(lease_id, hard_deadline, *Internal::Outcome.failure(lease_id, error, 0.0))
        return
      end
      lease = Lease.new(lease_id: lease_id, assignment: assignment, ctx: ctx, handler: handler, state: :queued, reported: false,
                        cancelled_by_server: false, hard_deadline: hard_deadline)
      delay = effective_ack_delay
      @lock.synchronize do
        @leases[lease_id] = lease
        if delay.positive?
          @acks_due[lease_id] = [monotonic + delay, session, lease]
          @ack_due_changed.signal
        end
      end
      session.push(ack_message(lease_id)) unless delay.positive?
      @jobs << lease
    end

    # ack_delay, kept well below the server's ack_timeout so a lazy ack is never late.
    def effective_ack_delay
      @ack_timeout ? [@ack_delay, @ack_timeout / 4].min : @ack_delay
    end

    # Sends each delayed ack when it is due, if its handler still runs (or waits for a pool
    # thread), on the stream the assignment came on: a new stream needs none, its hello listed
    # the lease in held_leases.
    def ack_loop
      until @lock.synchronize { @stopped }
        due = @lock.synchronize do
          now = monotonic
          ready = @acks_due.select { |_, (at, _, _)| at <= now }
          if ready.empty?
            next_at = @acks_due.values.map(&:first).min
            @ack_due_changed.wait(next_at ? [next_at - now, 0.5].min : 0.5)
          end
          ready.each_key { |id| @acks_due.delete(id) }
          ready.values.select do |_, session, lease|
            @leases[lease.lease_id].equal?(lease) && !lease.reported && @session.equal?(session)
          end
        end
        due.each { |_, session, lease| session.push(ack_message(lease.lease_id)) }
      end
    rescue StandardError => e
      @logger.error("acknowledging failed: #{e.class}: #{e.message}")
      retry
    end

    # A lease with nothing running is left alone (an outcome still waiting for its ack stays:
    # the server answers it DUPLICATE or LEASE_STALE).
    def cancel_lease(lease_id, reason)
      lease = @lock.synchronize { @leases[lease_id] }
      return unless lease

      @logger.info("lease #{lease_id} cancelled by the server (#{reason.to_s.empty? ? 'no reason' : reason})")
      lease.ctx.cancel!
      @lock.synchronize do
        lease.cancelled_by_server = true
        lease.reported = true # the server ended the lease: report nothing
        @acks_due.delete(lease_id)
      end
      interrupt(lease)
    end

    def apply_lease_statuses(statuses)
      statuses.each { |s| cancel_lease(s.lease_id, "lease no longer active") unless s.active }
    end

    # Raises Tasker::Cancelled in the handler's thread, only while its handler runs.
    def interrupt(lease)
      @lock.synchronize do
        lease.thread.raise(Cancelled, "lease #{lease.lease_id} stopped") if lease.state == :running && lease.thread
        release(lease) if lease.state == :queued # never started: the pool skips it
      end
    end

    def ack_message(lease_id)
      V1::ConnectRequest.new(ack: V1::AssignmentAck.new(lease_id: lease_id))
    end

    def heartbeat_message(lease_ids)
      V1::ConnectRequest.new(heartbeat: V1::LeaseHeartbeat.new(lease_ids: lease_ids))
    end

    # --- running handlers ----------------------------------------------------------------------

    def pool_loop
      Thread.handle_interrupt(Cancelled => :never) do
        while (lease = @jobs.pop)
          execute(lease)
        end
      end
    end

    def execute(lease)
      ctx = lease.ctx
      started = monotonic
      @lock.synchronize do
        return unless lease.state == :queued && !lease.reported

        lease.state = :running
        lease.thread = Thread.current
        lease.started = started
        lease.deadline = ctx.step.timeout.positive? ? started + ctx.step.timeout : nil
      end
      outcome = begin
        value = Thread.handle_interrupt(Cancelled => :immediate) { run_handler(lease) }
        value.equal?(HANDED_OFF) ? value : Internal::Outcome.success(lease.lease_id, value, monotonic - started)
      rescue Cancelled
        nil # a timeout, cancellation or shutdown already decided the outcome
      rescue Exception => e # rubocop:disable Lint/RescueException -- any handler error is classified; the worker lives on
        @logger.info("handler for lease #{lease.lease_id} failed: #{e.class}: #{e.message}") unless e.is_a?(HandlerError)
        Internal::Outcome.failure(lease.lease_id, e, monotonic - started)
      end
      first = @lock.synchronize do
        lease.state = :finished
        won = !lease.reported && !outcome.equal?(HANDED_OFF)
        lease.reported = true
        release(lease)
        won
      end
      flush_interrupts
      keep_outcome(lease.lease_id, lease.hard_deadline, *outcome) if first && outcome
    end

    # Whether leases go to another process that reports them by lease id (QueueWorker): the
    # server then keeps them when this stream drops.
    def hands_off_leases?
      false
    end

    # Runs the lease's handler on a pool thread and returns its value (QueueWorker overrides it).
    def run_handler(lease)
      Internal::Outcome.invoke(lease.handler, lease.ctx)
    end

    # An interrupt raised after the handler returned but before the lease was finished stays
    # pending: discard it so it cannot hit the next handler on this thread.
    def flush_interrupts
      return unless Thread.pending_interrupt?

      Thread.handle_interrupt(Cancelled => :immediate) { Thread.pass }
    rescue Cancelled
      nil
    end

    # Reports +exception+ for a running lease unless it already has an outcome, then interrupts
    # its handler (timeout and shutdown).
    def abandon(lease, exception)
      first = @lock.synchronize do
        won = !lease.reported && lease.state == :running
        if won
          lease.reported = true
          @acks_due.delete(lease.lease_id) # the failure implies the ack
        end
        won
      end
      return unless first

      lease.ctx.cancel!
      keep_outcome(lease.lease_id, lease.hard_deadline,
                   *Internal::Outcome.failure(lease.lease_id, exception, monotonic - lease.started))
      interrupt(lease)
    end

    def release(lease)
      @leases.delete(lease.lease_id)
      @acks_due.delete(lease.lease_id) # its outcome (or nothing) follows: no ack needed
      @changed.broadcast
    end

    # --- reporting outcomes --------------------------------------------------------------------

    # Keeps an outcome until the server acknowledges it; a thread of its own delivers it.
    def keep_outcome(lease_id, deadline, kind, outcome)
      pending = PendingOutcome.new(lease_id: lease_id, kind: kind, outcome: outcome, deadline: deadline,
                                   resend: false, nudged: false)
      @lock.synchronize do
        @unacked_outcomes[lease_id] = pending
        @background.reject! { |t| !t.alive? }
        @background << Thread.new { deliver(pending) }.tap { |t| t.name = "tasker-outcome" }
      end
    end

    # Sends one outcome until it is acknowledged, refused for good or past its lease's deadline:
    # on the stream when there is one (never on the stream and by unary at once), else with
    # ReportStepResult; with backoff between attempts the server could not record.
    def deliver(pending)
      backoff = Internal::Backoff.new(*Internal::Outcome::RESEND_BACKOFF)
      message = V1::ConnectRequest.new(pending.kind => pending.outcome)
      loop do
        step = @lock.synchronize do
          return unless @unacked_outcomes[pending.lease_id].equal?(pending)

          if monotonic >= pending.deadline
            @unacked_outcomes.delete(pending.lease_id)
            @logger.warn("outcome of lease #{pending.lease_id} not recorded before the lease's deadline")
            return
          end
          pending.nudged = false
          if pending.resend
            pending.resend = false
            :nap
          elsif @session&.push(message)
            pending.sent_on = @session
            :await_ack
          else
            :unary
          end
        end
        case step
        when :nap then nap(pending, backoff.next_delay)
        when :await_ack then nap(pending, pending.deadline - monotonic) # result_ack, or the stream ended
        when :unary
          if report_unary(pending)
            @lock.synchronize { @unacked_outcomes.delete(pending.lease_id) if @unacked_outcomes[pending.lease_id].equal?(pending) }
            return
          end
          nap(pending, backoff.next_delay) unless @lock.synchronize { @session } # else: welcomed meanwhile
        end
      end
    rescue StandardError => e
      @logger.error("delivering the outcome of lease #{pending.lease_id} failed: #{e.class}: #{e.message}")
      @lock.synchronize { @unacked_outcomes.delete(pending.lease_id) if @unacked_outcomes[pending.lease_id].equal?(pending) }
    end

    # Waits up to +seconds+ (never past the outcome's deadline) for a nudge; then it is not on a
    # stream any more.
    def nap(pending, seconds)
      @lock.synchronize do
        wake_at = monotonic + [seconds, pending.deadline - monotonic].min
        @changed.wait([wake_at - monotonic, 0.5].min) until pending.nudged || monotonic >= wake_at
        pending.sent_on = nil
      end
    end

    # Called with @lock held.
    def nudge(pending)
      pending.nudged = true
      @changed.broadcast
    end

    # One ReportStepResult: false when it is worth trying again (the server or its database
    # unreachable), true when the outcome is done with (recorded or refused).
    def report_unary(pending)
      return false unless @stub

      Internal::Outcome.report_once(@stub, @metadata, @worker_id, pending.kind, pending.outcome, pending.deadline)
    rescue Error => e
      @logger.warn("outcome of lease #{pending.lease_id} not recorded: #{e.inspect}")
      true
    end

    # --- heartbeats, timeouts, silence ---------------------------------------------------------

    def monitor_loop
      last_beat = monotonic
      until @lock.synchronize { @stopped && !@running }
        sleep TICK
        now = monotonic
        check_timeouts(now)
        check_silence
        next if now - last_beat < @heartbeat_interval

        last_beat = now
        heartbeat
      end
    rescue StandardError => e
      @logger.error("monitor failed: #{e.class}: #{e.message}")
      retry
    end

    def check_timeouts(now)
      expired = @lock.synchronize { @leases.values.select { |l| l.state == :running && l.deadline && now >= l.deadline } }
      expired.each do |lease|
        timeout = lease.ctx.step.timeout
        abandon(lease, RetryableError.new("step #{lease.ctx.step.name.inspect} exceeded its timeout of #{format('%g', timeout)}s",
                                          immediate: true, error_type: "StepTimeout"))
      end
    end

    def check_silence
      session = @lock.synchronize { @session } || @pending_session
      return unless session&.open?

      limit = @lock.synchronize { @session } ? @keepalive_timeout : WELCOME_TIMEOUT
      return unless limit && session.silent_for > limit

      @logger.warn("no message from the server for #{session.silent_for.round(1)}s; reconnecting")
      session.abort
    end

    def heartbeat
      lease_ids = @lock.synchronize { @leases.keys }
      return if lease_ids.empty?

      session = @lock.synchronize { @session }
      return if session&.push(heartbeat_message(lease_ids))

      Thread.new do # no stream: keep the leases alive with the unary Heartbeat
        response = @stub.heartbeat(V1::HeartbeatRequest.new(worker_id: @worker_id, lease_ids: lease_ids),
                                   metadata: @metadata, deadline: Time.now + UNARY_TIMEOUT)
        apply_lease_statuses(response.leases)
      rescue GRPC::BadStatus => e
        @logger.debug("unary heartbeat failed: #{Error.from_grpc(e).inspect}")
      end
    end

    # --- shutdown ------------------------------------------------------------------------------

    def perform_shutdown(drain_timeout)
      session = @lock.synchronize do
        @stopping = true
        @session
      end
      session&.push(V1::ConnectRequest.new(drain: V1::Drain.new))
      deadline = monotonic + drain_timeout
      @lock.synchronize do
        @changed.wait([deadline - monotonic, 0.2].min) while !@leases.empty? && monotonic < deadline
      end
      remaining = @lock.synchronize { @leases.values }
      remaining.each do |lease|
        if lease.state == :queued
          @lock.synchronize { lease.reported = true; release(lease) }
          keep_outcome(lease.lease_id, lease.hard_deadline, *Internal::Outcome.failure(lease.lease_id, shutdown_error, 0.0))
        else
          abandon(lease, shutdown_error)
        end
      end
      # Give results on the stream a moment to be acknowledged; whatever is still unacknowledged
      # is re-sent by unary as the session ends.
      flush_deadline = monotonic + FLUSH_TIMEOUT
      @lock.synchronize do
        @changed.wait(0.05) while !@unacked_outcomes.empty? && monotonic < flush_deadline
        @stopped = true
        @changed.broadcast
      end
      @lock.synchronize { @session || @pending_session }&.close
      close_deadline = monotonic + 2
      @lock.synchronize { @changed.wait(0.05) while @running && monotonic < close_deadline }
      (@lock.synchronize { @session || @pending_session })&.abort if @running
    end

    def shutdown_error
      RetryableError.new("the worker shut down before the handler finished", immediate: true,
                                                                             error_type: "WorkerShutdown")
    end

    def finish_run
      @lock.synchronize do
        @stopped = true
        @changed.broadcast
        @ack_due_changed.broadcast
      end
      @acker&.join(1)
      # Cancelled or fatal without shutdown: stop handlers without reporting; their leases expire.
      @lock.synchronize { @leases.values }.each { |l| @lock.synchronize { l.reported = true }; interrupt(l) }
      @pool&.each { @jobs << nil }
      @pool&.each { |t| t.join(1) }
      threads = @lock.synchronize { @background.dup }
      deadline = monotonic + FLUSH_TIMEOUT
      threads.each { |t| t.join([deadline - monotonic, 0].max) }
      @lock.synchronize do
        unless @unacked_outcomes.empty?
          @logger.warn("stopping with #{@unacked_outcomes.size} outcome(s) not acknowledged by the server: " \
                       "leases #{@unacked_outcomes.keys.join(', ')}")
        end
        @unacked_outcomes.clear # ends the delivery threads
        @changed.broadcast
      end
      threads.each { |t| t.kill unless t.join(0.5) } # one may be inside a ReportStepResult call
      @lock.synchronize do
        @running = false
        @changed.broadcast
      end
      @monitor&.join(1)
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
