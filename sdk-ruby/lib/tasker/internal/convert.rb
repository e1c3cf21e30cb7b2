# frozen_string_literal: true

require "google/protobuf/well_known_types"

module Tasker
  module Internal
    # Plain Ruby values <-> protobuf well-known types. JSON payloads travel as
    # google.protobuf.Struct, whose numbers are doubles: integral numbers come back as Integer,
    # and integers beyond 2**53 are rejected. Symbol keys and values become strings.
    module Convert
      MAX_SAFE_INT = 2**53

      # Raised for a value that is not JSON (a Time, an Object, NaN, a huge integer...).
      class NotJSON < ArgumentError; end

      module_function

      def hash_to_struct(hash, what = "value")
        hash = {} if hash.nil?
        raise NotJSON, "#{what} must be a Hash (JSON object), got #{hash.class}" unless hash.is_a?(Hash)

        fill_struct(Google::Protobuf::Struct.new, hash, "$")
      end

      def fill_struct(struct, hash, path)
        hash.each do |key, value|
          key = key.to_s if key.is_a?(Symbol)
          raise NotJSON, "#{path}: keys must be strings, got #{key.inspect}" unless key.is_a?(String)

          struct.fields[key] = to_value(value, "#{path}.#{key}")
        end
        struct
      end

      def to_value(value, path)
        case value
        when nil then Google::Protobuf::Value.new(null_value: :NULL_VALUE)
        when true, false then Google::Protobuf::Value.new(bool_value: value)
        when Integer
          raise NotJSON, "#{path}: integer #{value} is too large for a JSON number (max 2**53)" if value.abs > MAX_SAFE_INT

          Google::Protobuf::Value.new(number_value: value.to_f)
        when Float
          raise NotJSON, "#{path}: #{value} is not a finite number" unless value.finite?

          Google::Protobuf::Value.new(number_value: value)
        when String then Google::Protobuf::Value.new(string_value: value)
        when Symbol then Google::Protobuf::Value.new(string_value: value.to_s)
        when Hash then Google::Protobuf::Value.new(struct_value: fill_struct(Google::Protobuf::Struct.new, value, path))
        when Array
          list = Google::Protobuf::ListValue.new
          value.each_with_index { |item, i| list.values << to_value(item, "#{path}[#{i}]") }
          Google::Protobuf::Value.new(list_value: list)
        else
          raise NotJSON, "#{path}: #{value.class} is not JSON (use String, Integer, Float, true/false, nil, Array or Hash)"
        end
      end

      def struct_to_hash(struct)
        return {} if struct.nil?

        struct.fields.each_with_object({}) { |(k, v), out| out[k] = from_value(v) }
      end

      def from_value(value)
        case value.kind
        when :null_value then nil
        when :bool_value then value.bool_value
        when :number_value
          n = value.number_value
          n.finite? && n == n.floor && n.abs <= MAX_SAFE_INT ? n.to_i : n
        when :string_value then value.string_value
        when :struct_value then struct_to_hash(value.struct_value)
        when :list_value then value.list_value.values.map { |v| from_value(v) }
        end
      end

      def duration_to_seconds(duration)
        return 0.0 if duration.nil?

        duration.seconds + (duration.nanos / 1e9)
      end

      def seconds_to_duration(seconds)
        seconds = seconds.to_f
        whole = seconds.floor
        Google::Protobuf::Duration.new(seconds: whole, nanos: ((seconds - whole) * 1e9).round.clamp(0, 999_999_999))
      end

      def timestamp_to_time(ts)
        return nil if ts.nil? || (ts.seconds.zero? && ts.nanos.zero?)

        Time.at(ts.seconds, ts.nanos, :nsec).utc
      end

      def time_to_timestamp(time)
        Google::Protobuf::Timestamp.new(seconds: time.to_i, nanos: time.nsec)
      end

      # :task_state_in_progress style enum symbol -> "in_progress".
      def enum_name(value, prefix)
        value.to_s.downcase.delete_prefix(prefix.downcase)
      end
    end
  end
end
