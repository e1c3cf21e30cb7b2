# frozen_string_literal: true

require "grpc"

module Tasker
  module Internal
    # Channel credentials, per-call metadata and reconnect backoff shared by Client and Worker.
    module Channel
      CHANNEL_ARGS = {
        "grpc.keepalive_time_ms" => 30_000,
        "grpc.keepalive_timeout_ms" => 10_000,
        "grpc.keepalive_permit_without_calls" => 1,
        "grpc.max_receive_message_length" => 8 * 1024 * 1024,
        "grpc.max_send_message_length" => 8 * 1024 * 1024,
        # After a server restart, connect again within ~2 s (gRPC's default backoff grows to
        # 120 s and fails calls meanwhile); the same values as the Python and Node SDKs.
        "grpc.initial_reconnect_backoff_ms" => 100,
        "grpc.max_reconnect_backoff_ms" => 2_000
      }.freeze

      module_function

      def validate_address!(address)
        raise ArgumentError, "address must be a non-empty String (host:port)" unless address.is_a?(String) && !address.empty?
      end

      def validate_credentials!(credentials)
        return if credentials.nil? || credentials.is_a?(GRPC::Core::ChannelCredentials)

        raise ArgumentError, "credentials must be a GRPC::Core::ChannelCredentials (or nil for plaintext)"
      end

      def stub(klass, address, credentials)
        klass.new(address, credentials || :this_channel_is_insecure, channel_args: CHANNEL_ARGS)
      end

      def metadata(token)
        return {} if token.nil? || token.empty?

        { "authorization" => "Bearer #{token}" }
      end
    end

    # Exponential backoff with full jitter, never below base.
    class Backoff
      attr_reader :failures

      def initialize(base = 0.1, cap = 5.0)
        @base = base
        @cap = cap
        @failures = 0
      end

      def next_delay
        ceiling = [@cap, @base * (2**@failures)].min
        @failures += 1
        [@base, rand * ceiling].max
      end

      def reset
        @failures = 0
      end
    end
  end
end
