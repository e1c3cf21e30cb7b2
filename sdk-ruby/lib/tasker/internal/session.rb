# frozen_string_literal: true

module Tasker
  module Internal
    # One WorkerService.Connect stream. Requests go through a Queue that a request Enumerator
    # drains (grpc consumes it on its own thread); responses are read by #each on the caller's
    # thread. #abort cancels the call (e.g. after keepalive silence) and #close half-closes it.
    class Session
      CLOSE = Object.new.freeze

      attr_reader :last_heard

      def initialize(stub, metadata)
        @stub = stub
        @metadata = metadata
        @queue = Queue.new
        @open = true
        @op = nil
        @last_heard = monotonic
        @lock = Mutex.new
      end

      # Sends +hello+, then yields every server message until the stream ends (returns nil) or
      # fails (raises GRPC::BadStatus or another error).
      def each(hello)
        @queue << V1::ConnectRequest.new(hello: hello)
        requests = Enumerator.new do |y|
          loop do
            message = @queue.pop
            break if message.equal?(CLOSE)

            y << message
          end
        end
        op = @stub.connect(requests, metadata: @metadata, return_op: true)
        @lock.synchronize { @op = op }
        op.execute.each do |message|
          @last_heard = monotonic
          yield message
        end
        nil
      ensure
        close
      end

      # Queues a message; false once the session is closed.
      def push(message)
        @lock.synchronize do
          return false unless @open

          @queue << message
          true
        end
      end

      def open?
        @open
      end

      # Half-closes the stream: the server then ends it.
      def close
        @lock.synchronize do
          return unless @open

          @open = false
          @queue << CLOSE
        end
      end

      # Cancels the call: the reader raises and the stream is gone.
      def abort
        close
        op = @lock.synchronize { @op }
        op&.cancel
      rescue StandardError
        nil
      end

      def silent_for
        monotonic - @last_heard
      end

      private

      def monotonic
        Process.clock_gettime(Process::CLOCK_MONOTONIC)
      end
    end
  end
end
