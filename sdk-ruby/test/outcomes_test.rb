# frozen_string_literal: true

require "test_helper"

# Unacknowledged outcomes: kept until the server acknowledges them or the lease's hard deadline
# passes, announced in every hello (held_leases). The stream is an in-memory session that
# records what the worker writes; unary reports go to a port where nothing listens (a real
# refusal). Also the lazy acknowledgement: an assignment is acknowledged only if its handler
# still runs ack_delay after it arrived (the result implies the ack).
class OutcomesTest < Minitest::Test
  V1 = Tasker::V1

  class FakeSession
    attr_reader :sent

    def initialize
      @sent = Queue.new
      @all = []
    end

    def push(message)
      @all << message
      true
    end

    def open?
      true
    end

    def of_kind(kind)
      @all.dup.select { |m| m.message == kind }.map { |m| m.public_send(kind) }
    end
  end

  def setup
    @worker = Tasker::Worker.new("127.0.0.1:#{TestServer.free_port}", namespaces: ["ns"], capacity: 2,
                                                                     logger: Logger.new(File::NULL))
    @release = Queue.new
    release = @release
    @worker.register("ok") { |_ctx| { "ok" => true } }
    @worker.register("declined") { |_ctx| raise Tasker::PermanentError, "card declined" }
    @worker.register("hold") { |_ctx| release.pop && {} }
    @session = FakeSession.new
    @worker.instance_variable_set(:@session, @session)
    @jobs = @worker.instance_variable_get(:@jobs)
    @pool = Array.new(2) { Thread.new { @worker.send(:pool_loop) } }
    @acker = Thread.new { @worker.send(:ack_loop) }
  end

  def teardown
    @worker.instance_variable_get(:@lock).synchronize do
      @worker.instance_variable_get(:@unacked_outcomes).clear
      @worker.instance_variable_get(:@changed).broadcast
      @worker.instance_variable_set(:@stopped, true)
      @worker.instance_variable_get(:@ack_due_changed).broadcast
    end
    @acker.join(2)
    @pool.each { @jobs << nil }
    @pool.each { |t| t.join(2) }
    @worker.instance_variable_get(:@background).each { |t| t.kill unless t.join(1) }
  end

  def assignment(lease_id, handler, deadline_in: nil)
    a = V1::Assignment.new(
      lease_id: lease_id,
      context: V1::ExecutionContext.new(
        task: V1::TaskInfo.new(task_id: "1", namespace: "ns", context: Tasker::Internal::Convert.hash_to_struct({ "n" => 2 })),
        step: V1::StepInfo.new(name: "s", handler: handler, attempt: 1, max_attempts: 3,
                               timeout: Tasker::Internal::Convert.seconds_to_duration(5)),
        sequence: V1::SequenceInfo.new
      )
    )
    a.lease_deadline = Google::Protobuf::Timestamp.new(seconds: (Time.now + deadline_in).to_i) if deadline_in
    a
  end

  def dispatch(**message)
    @worker.send(:dispatch, @session, V1::ConnectResponse.new(**message))
  end

  def ack(lease_id, accepted, reason = "")
    dispatch(result_ack: V1::ResultAck.new(lease_id: lease_id, accepted: accepted, reason: reason))
  end

  def eventually(timeout = 5)
    deadline = Time.now + timeout
    sleep 0.01 until yield || Time.now > deadline
    assert yield, "condition not met within #{timeout}s"
  end

  def test_held_leases_name_running_handlers_and_unacknowledged_outcomes
    dispatch(assignment: assignment("DONE", "ok"))
    dispatch(assignment: assignment("RUNNING", "hold"))
    eventually { @session.of_kind(:result).size == 1 }
    assert_equal %w[DONE RUNNING], @worker.held_leases.sort
    ack("DONE", true)
    assert_equal ["RUNNING"], @worker.held_leases
    @release << true
    eventually { @session.of_kind(:result).size == 2 }
    assert_equal ["RUNNING"], @worker.held_leases # its outcome now waits for its ack
  end

  def test_unavailable_ack_keeps_the_outcome_and_sends_it_again_after_a_backoff
    dispatch(assignment: assignment("L", "ok"))
    eventually { @session.of_kind(:result).size == 1 }
    ack("L", false, "UNAVAILABLE")
    assert_equal ["L"], @worker.held_leases
    sleep 0.05
    assert_equal 1, @session.of_kind(:result).size, "not at once: after a backoff"
    eventually { @session.of_kind(:result).size == 2 }
    ack("L", true, "DUPLICATE")
    assert_empty @worker.held_leases
    sleep 0.3
    assert_equal 2, @session.of_kind(:result).size
  end

  def test_a_cancellation_keeps_a_pending_outcome_and_lease_stale_drops_it
    dispatch(assignment: assignment("L", "declined"))
    eventually { @session.of_kind(:failure).size == 1 }
    dispatch(cancellation: V1::Cancellation.new(lease_id: "L", reason: "lease_expired"))
    dispatch(cancellation: V1::Cancellation.new(lease_id: "NEVER_HELD", reason: "x"))
    assert_equal ["L"], @worker.held_leases
    ack("L", false, "LEASE_STALE")
    assert_empty @worker.held_leases
    sleep 0.3
    assert_equal 1, @session.of_kind(:failure).size
  end

  def test_a_rejected_outcome_is_given_up_and_other_rejections_only_logged
    dispatch(assignment: assignment("L", "declined"))
    eventually { @session.of_kind(:failure).size == 1 }
    ["", "OTHER", "L"].each do |lease_id|
      dispatch(rejected: V1::MessageRejected.new(code: "INVALID_ARGUMENT", reason: "INVALID_ARGUMENT",
                                                 lease_id: lease_id))
    end
    assert_empty @worker.held_leases
    sleep 0.3
    assert_equal 1, @session.of_kind(:failure).size
  end

  def test_without_a_stream_report_step_result_is_retried_until_the_leases_deadline
    @worker.instance_variable_set(:@session, nil)
    @worker.instance_variable_set(:@stub, Tasker::Internal::Channel.stub(V1::WorkerService::Stub, @worker.address, nil))
    dispatch(assignment: assignment("L", "ok", deadline_in: 3))
    sleep 1.8
    assert_equal ["L"], @worker.held_leases
    eventually(3) { @worker.held_leases.empty? }
  end

  # --- lazy acknowledgement ------------------------------------------------------------------

  def kinds(session = @session)
    session.instance_variable_get(:@all).dup.map(&:message)
  end

  def ack_delay!(seconds)
    @worker.instance_variable_set(:@ack_delay, seconds)
  end

  def test_a_fast_handlers_assignment_is_never_acknowledged_its_result_implies_the_ack
    ack_delay!(0.2)
    dispatch(assignment: assignment("L1", "ok"))
    dispatch(assignment: assignment("L2", "declined"))
    eventually { kinds.size == 2 }
    sleep 0.3 # past the delay: the pending acks were dropped with the outcomes
    assert_equal %i[failure result], kinds.sort
  end

  def test_a_slow_handlers_assignment_is_acknowledged_once_after_ack_delay
    ack_delay!(0.05)
    arrived = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    dispatch(assignment: assignment("SLOW", "hold"))
    assert_empty kinds
    assert_equal ["SLOW"], @worker.held_leases # held (and announced) before any ack
    eventually { @session.of_kind(:ack).size == 1 }
    assert_operator Process.clock_gettime(Process::CLOCK_MONOTONIC) - arrived, :>=, 0.05
    sleep 0.2
    assert_equal ["SLOW"], @session.of_kind(:ack).map(&:lease_id)
    @release << true
    eventually { @session.of_kind(:result).size == 1 }
    assert_equal %i[ack result], kinds
  end

  def test_a_lease_queued_for_a_pool_thread_is_acknowledged_after_the_delay_too
    ack_delay!(0.05)
    %w[A B QUEUED].each { |id| dispatch(assignment: assignment(id, "hold")) } # two pool threads
    eventually { @session.of_kind(:ack).size == 3 }
    assert_equal %w[A B QUEUED], @session.of_kind(:ack).map(&:lease_id).sort
    3.times { @release << true }
    eventually { @session.of_kind(:result).size == 3 }
  end

  def test_ack_delay_zero_acknowledges_at_once_and_a_reoffered_lease_at_once_once
    ack_delay!(0)
    dispatch(assignment: assignment("NOW", "hold"))
    assert_equal %i[ack], kinds
    ack_delay!(5)
    2.times { dispatch(assignment: assignment("AGAIN", "hold")) } # the second: e.g. after a reconnect
    sleep 0.1
    assert_equal %w[NOW AGAIN], @session.of_kind(:ack).map(&:lease_id)
    assert_empty @worker.instance_variable_get(:@acks_due)
    2.times { @release << true }
    eventually { @session.of_kind(:result).size == 2 }
  end

  def test_ack_delay_is_capped_by_the_servers_ack_timeout_and_validated
    ack_delay!(5)
    assert_in_delta 5.0, @worker.send(:effective_ack_delay)
    @worker.send(:on_welcome, V1::Welcome.new(worker_id: "w", ack_timeout: Google::Protobuf::Duration.new(seconds: 2)),
                 @session)
    assert_in_delta 0.5, @worker.send(:effective_ack_delay)
    [-0.01, Float::INFINITY, Float::NAN, "0.02", nil].each do |bad|
      assert_raises(ArgumentError) { Tasker::Worker.new("127.0.0.1:9", namespaces: ["ns"], ack_delay: bad) }
    end
  end

  def test_an_assignment_for_an_unregistered_handler_fails_without_an_ack
    ack_delay!(0)
    dispatch(assignment: assignment("NONE", "missing"))
    eventually { kinds.size == 1 }
    sleep 0.05
    assert_equal %i[failure], kinds
    assert_equal "HandlerNotFound", @session.of_kind(:failure).first.error.error_type
  end

  def test_a_queue_worker_acknowledges_at_once_as_it_hands_the_lease_to_a_job
    queue = Tasker::QueueWorker.new("127.0.0.1:9", namespaces: ["ns"], enqueue: ->(_payload) {})
    queue.register("ok") { |_ctx| {} }
    assert_in_delta 0.0, queue.ack_delay
    session = FakeSession.new
    queue.instance_variable_set(:@session, session)
    queue.send(:dispatch, session, V1::ConnectResponse.new(assignment: assignment("JOB", "ok")))
    assert_equal %i[ack], kinds(session)
    assert_raises(ArgumentError) do
      Tasker::QueueWorker.new("127.0.0.1:9", namespaces: ["ns"], enqueue: ->(_payload) {}, ack_delay: 0.02)
    end
  end
end
