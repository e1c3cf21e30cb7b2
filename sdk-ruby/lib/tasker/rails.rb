# frozen_string_literal: true

require "erb"
require "yaml"
require "tasker" unless defined?(Tasker::Client)
require "rails/railtie"
require "active_support/notifications"

module Tasker
  # Rails integration: Tasker::Railtie reads config/tasker.yml (one section per environment,
  # ERB allowed), optionally starts the worker inside the app process and bridges task events to
  # ActiveSupport::Notifications as "<event name>.tasker" (e.g. "task.completed.tasker", payload:
  # event:, task_id:, step_name:, namespace:, metadata:). bin/tasker-worker runs the worker in
  # its own process instead.
  #
  #   # config/tasker.yml
  #   development:
  #     address: 127.0.0.1:50051
  #     token: <%= ENV["TASKER_TOKEN"] %>
  #     namespaces: [fulfillment]
  #     capacity: 10
  #     worker: embedded          # embedded | none (use bin/tasker-worker) ; default none
  #     worker_mode: stream       # stream (run handlers here) | active_job (Tasker::StepJob)
  #     events: true              # bridge WatchEvents to ActiveSupport::Notifications
  #     handlers:
  #       validate_order: ValidateOrderHandler
  module Rails
    # The settings of config/tasker.yml for the current environment.
    class Configuration
      KEYS = %w[address token namespaces capacity worker_id worker worker_mode events event_names
                events_after_sequence handlers drain_timeout].freeze

      attr_accessor :address, :token, :namespaces, :capacity, :worker_id, :worker, :worker_mode, :events,
                    :event_names, :events_after_sequence, :handlers, :drain_timeout

      def initialize(settings = {})
        unknown = settings.keys.map(&:to_s) - KEYS
        raise ArgumentError, "unknown config/tasker.yml keys: #{unknown.join(', ')}" unless unknown.empty?

        s = settings.transform_keys(&:to_s)
        @address = s.fetch("address", "127.0.0.1:50051")
        @token = s["token"]
        @namespaces = Array(s["namespaces"])
        @capacity = Integer(s.fetch("capacity", 10))
        @worker_id = s["worker_id"]
        @worker = s.fetch("worker", "none").to_s
        @worker_mode = s.fetch("worker_mode", "stream").to_s
        @events = s.fetch("events", false)
        @event_names = Array(s["event_names"])
        @events_after_sequence = Integer(s.fetch("events_after_sequence", -1))
        @handlers = (s["handlers"] || {}).to_h.transform_keys(&:to_s)
        @drain_timeout = Float(s.fetch("drain_timeout", 30))
      end

      def self.load(path, env)
        return new unless File.exist?(path)

        data = YAML.safe_load(ERB.new(File.read(path)).result, aliases: true) || {}
        new(data.fetch(env.to_s, {}) || {})
      end
    end

    class << self
      attr_writer :config

      def config
        @config ||= Configuration.new
      end

      # A process-wide client for the configured server.
      def client
        @client ||= Client.new(config.address, token: config.token)
      end

      # The handlers of tasker.yml (class names constantized and instantiated once) plus those
      # registered in code.
      def handlers
        @instances ||= {}
        from_config = config.handlers.to_h do |name, handler|
          [name, @instances[[name, handler]] ||= begin
            handler = handler.constantize if handler.is_a?(String)
            handler.is_a?(Class) ? handler.new : handler
          end]
        end
        from_config.merge(registered)
      end

      # Registers a handler in code (config/initializers/tasker.rb) in addition to tasker.yml.
      def register(name, handler = nil, &block)
        registered[name.to_s] = block || (handler.is_a?(Class) ? handler.new : handler)
      end

      def registered
        @registered ||= {}
      end

      attr_reader :worker

      # Builds and starts the worker (stream or active_job mode) on a background thread.
      def start_worker
        raise Error, "config/tasker.yml: namespaces are required to run a worker" if config.namespaces.empty?

        options = { namespaces: config.namespaces, capacity: config.capacity, worker_id: config.worker_id,
                    token: config.token, logger: ::Rails.logger }
        @worker = if config.worker_mode == "active_job"
                    require "tasker/rails/jobs"
                    QueueWorker.new(config.address, enqueue: ->(payload) { StepJob.perform_later(payload) }, **options)
                  else
                    Worker.new(config.address, **options)
                  end
        handlers.each { |name, handler| @worker.register(name, handler) }
        @worker.start
        stop_at_exit
        @worker
      end

      # Streams events into ActiveSupport::Notifications on a background thread (resuming
      # after dropped connections; restarting after errors).
      def start_event_bridge
        stop_at_exit
        @event_bridge ||= Thread.new do
          after = config.events_after_sequence
          loop do
            client.watch_events(namespaces: config.namespaces, event_names: config.event_names,
                                after_sequence: after).each do |event|
              after = event.sequence
              ActiveSupport::Notifications.instrument(
                "#{event.event_name}.tasker",
                event: event, task_id: event.task_id, step_name: event.step_name,
                namespace: event.namespace, metadata: event.metadata
              )
            end
          rescue Tasker::Error, GRPC::BadStatus => e
            ::Rails.logger&.warn("tasker event bridge: #{e.message}; retrying")
            sleep 1
          end
        end
      end

      def stop_at_exit
        @stop_at_exit ||= at_exit { stop }
      end

      # Stops the event bridge and shuts the worker down gracefully (idempotent).
      def stop
        @event_bridge&.kill
        @event_bridge = nil
        @worker&.shutdown(drain_timeout: config.drain_timeout)
      end
    end
  end

  # Loads config/tasker.yml and starts what it asks for once the app is initialized.
  class Railtie < ::Rails::Railtie
    config.tasker_config_path = nil

    initializer "tasker.configure" do |app|
      path = app.config.tasker_config_path || app.root.join("config", "tasker.yml").to_s
      Tasker::Rails.config = Tasker::Rails::Configuration.load(path, ::Rails.env)
    end

    initializer "tasker.active_job" do
      ActiveSupport.on_load(:active_job) { require "tasker/rails/jobs" }
    end

    config.after_initialize do
      cfg = Tasker::Rails.config
      Tasker::Rails.start_event_bridge if cfg.events
      Tasker::Rails.start_worker if cfg.worker == "embedded" && !defined?(::Rails::Console)
    end

    rake_tasks do
      namespace :tasker do
        desc "Run the Tasker worker in the foreground (config/tasker.yml)"
        task worker: :environment do
          require "tasker/rails/cli"
          Tasker::Rails::CLI.run_worker
        end
      end
    end
  end
end

require "tasker/rails/jobs" if defined?(::ActiveJob)
