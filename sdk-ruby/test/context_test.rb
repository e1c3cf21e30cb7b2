# frozen_string_literal: true

require "test_helper"

class ContextTest < Minitest::Test
  C = Tasker::Internal::Convert
  V1 = Tasker::V1

  def assignment
    V1::Assignment.new(
      lease_id: "L7", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate: "k=v",
      context: V1::ExecutionContext.new(
        task: V1::TaskInfo.new(task_id: "12", namespace: "ns", name: "order", version: "1.0.0",
                               context: C.hash_to_struct({ "order_id" => 7, "items" => [{ "sku" => "A" }] }),
                               correlation_id: "c-1", priority: 5, tags: ["a"]),
        sequence: V1::SequenceInfo.new(
          sequence_number: 3, total_steps: 4,
          dependencies: {
            "pay" => V1::DependencyResult.new(step_name: "pay", state: :STEP_STATE_COMPLETE,
                                              result: C.hash_to_struct({ "paid" => true, "amount" => 12.5 })),
            "check" => V1::DependencyResult.new(step_name: "check", state: :STEP_STATE_SKIPPED)
          }
        ),
        step: V1::StepInfo.new(step_id: "99", name: "ship", handler: "Ship", config: C.hash_to_struct({ "carrier" => "ups" }),
                               attempt: 2, max_attempts: 3, timeout: Google::Protobuf::Duration.new(seconds: 1, nanos: 500_000_000),
                               is_fallback: true)
      )
    )
  end

  def test_context_has_the_shape_of_the_python_sdk
    ctx = Tasker::StepContext.from_assignment(assignment)
    assert_equal %w[12 ns order 1.0.0 c-1], [ctx.task.task_id, ctx.task.namespace, ctx.task.name, ctx.task.version,
                                             ctx.task.correlation_id]
    assert_equal({ "order_id" => 7, "items" => [{ "sku" => "A" }] }, ctx.task.context)
    assert_equal [5, ["a"]], [ctx.task.priority, ctx.task.tags]
    assert_equal({ "paid" => true, "amount" => 12.5 }, ctx.sequence.get("pay"))
    assert_nil ctx.sequence.get("check")
    assert_nil ctx.sequence.get("unknown")
    assert ctx.sequence.skipped?("check")
    refute ctx.sequence.skipped?("pay")
    assert_equal %w[check pay], ctx.sequence.dependencies.keys.sort
    assert_equal "complete", ctx.sequence.dependencies["pay"].state
    assert_equal [3, 4], [ctx.sequence.sequence_number, ctx.sequence.total_steps]
    step = ctx.step
    assert_equal ["99", "ship", "Ship", { "carrier" => "ups" }, 2, 3, 1.5], [step.step_id, step.name, step.handler,
                                                                               step.config, step.attempt, step.max_attempts, step.timeout]
    assert step.fallback?
    assert_equal ["L7", "k=v"], [ctx.lease_id, ctx.tracestate]
    assert ctx.traceparent.start_with?("00-0af7651916cd43dd8448eb211c80319c-")
    refute ctx.cancelled?
    ctx.cancel!
    assert ctx.cancelled?
    assert_raises(Tasker::Cancelled) { ctx.check_cancelled! }
  end
end
