# frozen_string_literal: true

# The Ruby SDK's conformance worker: every behaviour of tests/conformance/README.md.
#
#   ruby -Isdk-ruby/lib tests/conformance/ruby_worker.rb --address 127.0.0.1:50051 \
#     --namespace conformance [--capacity 10] [--worker-id ID]
#
# Prints "READY <worker_id>" once the server has welcomed it; on SIGTERM (or SIGINT) shuts down
# through Worker#shutdown and exits 0.
require "optparse"
require "tasker"

module ConformanceWorker
  module_function

  # Root: {"value" => input + 1}; otherwise {"value" => 1 + sum of the parents' values} (a
  # skipped parent, or one without a numeric "value", adds 0), listing skipped parents.
  def sum_value(ctx)
    deps = ctx.sequence.dependencies
    return { "value" => Integer(ctx.task.context["input"]) + 1 } if deps.empty?

    total = 1
    skipped = []
    deps.keys.sort.each do |name|
      if ctx.sequence.skipped?(name)
        skipped << name
        next
      end
      value = (ctx.sequence.get(name) || {})["value"]
      total += value.to_i if value.is_a?(Numeric)
    end
    out = { "value" => total }
    out["skipped"] = skipped unless skipped.empty?
    out
  end

  HANDLERS = {
    "sum" => ->(ctx) { sum_value(ctx) },
    "echo_config" => ->(ctx) { ctx.step.config },
    "sleep" => lambda do |ctx|
      sleep(ctx.step.config.fetch("ms", 0).to_f / 1000.0)
      sum_value(ctx)
    end,
    "fail_permanent" => lambda do |ctx|
      raise Tasker::PermanentError.new("step #{ctx.step.name} fails permanently", error_type: "ConformancePermanent")
    end,
    "fail_then_succeed" => lambda do |ctx|
      succeed_on = Integer(ctx.step.config.fetch("succeed_on_attempt", 1))
      if ctx.step.attempt < succeed_on
        raise Tasker::RetryableError.new(
          "attempt #{ctx.step.attempt} of #{ctx.step.name} fails (succeeds on #{succeed_on})",
          error_type: "ConformanceRetryable"
        )
      end
      sum_value(ctx)
    end,
    "fail_business" => lambda do |ctx|
      raise Tasker::ManualInterventionError.new("step #{ctx.step.name} needs an operator",
                                                error_type: "ConformanceBusinessRule")
    end
  }.freeze

  def main(argv)
    options = { namespace: "conformance", capacity: 10, worker_id: nil }
    OptionParser.new do |o|
      o.on("--address ADDRESS") { |v| options[:address] = v }
      o.on("--namespace NAMESPACE") { |v| options[:namespace] = v }
      o.on("--capacity N", Integer) { |v| options[:capacity] = v }
      o.on("--worker-id ID") { |v| options[:worker_id] = v }
    end.parse!(argv)
    abort "--address is required" unless options[:address]

    worker = Tasker::Worker.new(options[:address], namespaces: [options[:namespace]],
                                                   capacity: options[:capacity], worker_id: options[:worker_id])
    HANDLERS.each { |name, handler| worker.register(name, handler) }

    stop = Queue.new
    %w[TERM INT].each { |sig| trap(sig) { stop << sig } }
    Thread.new do
      stop.pop
      worker.shutdown(drain_timeout: 10)
    end
    Thread.new do
      if worker.wait_connected
        $stdout.puts "READY #{worker.worker_id}"
        $stdout.flush
      end
    end
    worker.run
    0
  end
end

exit(ConformanceWorker.main(ARGV)) if $PROGRAM_NAME == __FILE__
