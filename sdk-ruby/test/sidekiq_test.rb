# frozen_string_literal: true

require "test_helper"
require "fileutils"
require "timeout"
require "uri"
require "rails"
require "active_job/railtie"
require "tasker/rails"

# The seed's queue-system pattern for real: the QueueWorker enqueues each leased step as a
# Tasker::StepJob through ActiveJob's Sidekiq adapter into a real redis-server; a separate
# `sidekiq` process runs the handler and reports with the lease id over the unary RPCs.
# redis-server and sidekiq come from Debian (redis-server, ruby-sidekiq); without them the test
# skips, unless TASKER_REQUIRE_SIDEKIQ is set (CI), where that is a failure.
class SidekiqTest < Minitest::Test
  BOOT = File.expand_path("support/sidekiq_boot.rb", __dir__)

  def setup
    missing = %w[redis-server sidekiq].reject { |bin| system("command -v #{bin} >/dev/null 2>&1") }
    return if missing.empty?

    message = "not installed: #{missing.join(', ')} (apt-get install redis-server ruby-sidekiq)"
    flunk(message) if ENV["TASKER_REQUIRE_SIDEKIQ"]
    skip(message)
  end

  def test_leased_steps_run_in_a_sidekiq_process_and_report_with_the_lease_id
    dir = Dir.mktmpdir("tasker-sidekiq-")
    redis_url = "redis://127.0.0.1:#{TestServer.free_port}/0"
    redis = spawn_logged(dir, "redis", {}, "redis-server", "--bind", "127.0.0.1",
                         "--port", URI(redis_url).port.to_s, "--save", "", "--appendonly", "no")
    wait_for_redis(redis_url, dir)
    sidekiq = spawn_logged(dir, "sidekiq", { "REDIS_URL" => redis_url, "TASKER_ADDRESS" => TestServer.address },
                           "sidekiq", "-r", BOOT, "-c", "2", "-q", "default")

    ENV["REDIS_URL"] = redis_url # the test process enqueues through the same Redis
    require "sidekiq" # here, not at the top: the test skips where Sidekiq is not installed
    Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)
    previous_adapter = ActiveJob::Base.queue_adapter
    ActiveJob::Base.queue_adapter = :sidekiq
    ActiveJob::Base.logger = Logger.new(nil)
    client = Tasker::Client.new(TestServer.address)
    ns, name = TestServer.template(client, [%w[first sidekiq_double],
                                            ["second", "sidekiq_flaky",
                                             "depends_on_steps: [first], retry: {max_attempts: 3, backoff_base_seconds: 0.1}"]])
    worker = Tasker::QueueWorker.new(TestServer.address, namespaces: [ns], capacity: 2,
                                                         enqueue: ->(payload) { Tasker::StepJob.perform_later(payload) })
    worker.register("sidekiq_double", ->(_) {}).register("sidekiq_flaky", ->(_) {})
    worker.start
    assert worker.wait_connected(timeout: 10)

    task = client.create_task(ns, name, { "n" => 20 })
    done = client.wait_for_task(task.task_id, timeout: 60)

    assert_equal "complete", done.state, logs(dir)
    first = done.step("first").result
    second = done.step("second").result
    assert_equal [40, 41], [first["n"], second["n"]]
    # The handlers ran in the sidekiq process, not here where the QueueWorker holds the stream.
    assert_equal [sidekiq, sidekiq], [first["pid"], second["pid"]]
    refute_equal Process.pid, first["pid"]
    assert_equal 2, done.step("second").attempts
  ensure
    worker&.shutdown(drain_timeout: 1)
    ActiveJob::Base.queue_adapter = previous_adapter if previous_adapter
    ENV.delete("REDIS_URL")
    [sidekiq, redis].compact.each { |pid| stop(pid) }
    FileUtils.rm_rf(dir) if dir
  end

  private

  def spawn_logged(dir, name, env, *cmd)
    Process.spawn(env, *cmd, in: File::NULL, %i[out err] => [File.join(dir, "#{name}.log"), "w"])
  end

  def wait_for_redis(url, dir)
    uri = URI(url)
    deadline = Time.now + 15
    begin
      TCPSocket.new(uri.host, uri.port).close
    rescue SystemCallError
      raise "redis-server did not start:\n#{logs(dir)}" if Time.now > deadline

      sleep 0.1
      retry
    end
  end

  def stop(pid)
    Process.kill("TERM", pid)
    Timeout.timeout(15) { Process.wait(pid) }
  rescue Errno::ESRCH, Errno::ECHILD
    nil
  rescue Timeout::Error
    Process.kill("KILL", pid)
    Process.wait(pid)
  end

  def logs(dir)
    Dir[File.join(dir, "*.log")].map { |f| "--- #{File.basename(f)}\n#{File.read(f)}" }.join("\n")
  end
end
