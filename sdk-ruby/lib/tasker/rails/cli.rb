# frozen_string_literal: true

module Tasker
  module Rails
    # bin/tasker-worker and `rails tasker:worker`: the worker in its own process, stopped
    # gracefully by SIGTERM/SIGINT.
    module CLI
      module_function

      def run_worker
        Tasker::Rails.config.worker = "none"
        worker = Tasker::Rails.start_worker
        stop = Queue.new
        %w[TERM INT].each { |sig| trap(sig) { stop << sig } }
        stop.pop
        worker.shutdown(drain_timeout: Tasker::Rails.config.drain_timeout)
      end
    end
  end
end
