# frozen_string_literal: true

require "minitest/autorun"
require "socket"
require "tmpdir"
require "tasker"

# One real `tasker serve` per test process (SQLite in a temp dir, fast timers), started on
# first use and stopped at exit. TASKER_BIN overrides the executable (default ../.venv/bin/tasker).
module TestServer
  FAST = %w[--heartbeat-interval-seconds 0.5 --keepalive-interval-seconds 0.5 --keepalive-timeout-seconds 3
            --ack-timeout-seconds 2 --lease-grace-seconds 1 --sweep-interval-seconds 0.2 --shutdown-grace-seconds 1
            --log-level warning].freeze

  module_function

  def bin
    ENV.fetch("TASKER_BIN") { File.expand_path("../../.venv/bin/tasker", __dir__) }
  end

  def free_port
    server = TCPServer.new("127.0.0.1", 0)
    server.addr[1]
  ensure
    server&.close
  end

  def address
    @address ||= start
  end

  def start
    raise "server executable not found: #{bin} (run make install)" unless File.executable?(bin)

    dir = Dir.mktmpdir("tasker-ruby-sdk-")
    address = "127.0.0.1:#{free_port}"
    log = File.join(dir, "server.log")
    pid = Process.spawn(bin, "serve", "--listen", address, "--database-url", "sqlite+aiosqlite:///#{dir}/t.db",
                        *FAST, in: File::NULL, %i[out err] => [log, "w"])
    at_exit do
      Process.kill("TERM", pid)
      Process.wait(pid)
    rescue Errno::ESRCH, Errno::ECHILD
      nil
    end
    client = Tasker::Client.new(address, timeout: 2)
    deadline = Time.now + 30
    begin
      client.get_task("1")
    rescue Tasker::NotFoundError
      return address
    rescue Tasker::Error
      raise "server not reachable at #{address}:\n#{File.read(log)}" if Time.now > deadline

      sleep 0.2
      retry
    end
    address
  end

  # Registers a template whose steps are given as [name, handler, extra-yaml] and returns
  # [namespace, name].
  def template(client, steps, namespace: "rb#{rand(1 << 30)}", name: "t")
    lines = steps.map do |name, handler, extra|
      "  - {name: #{name}, handler_class: #{handler}#{extra ? ", #{extra}" : ''}}"
    end
    client.register_template(<<~YAML)
      name: #{name}
      namespace: #{namespace}
      version: 1.0.0
      step_templates:
      #{lines.join("\n")}
    YAML
    [namespace, name]
  end
end
