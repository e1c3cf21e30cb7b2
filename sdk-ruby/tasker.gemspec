# frozen_string_literal: true

Gem::Specification.new do |spec|
  spec.name          = "tasker"
  spec.version       = "0.1.0"
  spec.summary       = "Ruby SDK and generated gRPC stubs for the Tasker workflow orchestration server"
  spec.authors       = ["Tasker contributors"]
  spec.license       = "MIT"
  spec.required_ruby_version = ">= 3.1"

  spec.files         = Dir["lib/**/*.rb", "bin/*", "examples/*"]
  spec.bindir        = "bin"
  spec.executables   = ["tasker-worker"]
  spec.require_paths = ["lib"]

  # Versions shipped by Debian 12 (ruby-grpc 1.51, ruby-google-protobuf 3.21);
  # the generated code in lib/tasker/v1 comes from Debian's grpc_tools_ruby_protoc.
  spec.add_dependency "google-protobuf", ">= 3.21", "< 4"
  spec.add_dependency "grpc", ">= 1.51", "< 2"
  # google.rpc.Status/ErrorInfo/BadRequest for error details (Debian: ruby-googleapis-common-protos-types).
  spec.add_dependency "googleapis-common-protos-types", ">= 1.4", "< 2"
  # The Rails integration (lib/tasker/rails*) needs railties/activesupport (and activejob for
  # the jobs); they are optional: the client and worker do not load them.
end
