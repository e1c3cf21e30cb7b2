# frozen_string_literal: true

require "test_helper"

# The Ruby client and worker across a server crash: each test runs its own `tasker serve`
# (SQLite file in a temp dir, fast timers), SIGKILLs it and starts it again on the same port and
# database file.
#
# - Client#watch_task, consumed in a thread while the server dies mid-task, resumes by itself
#   and yields every event exactly once, in order, ending with task.completed (checked against a
#   full replay of the task's events after it finished).
# - A Worker whose server was killed reconnects by itself and processes the next step.
class WatchResumeTest < Minitest::Test
  # A `tasker serve` child process that can be SIGKILLed and restarted on the same port and file.
  class CrashableServer
    attr_reader :address, :log

    def initialize
      @dir = Dir.mktmpdir("tasker-ruby-resume-")
      @address = "127.0.0.1:#{TestServer.free_port}"
      @db = "sqlite+aiosqlite:///#{File.join(@dir, 't.db')}"
      @log = File.join(@dir, "server.log")
      @pid = nil
    end

    def start
      raise "server executable not found: #{TestServer.bin} (run make install)" unless File.executable?(TestServer.bin)

      @pid = Process.spawn(TestServer.bin, "serve", "--listen", @address, "--database-url", @db, *TestServer::FAST,
                           in: File::NULL, %i[out err] => [@log, "a"])
      probe = Tasker::Client.new(@address, timeout: 1)
      deadline = Time.now + 30
      begin
        probe.get_task("1")
      rescue Tasker::NotFoundError
        nil
      rescue Tasker::Error
        raise "server exited early:\n#{File.read(@log)}" if Process.waitpid(@pid, Process::WNOHANG)
        raise "server not reachable at #{@address}:\n#{File.read(@log)}" if Time.now > deadline

        sleep 0.1
        retry
      ensure
        probe.close
      end
      self
    end

    def kill
      return unless @pid

      Process.kill("KILL", @pid)
      Process.wait(@pid)
    rescue Errno::ESRCH, Errno::ECHILD
      nil
    ensure
      @pid = nil
    end

    def stop
      return unless @pid

      Process.kill("TERM", @pid)
      Process.wait(@pid)
    rescue Errno::ESRCH, Errno::ECHILD
      nil
    ensure
      @pid = nil
      FileUtils.remove_entry(@dir, true)
    end
  end

  def setup
    @server = CrashableServer.new.start
    @client = Tasker::Client.new(@server.address, timeout: 10)
    @workers = []
  end

  def teardown
    @workers.each { |w| w.shutdown(drain_timeout: 1) }
    @client.close
    @server.stop
  end

  def start_worker(namespace)
    w = Tasker::Worker.new(@server.address, namespaces: [namespace], capacity: 2)
    yield w
    w.start
    assert w.wait_connected(timeout: 10), "worker not welcomed"
    @workers << w
    w
  end

  def wait_until(timeout:, message:)
    deadline = Time.now + timeout
    until yield
      flunk "#{message} (after #{timeout} s)\n#{File.read(@server.log)}" if Time.now > deadline
      sleep 0.05
    end
  end

  def test_watch_task_resumes_after_a_server_crash_without_gaps_or_duplicates
    retry_policy = "retry: {max_attempts: 5, backoff_base_seconds: 0.1}"
    ns, name = TestServer.template(@client, [["a", "nap", retry_policy],
                                             ["b", "nap", "#{retry_policy}, depends_on_steps: [a]"]])
    start_worker(ns) do |w|
      w.register("nap") do |ctx|
        sleep 2
        { "step" => ctx.step.name }
      end
    end
    task = @client.create_task(ns, name, {})

    received = []
    watcher = Thread.new do
      @client.watch_task(task.task_id).each do |event|
        received << event
      end
      :finished
    rescue Exception => e # rubocop:disable Lint/RescueException -- reported by the assertion below
      e
    end
    watcher.report_on_exception = false

    wait_until(timeout: 20, message: "step a never started") do
      @client.get_task(task.task_id).step("a").state == "in_progress"
    end
    wait_until(timeout: 10, message: "the watcher received nothing") do
      received.any? { |e| e.event_name == "step.started" }
    end
    before_crash = received.size

    @server.kill
    sleep 0.5 # the watcher's stream is broken now; it must retry on its own
    @server.start

    assert watcher.join(60), "watch_task did not finish within 60 s of the restart"
    outcome = watcher.value
    assert_equal :finished, outcome, "watch_task raised instead of resuming: #{outcome.inspect}"

    done = @client.get_task(task.task_id)
    assert_equal "complete", done.state
    assert_operator received.size, :>, before_crash, "no event arrived after the restart"
    sequences = received.map(&:sequence)
    assert_equal sequences.uniq, sequences, "an event was yielded twice"
    assert_equal sequences.sort, sequences, "events out of order"
    assert_equal "task.completed", received.last.event_name

    replay = @client.watch_task(task.task_id).to_a
    assert_equal replay.map { |e| [e.sequence, e.event_name, e.step_name] },
                 received.map { |e| [e.sequence, e.event_name, e.step_name] },
                 "the resumed watch differs from a full replay (gap or duplicate)"
  end

  def test_worker_reconnects_after_a_server_crash_and_processes_the_next_step
    ns, name = TestServer.template(@client, [%w[s ok]])
    worker = start_worker(ns) { |w| w.register("ok") { |ctx| { "n" => ctx.task.context["n"] } } }
    first = @client.wait_for_task(@client.create_task(ns, name, { "n" => 1 }).task_id, timeout: 20)
    assert_equal "complete", first.state
    first_worker = first.step("s").worker_id

    @server.kill
    wait_until(timeout: 10, message: "the worker never noticed the crash") { !worker.connected? }
    @server.start

    wait_until(timeout: 20, message: "the worker did not reconnect") { worker.connected? }
    second = @client.wait_for_task(@client.create_task(ns, name, { "n" => 2 }).task_id, timeout: 30)
    assert_equal ["complete", { "n" => 2 }], [second.state, second.step("s").result]
    assert_equal first_worker, second.step("s").worker_id, "the step ran on another worker"
  end
end
