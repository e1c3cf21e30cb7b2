# frozen_string_literal: true

require "test_helper"

# Unacknowledged outcomes: kept until the server acknowledges them or the lease's hard deadline
# passes, announced in every hello (held_leases). The stream is an in-memory session that
# records what the worker writes; unary reports go to a port where nothing listens (a real
# refusal).
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
  end

  def teardown
    @worker.instance_variable_get(:@lock).synchronize do
      @worker.instance_variable_get(:@unacked_outcomes).clear
      @worker.instance_variable_get(:@changed).broadcast
    end
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

  def test_without_a_stream_report_step_result_is_retried_until_the_leases_deadline
    @worker.instance_variable_set(:@session, nil)
    @worker.instance_variable_set(:@stub, Tasker::Internal::Channel.stub(V1::WorkerService::Stub, @worker.address, nil))
    dispatch(assignment: assignment("L", "ok", deadline_in: 3))
    sleep 1.8
    assert_equal ["L"], @worker.held_leases
    eventually(3) { @worker.held_leases.empty? }
  end
end
