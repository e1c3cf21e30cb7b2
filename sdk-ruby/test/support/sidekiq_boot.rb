# frozen_string_literal: true

# Boots a Sidekiq process for sidekiq_test.rb the way a Rails app's worker would: ActiveJob on the
# Sidekiq adapter and the step handlers registered with Tasker::Rails. REDIS_URL (read by Sidekiq)
# and TASKER_ADDRESS come from the test.
$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "sidekiq"
require "active_job"
require "tasker"
require "tasker/rails"

Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)
ActiveJob::Base.queue_adapter = :sidekiq
ActiveJob::Base.logger = Logger.new($stderr, level: Logger::WARN)
Tasker::Rails.config.address = ENV.fetch("TASKER_ADDRESS")

# Doubles the task's input and says which process ran it.
Tasker::Rails.register("sidekiq_double") do |ctx|
  { "n" => ctx.task.context["n"] * 2, "pid" => Process.pid }
end

# Fails its first attempt (retried by the server, not by Sidekiq) to show the error path.
Tasker::Rails.register("sidekiq_flaky") do |ctx|
  raise Tasker::RetryableError.new("not yet", retry_after: 0) if ctx.step.attempt == 1

  { "n" => ctx.sequence.get("first")["n"] + 1, "pid" => Process.pid }
end
