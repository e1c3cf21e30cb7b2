# frozen_string_literal: true

require "active_job"

module Tasker
  # ActiveJob-friendly task creation. Include in a job and call #start_task: the idempotency key
  # defaults to the job's id, so a retried job never starts a second task.
  #
  #   class OrderFulfillmentJob < ApplicationJob
  #     include Tasker::TaskJob
  #     tasker_template "fulfillment", "order_fulfillment"
  #
  #     def perform(order_id)
  #       start_task({ "order_id" => order_id }, correlation_id: "order-#{order_id}")
  #     end
  #   end
  module TaskJob
    def self.included(base)
      base.extend(ClassMethods)
    end

    module ClassMethods
      def tasker_template(namespace, template_name, version: nil)
        @tasker_template = [namespace, template_name, version]
      end

      def tasker_template_args
        @tasker_template || (superclass.respond_to?(:tasker_template_args) ? superclass.tasker_template_args : nil)
      end
    end

    def start_task(context = {}, idempotency_key: nil, **options)
      namespace, template_name, version = self.class.tasker_template_args ||
                                          raise(ArgumentError, "#{self.class} needs tasker_template namespace, name")
      Tasker::Rails.client.create_task(namespace, template_name, context, version: version,
                                                                          idempotency_key: idempotency_key || "#{self.class.name}-#{job_id}", **options)
    end
  end

  # A generic job that creates a task: CreateTaskJob.perform_later("ns", "template", {...}).
  class CreateTaskJob < ActiveJob::Base
    include TaskJob

    def perform(namespace, template_name, context = {}, options = {})
      options = options.transform_keys(&:to_sym)
      Tasker::Rails.client.create_task(namespace, template_name, context,
                                       idempotency_key: options.delete(:idempotency_key) || "CreateTaskJob-#{job_id}",
                                       **options)
    end
  end

  # The queue-system mode's job: runs one handed-off lease (see Tasker::QueueWorker) with the
  # handlers of Tasker::Rails.handlers and reports its outcome with the lease id.
  class StepJob < ActiveJob::Base
    def perform(payload)
      cfg = Tasker::Rails.config
      LeaseRunner.new(cfg.address, handlers: Tasker::Rails.handlers, token: cfg.token,
                                   logger: ActiveJob::Base.logger).run(payload)
    end
  end
end
