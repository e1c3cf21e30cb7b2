// Conversions between SDK values and the generated messages: strict JSON objects (Struct),
// durations, lowercase state names.
import type { Duration } from "../generated/google/protobuf/duration";

/** A value that cannot travel as JSON (protobuf Struct); `path` names where it is. */
export class NotJsonError extends TypeError {
  constructor(readonly path: string, problem: string) {
    super(`${path} ${problem}`);
    this.name = "NotJsonError";
  }
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function toJson(value: unknown, path: string, seen: Set<object>): Json | undefined {
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (!Number.isFinite(value)) throw new NotJsonError(path, `is ${value}, which JSON cannot represent`);
      return value;
    case "undefined":
      return undefined;
    case "bigint":
      throw new NotJsonError(path, "is a BigInt, which JSON cannot represent (convert it to a string or number)");
    case "function":
    case "symbol":
      throw new NotJsonError(path, `is a ${typeof value}, which JSON cannot represent`);
  }
  if (value === null) return null;
  const obj = value as object;
  if (seen.has(obj)) throw new NotJsonError(path, "is a circular reference");
  const toJSON = (obj as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === "function") {
    // Dates and other types that define their JSON form (as JSON.stringify would use it).
    return toJson(toJSON.call(obj), path, seen);
  }
  seen.add(obj);
  try {
    if (Array.isArray(obj)) {
      // JSON.stringify turns undefined items into null.
      return obj.map((item, i) => toJson(item, `${path}[${i}]`, seen) ?? null);
    }
    const proto = Object.getPrototypeOf(obj);
    if (proto !== Object.prototype && proto !== null) {
      const kind = obj.constructor?.name ?? "object";
      if (obj instanceof Map || obj instanceof Set || ArrayBuffer.isView(obj)) {
        throw new NotJsonError(path, `is a ${kind}, which JSON cannot represent (use a plain object or array)`);
      }
    }
    const out: { [key: string]: Json } = {};
    for (const [key, item] of Object.entries(obj)) {
      const converted = toJson(item, `${path}.${key}`, seen);
      if (converted !== undefined) out[key] = converted;
    }
    return out;
  } finally {
    seen.delete(obj);
  }
}

/**
 * `value` as a plain JSON object (what a protobuf Struct can carry). Throws NotJsonError naming
 * the offending path for BigInt, functions, symbols, NaN/Infinity, Maps/Sets/typed arrays,
 * circular references, and for a top-level value that is not an object.
 */
export function toJsonObject(value: unknown, name: string): { [key: string]: Json } {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    const kind = value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`;
    throw new NotJsonError(name, `must be a JSON object, got ${kind}`);
  }
  return toJson(value, name, new Set()) as { [key: string]: Json };
}

export function msToDuration(ms: number): Duration {
  const totalNanos = Math.round(ms * 1e6);
  const seconds = Math.trunc(totalNanos / 1e9);
  return { seconds, nanos: totalNanos - seconds * 1e9 };
}

export function durationToMs(d: Duration | undefined): number {
  if (!d) return 0;
  return Number(d.seconds) * 1000 + d.nanos / 1e6;
}

/** "TASK_STATE_IN_PROGRESS" -> "in_progress". */
export function enumName(jsonName: string, prefix: string): string {
  return (jsonName.startsWith(prefix) ? jsonName.slice(prefix.length) : jsonName).toLowerCase();
}
