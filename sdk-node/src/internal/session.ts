// One WorkerService.Connect stream: hello/welcome, a silence watchdog, writes.
//
// The worker owns everything that outlives a stream (leases, handlers, unacknowledged results);
// a session only moves messages, so reconnecting is "drop the session, open a new one".
import type * as grpc from "@grpc/grpc-js";
import type {
  ConnectRequest,
  ConnectResponse,
  Welcome,
  WorkerHello,
  WorkerServiceClient,
} from "../generated/tasker/v1/worker_service";

/** The server was silent for longer than keepalive_timeout (or never welcomed us). */
export class DeadStreamError extends Error {
  override name = "DeadStreamError";
}

/** The server broke the Connect protocol (e.g. no welcome first). */
export class ProtocolError extends Error {
  override name = "ProtocolError";
}

export interface SessionHandlers {
  onWelcome(welcome: Welcome): void;
  onMessage(message: ConnectResponse): void;
}

export class Session {
  private call: grpc.ClientDuplexStream<ConnectRequest, ConnectResponse> | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private welcomed = false;
  private silenceMs: number;
  closed = false;
  /** Settles once, when the stream ends: with the error, or undefined if the server ended it. */
  readonly done: Promise<Error | undefined>;
  private finish!: (error: Error | undefined) => void;

  constructor(
    private readonly stub: WorkerServiceClient,
    private readonly metadata: grpc.Metadata,
    private readonly handlers: SessionHandlers,
    welcomeWithinMs: number,
  ) {
    this.silenceMs = welcomeWithinMs;
    this.done = new Promise((resolve) => {
      this.finish = (error) => {
        if (this.closed) return;
        this.closed = true;
        clearTimeout(this.watchdog);
        resolve(error);
      };
    });
  }

  open(hello: WorkerHello): void {
    const call = this.stub.connect(this.metadata);
    this.call = call;
    call.on("data", (message: ConnectResponse) => this.receive(message));
    call.on("error", (error: Error) => this.finish(error));
    call.on("end", () => this.finish(this.welcomed ? undefined : new ProtocolError("the server closed the stream before sending welcome")));
    this.armWatchdog();
    this.send({ hello });
  }

  /** Silence past this (ms) kills the stream; 0 disables the watchdog. */
  setSilenceLimit(ms: number): void {
    this.silenceMs = ms;
    this.armWatchdog();
  }

  private armWatchdog(): void {
    clearTimeout(this.watchdog);
    if (this.closed || this.silenceMs <= 0) return;
    this.watchdog = setTimeout(() => {
      const what = this.welcomed ? `no message from the server for ${this.silenceMs} ms` : `no welcome within ${this.silenceMs} ms`;
      this.close(new DeadStreamError(what));
    }, this.silenceMs);
  }

  private receive(message: ConnectResponse): void {
    if (this.closed) return;
    this.armWatchdog();
    if (!this.welcomed) {
      if (!message.welcome) {
        this.close(new ProtocolError(`expected welcome, got ${Object.keys(message).filter((k) => (message as any)[k]).join(",")}`));
        return;
      }
      this.welcomed = true;
      this.handlers.onWelcome(message.welcome);
      return;
    }
    this.handlers.onMessage(message);
  }

  /** Queue a ConnectRequest; false when the session is closed (use the unary fallback). */
  send(message: ConnectRequest): boolean {
    if (this.closed || !this.call) return false;
    try {
      this.call.write(message);
      return true;
    } catch {
      return false;
    }
  }

  /** Half-close and cancel the call (idempotent); `error` becomes the session's outcome. */
  close(error?: Error): void {
    const call = this.call;
    this.finish(error);
    if (call) {
      try {
        call.end();
      } catch {
        /* already ended */
      }
      call.cancel();
    }
  }
}
