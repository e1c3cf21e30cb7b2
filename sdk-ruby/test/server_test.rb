# frozen_string_literal: true

# End-to-end smoke test: starts the real Tasker server as a child process and
# calls it through the generated stubs.
#
# The server binary defaults to ../.venv/bin/tasker (created by `make install`);
# set TASKER_BIN to use another executable with the same CLI.
require "minitest/autorun"
require "socket"
require "tmpdir"
require "tasker"

class ServerTest < Minitest::Test
  SERVICES = %w[TaskService TemplateService WorkerService AdminService EventService].freeze
  STARTUP_TIMEOUT = 20
  STOP_TIMEOUT = 15

  def tasker_bin
    ENV.fetch("TASKER_BIN") { File.expand_path("../../.venv/bin/tasker", __dir__) }
  end

  def free_port
    server = TCPServer.new("127.0.0.1", 0)
    server.addr[1]
  ensure
    server&.close
  end

  def test_generated_stubs_exist_for_all_five_services
    SERVICES.each do |name|
      mod = Tasker::V1.const_get(name)
      assert mod.const_defined?(:Stub), "Tasker::V1::#{name}::Stub missing"
      assert mod.const_defined?(:Service), "Tasker::V1::#{name}::Service missing"
      assert_equal "tasker.v1.#{name}", mod::Service.service_name
      refute_empty mod::Service.rpc_descs
    end
    assert Tasker::V1::TaskService::Stub.method_defined?(:get_task)
  end

  def test_get_unknown_task_is_not_found_and_server_stops_on_sigterm
    assert File.executable?(tasker_bin), "server executable not found: #{tasker_bin} (run make install)"
    Dir.mktmpdir("tasker-ruby-test-") do |dir|
      address = "127.0.0.1:#{free_port}"
      log = File.join(dir, "server.log")
      pid = Process.spawn(tasker_bin, "serve", "--listen", address,
                          "--database-url", "sqlite+aiosqlite:///#{File.join(dir, 't.db')}",
                          in: File::NULL, %i[out err] => [log, "w"])
      begin
        stub = Tasker::V1::TaskService::Stub.new(address, :this_channel_is_insecure)
        request = Tasker::V1::GetTaskRequest.new(task_id: "999999")
        started = Time.now
        error = nil
        loop do
          flunk "server exited early:\n#{File.read(log)}" if Process.waitpid(pid, Process::WNOHANG)
          begin
            response = stub.get_task(request, deadline: Time.now + 2)
            flunk "expected NOT_FOUND, got a response: #{response.inspect}"
          rescue GRPC::Unavailable, GRPC::DeadlineExceeded => e
            if Time.now - started > STARTUP_TIMEOUT
              flunk "server not reachable at #{address} after #{STARTUP_TIMEOUT} s (#{e.message}):\n#{File.read(log)}"
            end
            sleep 0.2
          rescue GRPC::BadStatus => e
            error = e
            break
          end
        end
        assert_equal GRPC::Core::StatusCodes::NOT_FOUND, error.code,
                     "expected NOT_FOUND (5), got #{error.code}: #{error.details}"

        Process.kill("TERM", pid)
        deadline = Time.now + STOP_TIMEOUT
        status = nil
        until (status = Process.waitpid(pid, Process::WNOHANG)) || Time.now > deadline
          sleep 0.1
        end
        assert status, "server did not exit within #{STOP_TIMEOUT} s of SIGTERM:\n#{File.read(log)}"
        pid = nil
      ensure
        if pid
          begin
            Process.kill("KILL", pid)
            Process.wait(pid)
          rescue Errno::ESRCH, Errno::ECHILD
            nil
          end
        end
      end
    end
  end
end
