# frozen_string_literal: true

require "google/rpc/status_pb"
require "google/rpc/error_details_pb"

module Tasker
  # Every exception the SDK raises or understands, under one root (the same tree as the Python
  # and Node SDKs):
  #
  #   Tasker::Error                      root: rescue this to rescue everything from the SDK
  #   ├── InvalidArgumentError           INVALID_ARGUMENT (field_violations lists every problem)
  #   ├── NotFoundError                  NOT_FOUND
  #   ├── AlreadyExistsError             ALREADY_EXISTS
  #   ├── FailedPreconditionError        FAILED_PRECONDITION (e.g. an illegal state transition)
  #   ├── ResourceExhaustedError         RESOURCE_EXHAUSTED (payload or template limits)
  #   ├── AbortedError                   ABORTED
  #   ├── UnavailableError               UNAVAILABLE (server down or restarting)
  #   ├── InternalError                  INTERNAL
  #   ├── UnauthenticatedError           UNAUTHENTICATED (no or unknown token or client certificate)
  #   ├── PermissionDeniedError          PERMISSION_DENIED (the identity lacks a permission there)
  #   │   (any other status code is a plain Tasker::Error carrying its +code+)
  #   └── HandlerError                   raised *by step handlers* to classify a failure
  #       ├── RetryableError             DELAYED (or TRANSIENT with immediate: true)
  #       ├── PermanentError             PERMANENT: fail the step (or skip it / run its fallback)
  #       └── ManualInterventionError    BUSINESS_LOGIC: block the step for an operator
  #           (alias BusinessLogicError)
  #
  # RPC errors are decoded in exactly one place, Tasker::Error.from_grpc, which reads the
  # grpc-status-details-bin trailer (a google.rpc.Status carrying one ErrorInfo and, for
  # INVALID_ARGUMENT, a BadRequest).
  #
  # What a handler raises that is not a HandlerError: a StandardError is DELAYED (retried with
  # backoff); a ScriptError (NotImplementedError, LoadError, SyntaxError) is PERMANENT, since
  # retrying cannot make missing code appear; any other Exception is DELAYED. The worker rescues
  # all of them and keeps running.
  class Error < StandardError
    FieldViolation = ::Struct.new(:field, :description)

    STATUS_DETAILS_KEY = "grpc-status-details-bin"

    # code: the gRPC status code (Integer, GRPC::Core::StatusCodes) or nil when the error did
    # not come from an RPC; reason/metadata: the ErrorInfo; field_violations: the BadRequest.
    attr_reader :code, :reason, :metadata, :field_violations, :retry_delay

    def initialize(message = nil, code: nil, reason: "", metadata: nil, field_violations: [],
                   retry_delay: nil)
      super(message)
      @code = code
      @reason = reason.to_s
      @metadata = (metadata || {}).to_h
      @field_violations = field_violations.to_a
      @retry_delay = retry_delay
    end

    # The message plus one line per field violation.
    def full_message_text
      ([message] + field_violations.map { |v| "  #{v.field}: #{v.description}" }).join("\n")
    end

    def inspect
      "#<#{self.class.name}: #{message} code=#{code.inspect} reason=#{reason.inspect}>"
    end

    # Turns a GRPC::BadStatus into the matching Tasker::Error subclass (the one decoding place).
    def self.from_grpc(error)
      code = error.respond_to?(:code) ? error.code : nil
      message = error.respond_to?(:details) && !error.details.to_s.empty? ? error.details : error.message
      reason = ""
      metadata = {}
      violations = []
      retry_delay = nil
      raw = error.respond_to?(:metadata) ? (error.metadata || {})[STATUS_DETAILS_KEY] : nil
      if raw.is_a?(String)
        status = begin
          Google::Rpc::Status.decode(raw)
        rescue StandardError # a garbled trailer must not hide the status code itself
          nil
        end
        if status
          message = status.message unless status.message.empty?
          status.details.each do |any|
            if (info = any.unpack(Google::Rpc::ErrorInfo))
              reason = info.reason
              metadata.merge!(info.metadata.to_h)
            elsif (bad = any.unpack(Google::Rpc::BadRequest))
              violations.concat(bad.field_violations.map { |v| FieldViolation.new(v.field, v.description) })
            elsif (retry_info = any.unpack(Google::Rpc::RetryInfo))
              d = retry_info.retry_delay
              retry_delay = d ? d.seconds + (d.nanos / 1e9) : nil
            end
          end
        end
      end
      klass = BY_CODE.fetch(code, Error)
      klass.new(message, code: code, reason: reason, metadata: metadata,
                         field_violations: violations, retry_delay: retry_delay)
    end
  end

  class InvalidArgumentError < Error; end
  class NotFoundError < Error; end
  class AlreadyExistsError < Error; end
  class FailedPreconditionError < Error; end
  class ResourceExhaustedError < Error; end
  class AbortedError < Error; end
  class UnavailableError < Error; end
  class InternalError < Error; end
  class UnauthenticatedError < Error; end
  # The caller's identity lacks the permission the call needs in its namespace (the message
  # names both; metadata: identity, permission, namespace).
  class PermissionDeniedError < Error; end

  class Error
    BY_CODE = {
      3 => InvalidArgumentError, 5 => NotFoundError, 6 => AlreadyExistsError,
      9 => FailedPreconditionError, 8 => ResourceExhaustedError, 10 => AbortedError,
      14 => UnavailableError, 13 => InternalError, 16 => UnauthenticatedError,
      7 => PermissionDeniedError
    }.freeze
  end

  # Base of the errors a step handler raises to say how its failure should be treated.
  # error_type defaults to the class name, so subclassing (class PaymentDeclined <
  # Tasker::PermanentError) names the failure in the step's history.
  class HandlerError < Error
    attr_reader :error_type

    def initialize(message = nil, error_type: nil, metadata: nil)
      super(message, metadata: metadata)
      @error_type = error_type || self.class.name.split("::").last
    end

    # One of :transient, :delayed, :permanent, :business_logic.
    def error_class
      :delayed
    end
  end

  # Retry the step: after the backoff delay (DELAYED), after retry_after seconds if given
  # (capped by the server), or at once with immediate: true (TRANSIENT).
  class RetryableError < HandlerError
    attr_reader :retry_after

    def initialize(message = nil, retry_after: nil, immediate: false, error_type: nil, metadata: nil)
      raise ArgumentError, "retry_after must be a number >= 0" if retry_after && !(retry_after.is_a?(Numeric) && retry_after >= 0)

      super(message, error_type: error_type, metadata: metadata)
      @retry_after = retry_after
      @immediate = immediate
    end

    def immediate?
      @immediate
    end

    def error_class
      @immediate ? :transient : :delayed
    end
  end

  # Do not retry: the step fails (or is skipped when optional, or runs its fallback).
  class PermanentError < HandlerError
    def error_class
      :permanent
    end
  end

  # A business rule failed: the step becomes BLOCKED until an operator retries, resolves or
  # completes it.
  class ManualInterventionError < HandlerError
    def error_class
      :business_logic
    end
  end

  BusinessLogicError = ManualInterventionError
end
