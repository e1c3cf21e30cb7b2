# frozen_string_literal: true

# Registers the order_fulfillment template, runs a worker with its four handlers, creates a task
# and waits for it:  ruby -Ilib examples/quickstart.rb --address 127.0.0.1:50051
require "optparse"
require "tasker"

address = "127.0.0.1:50051"
OptionParser.new { |o| o.on("--address ADDRESS") { |v| address = v } }.parse!

# A class-based handler: any object (or class) with #call(context).
class ProcessPayment
  def call(ctx)
    total = ctx.task.context["items"].sum { |i| i["price"] * i["quantity"] }
    raise Tasker::RetryableError.new("gateway busy", retry_after: 0.1) if ctx.step.attempt == 1

    { "charged" => total, "attempt" => ctx.step.attempt }
  end
end

client = Tasker::Client.new(address)
client.register_template(File.read(File.join(__dir__, "order_fulfillment.yaml")))

worker = Tasker::Worker.new(address, namespaces: ["ruby_quickstart"], capacity: 4)
worker.register("validate_order") do |ctx|
  raise Tasker::PermanentError, "order has no items" if ctx.task.context["items"].empty?

  { "valid" => true }
end
worker.register("check_inventory") { |ctx| { "in_stock" => ctx.task.context["items"].map { |i| i["sku"] } } }
worker.register("process_payment", ProcessPayment)
worker.register("ship_order") do |ctx|
  { "shipped" => true, "charged" => ctx.sequence.get("process_payment")["charged"] }
end
worker.start
worker.wait_connected(timeout: 10) or abort("worker could not connect to #{address}")

task = client.create_task("ruby_quickstart", "order_fulfillment",
                          { "order_id" => 1001, "items" => [{ "sku" => "A-1", "price" => 12.5, "quantity" => 2 }] },
                          idempotency_key: "ruby-order-#{Process.pid}-#{Time.now.to_i}")
done = client.wait_for_task(task.task_id, timeout: 60)
puts "task #{done.task_id}: #{done.state} #{done.result}"
worker.shutdown(drain_timeout: 10)
exit(done.state == "complete" ? 0 : 1)
