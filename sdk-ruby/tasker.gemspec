# frozen_string_literal: true

Gem::Specification.new do |spec|
  spec.name          = "tasker"
  spec.version       = "0.1.0"
  spec.summary       = "Ruby SDK and generated gRPC stubs for the Tasker workflow orchestration server"
  spec.authors       = ["Tasker contributors"]
  spec.license       = "MIT"
  spec.required_ruby_version = ">= 3.1"

  spec.files         = Dir["lib/**/*.rb"]
  spec.require_paths = ["lib"]

  # Versions shipped by Debian 12 (ruby-grpc 1.51, ruby-google-protobuf 3.21);
  # the generated code in lib/tasker/v1 comes from Debian's grpc_tools_ruby_protoc.
  spec.add_dependency "google-protobuf", ">= 3.21", "< 4"
  spec.add_dependency "grpc", ">= 1.51", "< 2"
end
