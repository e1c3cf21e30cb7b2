// Bridges the event log to a Node EventEmitter, for apps (Express, Fastify, ...) that prefer
// listeners to async iteration:
//
//   const events = bridgeEvents(client, { namespaces: ["orders"] });
//   events.on("task.completed", (event) => ...);   // by event name
//   events.on("event", (event) => ...);            // every event
//   events.on("error", (error) => ...);            // the stream failed for good
//   events.close();
import { EventEmitter } from "node:events";
import type { Client, WatchEventsOptions } from "./client";
import type { Event } from "./models";

/** An EventEmitter fed by Client.watchEvents (which resumes after dropped connections). */
export class TaskEventBridge extends EventEmitter {
  private readonly stream: AsyncGenerator<Event, void, undefined>;
  private closed = false;
  private readonly abort = new AbortController();
  /** Sequence of the last event emitted. */
  lastSequence = 0;
  /** Settles when the bridge stops (close() or a stream error). */
  readonly done: Promise<void>;

  constructor(client: Client, options: WatchEventsOptions = {}) {
    super();
    this.stream = client.watchEvents({ afterSequence: -1, ...options, signal: this.abort.signal });
    this.done = this.pump();
  }

  private async pump(): Promise<void> {
    try {
      for await (const event of this.stream) {
        if (this.closed) break;
        this.lastSequence = event.sequence;
        this.emit("event", event);
        this.emit(event.eventName, event);
      }
    } catch (error) {
      if (!this.closed) {
        if (this.listenerCount("error") > 0) this.emit("error", error);
      }
    }
  }

  /** Wait for the first event matching `predicate` (e.g. a task's terminal event). */
  waitFor(predicate: (event: Event) => boolean, timeoutMs?: number): Promise<Event> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const listener = (event: Event) => {
        if (!predicate(event)) return;
        cleanup();
        resolve(event);
      };
      const cleanup = () => {
        clearTimeout(timer);
        this.off("event", listener);
      };
      this.on("event", listener);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no matching event within ${timeoutMs} ms`));
        }, timeoutMs);
      }
    });
  }

  /** Stop watching (idempotent). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    await this.done;
  }
}

/** Watch events (from the live end unless `afterSequence` says otherwise) into an EventEmitter. */
export function bridgeEvents(client: Client, options: WatchEventsOptions = {}): TaskEventBridge {
  return new TaskEventBridge(client, options);
}
