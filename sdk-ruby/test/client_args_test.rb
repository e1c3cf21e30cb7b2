# frozen_string_literal: true

require "test_helper"

# Invalid arguments raise ArgumentError before any RPC: the client points at a port nobody
# listens on, so an RPC would fail with UnavailableError instead.
class ClientArgsTest < Minitest::Test
  def setup
    @client = Tasker::Client.new("127.0.0.1:#{TestServer.free_port}", timeout: 1)
  end

  def test_invalid_arguments_raise_argument_error
    {
      -> { @client.get_task("") } => /task_id/,
      -> { @client.get_task(nil) } => /task_id/,
      -> { @client.create_task("", "t") } => /namespace/,
      -> { @client.create_task("ns", "t", "not a hash") } => /context/,
      -> { @client.create_task("ns", "t", { "at" => Time.now }) } => /context/,
      -> { @client.create_task("ns", "t", {}, priority: 101) } => /priority/,
      -> { @client.create_task("ns", "t", {}, tags: "a") } => /tags/,
      -> { @client.create_task("ns", "t", {}, deadline: "soon") } => /deadline/,
      -> { @client.list_tasks(page_size: 0).first } => /page_size/,
      -> { @client.list_tasks(state: "sleepy") } => /state/,
      -> { @client.register_template(nil) } => /yaml/,
      -> { @client.watch_task("") } => /task_id/,
      -> { @client.watch_events(namespaces: "ns") } => /namespaces/,
      -> { @client.cancel_task("1", actor: "") } => /actor/,
      -> { @client.complete_step_manually("1", "s", nil) } => /result/,
      -> { Tasker::Client.new("") } => /address/,
      -> { Tasker::Client.new("h:1", credentials: "tls") } => /credentials/,
      -> { Tasker::Worker.new("h:1", namespaces: []) } => /namespaces/,
      -> { Tasker::Worker.new("h:1", namespaces: ["n"], capacity: 0) } => /capacity/,
      -> { Tasker::Worker.new("h:1", namespaces: ["n"], worker_id: "x" * 65) } => /worker_id/,
      -> { Tasker::Worker.new("h:1", namespaces: ["n"]).register("a", Object.new) } => /call/
    }.each do |call, pattern|
      error = assert_raises(ArgumentError) { call.call }
      assert_match pattern, error.message
    end
  end

  def test_an_rpc_to_nowhere_is_unavailable
    assert_raises(Tasker::UnavailableError) { @client.get_task("1") }
  end

  def test_token_becomes_bearer_metadata
    assert_equal({ "authorization" => "Bearer s3cret" }, Tasker::Internal::Channel.metadata("s3cret"))
    assert_equal({}, Tasker::Internal::Channel.metadata(nil))
  end
end
