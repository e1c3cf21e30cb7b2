# frozen_string_literal: true

require "test_helper"
require "rails"
require "active_job/railtie"
require "tasker/rails"

# The queue-system mode: the QueueWorker hands each leased step to Tasker::StepJob (ActiveJob,
# inline adapter here), which runs the handler and reports with the lease id through the unary
# WorkerService.Heartbeat/ReportStepResult.
class QueueWorkerTest < Minitest::Test
  def test_leased_steps_run_in_active_job_and_report_with_the_lease_id
    ActiveJob::Base.queue_adapter = :inline
    ActiveJob::Base.logger = Logger.new(nil)
    Tasker::Rails.config.address = TestServer.address
    jobs = Queue.new
    Tasker::Rails.register("queued_first") { |ctx| jobs << ctx.lease_id; { "n" => ctx.task.context["n"] + 1 } }
    Tasker::Rails.register("queued_second") do |ctx|
      raise Tasker::RetryableError.new("once more", retry_after: 0) if ctx.step.attempt == 1

      { "n" => ctx.sequence.get("a")["n"] * 10 }
    end
    client = Tasker::Client.new(TestServer.address)
    ns, name = TestServer.template(client, [%w[a queued_first],
                                            ["b", "queued_second", "depends_on_steps: [a], retry: {max_attempts: 3, backoff_base_seconds: 0.1}"]])
    worker = Tasker::QueueWorker.new(TestServer.address, namespaces: [ns], capacity: 2,
                                                         enqueue: ->(payload) { Tasker::StepJob.perform_later(payload) })
    worker.register("queued_first", ->(_) {}).register("queued_second", ->(_) {})
    worker.start
    assert worker.wait_connected(timeout: 10)
    task = client.create_task(ns, name, { "n" => 1 })
    done = client.wait_for_task(task.task_id, timeout: 30)
    assert_equal ["complete", { "b" => { "n" => 20 } }], [done.state, done.result]
    assert_equal 2, done.step("b").attempts
    refute_empty jobs.pop.to_s
  ensure
    worker&.shutdown(drain_timeout: 1)
  end

  # The host process holding the stream stops (a deploy) while its job waits in the queue: the
  # job still runs later and its result counts, as attempt 1 (the hello says hands_off_leases).
  def test_a_queued_job_outlives_the_queue_workers_stream
    payloads = Queue.new
    client = Tasker::Client.new(TestServer.address)
    ns, name = TestServer.template(client, [%w[only queued_late]])
    worker = Tasker::QueueWorker.new(TestServer.address, namespaces: [ns], capacity: 1,
                                                         enqueue: ->(payload) { payloads << payload })
    worker.register("queued_late", ->(_) {})
    worker.start
    assert worker.wait_connected(timeout: 10)
    task = client.create_task(ns, name, { "n" => 4 })
    payload = Timeout.timeout(10) { payloads.pop }
    wait_until { client.get_task(task.task_id).step("only").state == "in_progress" }
    worker.shutdown(drain_timeout: 1)
    wait_until { client.list_workers(namespace: ns).none? { |w| w.worker_id == worker.worker_id } }

    runner = Tasker::LeaseRunner.new(TestServer.address,
                                     handlers: { "queued_late" => ->(ctx) { { "n" => ctx.task.context["n"] * 2 } } })
    assert_equal :reported, runner.run(payload)
    done = client.wait_for_task(task.task_id, timeout: 10)
    assert_equal ["complete", { "n" => 8 }, 1], [done.state, done.step("only").result, done.step("only").attempts]
  ensure
    worker&.shutdown(drain_timeout: 1)
  end

  private

  def wait_until(timeout: 10)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    until yield
      raise "condition not met within #{timeout}s" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.05
    end
  end
end
