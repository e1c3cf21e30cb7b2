# frozen_string_literal: true

require "test_helper"
require "rails"
require "active_job/railtie"
require "tasker/rails"

# Boots a minimal Rails app (Debian's railties/activesupport/activejob) whose config/tasker.yml
# starts the embedded worker and the event bridge, creates a task through the seed's
# OrderFulfillmentJob and sees the task's events as ActiveSupport::Notifications.
class RailsIntegrationTest < Minitest::Test
  NAMESPACE = "rails_app"

  class ValidateOrder
    def call(ctx)
      { "valid" => !ctx.task.context["order_id"].nil? }
    end
  end

  def self.boot
    return if defined?(@booted)

    @booted = true
    root = Dir.mktmpdir("tasker-rails-app-")
    FileUtils.mkdir_p(File.join(root, "config"))
    File.write(File.join(root, "config", "tasker.yml"), <<~YAML)
      test:
        address: <%= ENV.fetch("TASKER_TEST_ADDRESS") %>
        namespaces: [#{NAMESPACE}]
        capacity: 2
        worker: embedded
        events: true
        events_after_sequence: 0
        drain_timeout: 2
        handlers:
          validate_order: RailsIntegrationTest::ValidateOrder
    YAML
    ENV["TASKER_TEST_ADDRESS"] = TestServer.address
    Object.const_set(:TaskerTestApp, Class.new(::Rails::Application) do
      config.root = root
      config.eager_load = false
      config.logger = Logger.new(nil)
      config.active_job.queue_adapter = :inline
      config.secret_key_base = "x" * 64
    end)
    Tasker::Rails.register("charge") { |ctx| { "charged" => ctx.sequence.get("validate_order")["valid"] } }
    Object.const_set(:OrderFulfillmentJob, Class.new(ActiveJob::Base) do
      include Tasker::TaskJob
      tasker_template NAMESPACE, "order_fulfillment"

      def perform(order_id)
        start_task({ "order_id" => order_id }, correlation_id: "order-#{order_id}")
      end
    end)
    ::Rails.env = "test"
    ::Rails.application.initialize!
  end

  def test_rails_app_creates_a_task_through_active_job_and_sees_notifications
    client = Tasker::Client.new(TestServer.address)
    client.register_template(<<~YAML)
      name: order_fulfillment
      namespace: #{NAMESPACE}
      version: 1.0.0
      step_templates:
        - {name: validate_order, handler_class: validate_order}
        - {name: charge, handler_class: charge, depends_on_steps: [validate_order]}
    YAML
    seen = Queue.new
    subscriber = ActiveSupport::Notifications.subscribe(/\.tasker\z/) do |name, _start, _finish, _id, payload|
      seen << [name, payload[:task_id], payload[:step_name]]
    end
    self.class.boot
    assert Tasker::Rails.worker.wait_connected(timeout: 10), "embedded worker not connected"

    task = OrderFulfillmentJob.perform_now(41)
    assert_equal "OrderFulfillmentJob-", task.idempotency_key[0, 20]
    done = client.wait_for_task(task.task_id, timeout: 30)
    assert_equal ["complete", { "charge" => { "charged" => true } }], [done.state, done.result]

    names = []
    Timeout.timeout(10) do
      until names.include?("task.completed.tasker")
        name, task_id, = seen.pop
        names << name if task_id == task.task_id
      end
    end
    assert_includes names, "task.started.tasker"
    assert(names.any? { |n| n.start_with?("step.") })
    again = Tasker::CreateTaskJob.perform_now(NAMESPACE, "order_fulfillment", { "order_id" => 42 }, { "idempotency_key" => "k42" })
    assert_equal "k42", again.idempotency_key
  ensure
    ActiveSupport::Notifications.unsubscribe(subscriber) if subscriber
  end
end
