# frozen_string_literal: true

require "test_helper"

# The worker and client against a real server process (see TestServer).
class WorkerTest < Minitest::Test
  def setup
    @client = Tasker::Client.new(TestServer.address)
    @workers = []
  end

  def teardown
    @workers.each { |w| w.shutdown(drain_timeout: 1) }
  end

  def worker(namespace, capacity: 4)
    w = Tasker::Worker.new(TestServer.address, namespaces: [namespace], capacity: capacity)
    yield w
    w.start
    assert w.wait_connected(timeout: 10), "worker not welcomed"
    @workers << w
    w
  end

  def test_bad_handlers_get_classified_failures_and_the_worker_keeps_running
    cases = {
      "hang" => ["timeout_seconds: 1, retry: {max_attempts: 1}", %w[transient StepTimeout]],
      "not_implemented" => [nil, %w[permanent NotImplementedError]],
      "non_json" => [nil, %w[permanent InvalidResult]],
      "boom" => ["retry: {max_attempts: 1}", %w[delayed RuntimeError]]
    }
    ns = "rb#{rand(1 << 30)}"
    cases.each { |handler, (extra, _)| TestServer.template(@client, [["s", handler, extra]], namespace: ns, name: handler) }
    TestServer.template(@client, [%w[s ok]], namespace: ns, name: "ok")
    interrupted = Queue.new
    worker(ns) do |w|
      w.register("hang") do |ctx|
        sleep 30
      rescue Tasker::Cancelled
        interrupted << ctx.cancelled?
        raise
      end
      w.register("not_implemented") { |_ctx| raise NotImplementedError, "later" }
      w.register("non_json") { |_ctx| Object.new }
      w.register("boom") { |_ctx| raise "boom" }
      w.register("ok") { |ctx| { "traceparent" => ctx.traceparent, "attempt" => ctx.step.attempt } }
    end
    tasks = cases.keys.to_h { |handler| [handler, @client.create_task(ns, handler, {})] }
    tasks.each do |handler, task|
      done = @client.wait_for_task(task.task_id, timeout: 30)
      error = done.step("s").last_error
      assert_equal ["failed", *cases[handler][1]], [done.state, error.error_class, error.error_type], handler
    end
    assert_equal true, interrupted.pop(true), "the hanging handler is interrupted with ctx.cancelled? set"

    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ok = @client.wait_for_task(@client.create_task(ns, "ok", {}, traceparent: parent).task_id, timeout: 30)
    assert_equal ["complete", 1, parent], [ok.state, ok.step("s").result["attempt"], ok.step("s").result["traceparent"]]
  end

  def test_cancel_interrupts_the_handler_and_watch_task_streams_events
    ns, name = TestServer.template(@client, [%w[a wait]])
    started = Queue.new
    stopped = Queue.new
    worker(ns) do |w|
      w.register("wait") do |ctx|
        started << true
        sleep 30
        {}
      rescue Tasker::Cancelled
        stopped << ctx.cancelled?
        raise
      end
    end
    task = @client.create_task(ns, name, {}, correlation_id: "corr-1")
    started.pop
    cancelled = @client.cancel_task(task.task_id, reason: "test")
    assert_equal "cancelled", cancelled.state
    Timeout.timeout(10) { assert_equal true, stopped.pop }
    events = @client.watch_task(task.task_id).to_a
    assert_equal "task.cancelled", events.last.event_name
    assert_equal events.map(&:sequence).sort, events.map(&:sequence)
    later = @client.watch_task(task.task_id, after_sequence: events[-2].sequence).to_a
    assert_equal [events.last.sequence], later.map(&:sequence)
    listed = @client.list_tasks(namespace: ns, page_size: 1).to_a
    assert_equal [task.task_id], listed.map(&:task_id)
  end

  def test_shutdown_drains_in_flight_handlers
    ns, name = TestServer.template(@client, [%w[a nap]])
    started = Queue.new
    w = worker(ns) do |wk|
      wk.register("nap") do |_ctx|
        started << true
        sleep 1
        { "slept" => true }
      end
    end
    task = @client.create_task(ns, name, {})
    started.pop
    w.shutdown(drain_timeout: 10)
    done = @client.wait_for_task(task.task_id, timeout: 10)
    assert_equal ["complete", { "slept" => true }], [done.state, done.step("a").result]
    assert_raises(Tasker::Error) { w.run }
  end
end
