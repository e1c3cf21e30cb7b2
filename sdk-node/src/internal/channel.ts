// Channel creation, call metadata, reconnect backoff and the one promisified unary call shared
// by Client and Worker.
import * as grpc from "@grpc/grpc-js";
import { argumentError, fromRpcError } from "./errors";

export interface ConnectionOptions {
  /** TLS (or other) channel credentials; insecure when omitted. */
  credentials?: grpc.ChannelCredentials;
  /** Sent as `authorization: Bearer <token>` metadata on every call. */
  token?: string;
}

const MAX_MESSAGE = 8 * 1024 * 1024;
// Keep TCP connections alive through idle proxies; the worker stream also has its own
// application-level keepalive (see worker_service.proto).
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.max_receive_message_length": MAX_MESSAGE,
  "grpc.max_send_message_length": MAX_MESSAGE,
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 2_000,
};

export function validateConnection(address: unknown, options: ConnectionOptions): void {
  if (typeof address !== "string" || address.length === 0) {
    throw argumentError("address", "must be a non-empty HOST:PORT string");
  }
  if (options.token !== undefined && (typeof options.token !== "string" || options.token.length === 0)) {
    throw argumentError("token", "must be a non-empty string when given");
  }
  if (options.credentials !== undefined && !(options.credentials instanceof grpc.ChannelCredentials)) {
    throw argumentError("credentials", "must be grpc.ChannelCredentials (e.g. grpc.credentials.createSsl())");
  }
}

export function openChannel(address: string, credentials?: grpc.ChannelCredentials): grpc.Channel {
  return new grpc.Channel(address, credentials ?? grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
}

/** A generated client class bound to a shared channel. */
export function makeClient<T>(Ctor: new (address: string, creds: grpc.ChannelCredentials, options: object) => T,
  address: string, channel: grpc.Channel): T {
  return new Ctor(address, grpc.credentials.createInsecure(), { channelOverride: channel });
}

/** Per-call metadata: a fresh copy each time (grpc-js may mutate it). */
export function callMetadata(token: string | undefined, extra: Record<string, string> = {}): grpc.Metadata {
  const md = new grpc.Metadata();
  if (token) md.set("authorization", `Bearer ${token}`);
  for (const [k, v] of Object.entries(extra)) md.set(k, v);
  return md;
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (error: grpc.ServiceError | null, response: Res) => void,
) => grpc.ClientUnaryCall;

/** Run one unary RPC; failures are decoded by fromRpcError (the one place). */
export function unary<Req, Res>(
  client: object,
  method: UnaryMethod<Req, Res>,
  request: Req,
  metadata: grpc.Metadata,
  timeoutMs?: number,
): Promise<Res> {
  const options: Partial<grpc.CallOptions> = timeoutMs ? { deadline: new Date(Date.now() + timeoutMs) } : {};
  return new Promise((resolve, reject) => {
    method.call(client, request, metadata, options, (error, response) => {
      if (error) reject(fromRpcError(error));
      else resolve(response);
    });
  });
}

/** Exponential backoff with full jitter, never below `baseMs`. */
export class Backoff {
  failures = 0;
  constructor(readonly baseMs = 100, readonly capMs = 5_000) {}

  nextDelayMs(): number {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** this.failures);
    this.failures += 1;
    return Math.max(this.baseMs, Math.random() * ceiling);
  }

  reset(): void {
    this.failures = 0;
  }
}

/** Resolves after `ms`, or early when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
