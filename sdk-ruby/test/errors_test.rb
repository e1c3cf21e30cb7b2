# frozen_string_literal: true

require "test_helper"

class ErrorsTest < Minitest::Test
  def bad_status(code, message, *details)
    status = Google::Rpc::Status.new(code: code, message: message,
                                     details: details.map { |d| Google::Protobuf::Any.pack(d) })
    GRPC::BadStatus.new_status_exception(code, "plain details",
                                         { "grpc-status-details-bin" => Google::Rpc::Status.encode(status) })
  end

  def test_invalid_argument_decodes_error_info_and_field_violations
    info = Google::Rpc::ErrorInfo.new(reason: "TEMPLATE_INVALID", domain: "tasker", metadata: { "n" => "2" })
    bad = Google::Rpc::BadRequest.new(field_violations: [
                                        Google::Rpc::BadRequest::FieldViolation.new(field: "steps[0]", description: "cycle")
                                      ])
    error = Tasker::Error.from_grpc(bad_status(3, "template is invalid", info, bad))
    assert_instance_of Tasker::InvalidArgumentError, error
    assert_equal 3, error.code
    assert_equal "TEMPLATE_INVALID", error.reason
    assert_equal({ "n" => "2" }, error.metadata)
    assert_equal [["steps[0]", "cycle"]], error.field_violations.map(&:to_a)
    assert_equal "template is invalid", error.message
  end

  def test_every_mapped_code_and_the_fallback
    { 5 => Tasker::NotFoundError, 6 => Tasker::AlreadyExistsError, 9 => Tasker::FailedPreconditionError,
      8 => Tasker::ResourceExhaustedError, 10 => Tasker::AbortedError, 14 => Tasker::UnavailableError,
      13 => Tasker::InternalError, 16 => Tasker::UnauthenticatedError, 7 => Tasker::PermissionDeniedError,
      4 => Tasker::Error }.each do |code, klass|
      error = Tasker::Error.from_grpc(GRPC::BadStatus.new_status_exception(code, "m"))
      assert_instance_of klass, error
      assert_equal code, error.code
      assert_equal "m", error.message
    end
  end

  def test_retry_info_and_garbled_trailer
    retry_info = Google::Rpc::RetryInfo.new(retry_delay: Google::Protobuf::Duration.new(seconds: 2, nanos: 500_000_000))
    assert_in_delta 2.5, Tasker::Error.from_grpc(bad_status(8, "slow down", retry_info)).retry_delay
    garbled = GRPC::BadStatus.new_status_exception(14, "down", { "grpc-status-details-bin" => "\xff\xfe" })
    error = Tasker::Error.from_grpc(garbled)
    assert_instance_of Tasker::UnavailableError, error
    assert_equal "down", error.message
  end

  def test_handler_errors_share_the_root_and_classify
    assert_equal :delayed, Tasker::RetryableError.new("x").error_class
    assert_equal :transient, Tasker::RetryableError.new("x", immediate: true).error_class
    assert_equal :permanent, Tasker::PermanentError.new("x").error_class
    assert_same Tasker::ManualInterventionError, Tasker::BusinessLogicError
    assert_equal :business_logic, Tasker::BusinessLogicError.new("x").error_class
    assert_operator Tasker::HandlerError, :<, Tasker::Error
    assert_raises(ArgumentError) { Tasker::RetryableError.new("x", retry_after: -1) }
    assert_equal "PaymentDeclined", Class.new(Tasker::PermanentError) { def self.name = "Billing::PaymentDeclined" }.new("no").error_type
  end

  Outcome = Tasker::Internal::Outcome

  def test_step_error_classification
    retry_error = Outcome.step_error(Tasker::RetryableError.new("later", retry_after: 1.5, error_type: "Busy",
                                                                         metadata: { k: 1 }))
    assert_equal :ERROR_CLASS_DELAYED, retry_error.error_class
    assert_equal "Busy", retry_error.error_type
    assert_equal 1, retry_error.retry_after.seconds
    assert_equal 1.0, retry_error.metadata.fields["k"].number_value
    assert_equal :ERROR_CLASS_DELAYED, Outcome.step_error(RuntimeError.new("boom")).error_class
    script = Outcome.step_error(NotImplementedError.new("todo"))
    assert_equal [:ERROR_CLASS_PERMANENT, "NotImplementedError"], [script.error_class, script.error_type]
    other = Outcome.step_error(Class.new(Exception) { def self.name = "Weird" }.new("w"))
    assert_equal [:ERROR_CLASS_DELAYED, "Weird"], [other.error_class, other.error_type]
  end

  def test_non_json_results_are_permanent_invalid_result
    [42, "text", [1], { "t" => Time.now }, { "n" => Float::NAN }, { "big" => 2**60 }, { 1 => "x" }].each do |value|
      kind, failure = Outcome.success("L1", value, 0.1)
      assert_equal :failure, kind, value.inspect
      assert_equal [:ERROR_CLASS_PERMANENT, "InvalidResult"], [failure.error.error_class, failure.error.error_type]
    end
    kind, success = Outcome.success("L1", { value: 1, tag: :ok, nested: [nil, true, 1.5] }, 0.1)
    assert_equal :result, kind
    assert_equal({ "value" => 1, "tag" => "ok", "nested" => [nil, true, 1.5] },
                 Tasker::Internal::Convert.struct_to_hash(success.result))
    assert_equal :result, Outcome.success("L1", nil, 0).first
  end
end
