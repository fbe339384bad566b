// The inbox's live events: one EventSource for the whole app. The browser reconnects by itself
// and sends Last-Event-ID, so the server replays what was missed; when the stream is refused
// (an expired access token), the tokens are refreshed and a new stream resumes from the last
// event seen.
import { useEffect, useRef, useState } from "preact/hooks";
import { refreshTokens, type InboxEvent } from "./api/client";

export type StreamState = "connecting" | "live" | "reconnecting";

const EVENT_TYPES = [
  "message.received",
  "message.status_changed",
  "message.read",
  "fan.updated",
  "conversation.updated",
  "ai.suggestion_created",
  "ai.suggestion_resolved",
  "ai.handoff_requested",
  "inbox.reset",
];

type Handler = (event: InboxEvent) => void;
const handlers = new Set<Handler>();
const stateListeners = new Set<(s: StreamState) => void>();
let source: EventSource | null = null;
let lastEventId = "";
let state: StreamState = "connecting";
let retryTimer: number | undefined;
let reopenPending = false;
let failures = 0;

function setState(next: StreamState): void {
  state = next;
  stateListeners.forEach((l) => l(next));
}

function open(): void {
  const url = lastEventId ? `/api/crm/stream?lastEventId=${encodeURIComponent(lastEventId)}` : "/api/crm/stream";
  const es = new EventSource(url, { withCredentials: true });
  source = es;
  es.onopen = () => {
    failures = 0;
    setState("live");
  };
  const deliver = (raw: MessageEvent<string>) => {
    if (raw.lastEventId) lastEventId = raw.lastEventId;
    let event: InboxEvent;
    try {
      event = JSON.parse(raw.data) as InboxEvent;
    } catch {
      return;
    }
    handlers.forEach((h) => h(event));
  };
  for (const type of EVENT_TYPES) es.addEventListener(type, deliver as EventListener);
  es.addEventListener("stream.error", () => {
    es.close();
    scheduleReopen();
  });
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) scheduleReopen();
    else setState("reconnecting");
  };
}

function scheduleReopen(): void {
  source?.close();
  source = null;
  setState("reconnecting");
  window.clearTimeout(retryTimer);
  const delay = Math.min(30_000, 1000 * 2 ** Math.min(failures, 5));
  failures += 1;
  reopenPending = true;
  retryTimer = window.setTimeout(async () => {
    await refreshTokens();
    reopenPending = false;
    if (handlers.size > 0 && !source) open();
  }, delay);
}

/** Calls `handler` with every inbox event while the component is mounted. */
export function useInboxEvents(handler: Handler): void {
  const latest = useRef(handler);
  latest.current = handler;
  useEffect(() => {
    const forward: Handler = (event) => latest.current(event);
    handlers.add(forward);
    if (!source && !reopenPending) open();
    return () => {
      handlers.delete(forward);
      if (handlers.size === 0) {
        source?.close();
        source = null;
        window.clearTimeout(retryTimer);
        reopenPending = false;
      }
    };
  }, []);
}

export function useStreamState(): StreamState {
  const [value, setValue] = useState(state);
  useEffect(() => {
    stateListeners.add(setValue);
    return () => void stateListeners.delete(setValue);
  }, []);
  return value;
}
