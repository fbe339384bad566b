// The inbox: conversations (paged, virtualized, searchable), a thread with older messages on
// scroll, live updates, AI suggestions, quick replies by shortcut and pay-per-view prices.
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import {
  api,
  money,
  newKey,
  ok,
  when,
  type Conversation,
  type InboxEvent,
  type Message,
  type QuickReply,
  type Suggestion,
} from "../api/client";

import { useInboxEvents, useStreamState } from "../stream";
import { Button, ErrorBanner, Field, Loading, useAction, useLoad } from "../ui/kit";
import { MediaPicker } from "../ui/media";
import { StatusLine, useOnlyFansStatus } from "./connection";

const ROW_HEIGHT = 72;
const PAGE_SIZE = 50;
const OVERSCAN = 6;

export function Inbox({ conversationId }: { conversationId: string | null }) {
  const status = useOnlyFansStatus();
  const live = useStreamState();
  const [threadEvent, setThreadEvent] = useState<InboxEvent | null>(null);
  const list = useConversations();

  useInboxEvents((event) => {
    list.apply(event, conversationId);
    setThreadEvent(event);
  });

  const attention = status.data && status.data.state !== "connected" ? status.data : null;
  return (
    <div class={conversationId ? "inbox has-thread" : "inbox"}>
      <section class="inbox-list" aria-labelledby="inbox-title">
        <header>
          <div class="row">
            <h1 id="inbox-title" class="page-title grow" tabIndex={-1}>Inbox</h1>
            <span class={`live ${live === "live" ? "" : "muted"}`} role="status">
              {live === "live" ? "● Live" : live === "connecting" ? "Connecting…" : "Reconnecting…"}
            </span>
          </div>
          {attention && (
            <div class="banner banner-warning" role="alert">
              <StatusLine status={attention} /> <a href="/settings/connections">Fix the OnlyFans connection</a>
            </div>
          )}
          <Field label="Search conversations">
            {(id) => <input id={id} type="search" value={list.search} onInput={(e) => list.setSearch(e.currentTarget.value)} placeholder="Fan name or message" />}
          </Field>
          <label class="check">
            <input type="checkbox" checked={list.unreadOnly} onChange={(e) => list.setUnreadOnly(e.currentTarget.checked)} />
            Unread only
          </label>
        </header>
        <ConversationList list={list} activeId={conversationId} />
      </section>
      <section class="thread" aria-label="Conversation">
        {conversationId ? (
          <Thread key={conversationId} conversationId={conversationId} event={threadEvent} onRead={list.markRead} />
        ) : (
          <p class="empty">Choose a conversation.</p>
        )}
      </section>
    </div>
  );
}

type ConversationPage = { conversations: Conversation[]; nextCursor: string | null };

function firstPage(): Promise<ConversationPage> {
  return ok(api.GET("/api/crm/conversations", { params: { query: { limit: PAGE_SIZE } } }));
}

let prefetched: Promise<ConversationPage> | null = null;

/** Opening the console on the inbox: its first page is asked for at once, beside the session,
 * rather than after it (one round trip less before the list shows). */
export function prefetchInbox(): void {
  prefetched = firstPage();
  prefetched.catch(() => undefined);
}

async function takePrefetched(): Promise<ConversationPage | null> {
  const pending = prefetched;
  prefetched = null;
  return pending ? pending.catch(() => null) : null;
}

interface ListState {
  items: Conversation[];
  cursor: string | null;
  done: boolean;
  loading: boolean;
  error: unknown;
}

function useConversations() {
  const [search, setSearch] = useState("");
  const [unreadOnly, setUnreadOnly] = useState(false);
  const [state, setState] = useState<ListState>({ items: [], cursor: null, done: false, loading: true, error: null });
  const generation = useRef(0);
  const busy = useRef(false);

  const loadPage = useCallback(
    async (reset: boolean) => {
      if (busy.current && !reset) return;
      const mine = reset ? ++generation.current : generation.current;
      busy.current = true;
      setState((s) => ({ ...s, loading: true, error: null, ...(reset ? { items: [], cursor: null, done: false } : {}) }));
      try {
        const cursor = reset ? undefined : (state.cursor ?? undefined);
        const plain = reset && !search.trim() && !unreadOnly;
        const page =
          (plain ? await takePrefetched() : null) ??
          (await ok(
            api.GET("/api/crm/conversations", {
              params: { query: { limit: PAGE_SIZE, cursor, search: search.trim() || undefined, unread: unreadOnly || undefined } },
            }),
          ));
        if (mine !== generation.current) return;
        setState((s) => ({
          items: reset ? page.conversations : [...s.items, ...page.conversations.filter((c) => !s.items.some((x) => x.id === c.id))],
          cursor: page.nextCursor,
          done: !page.nextCursor,
          loading: false,
          error: null,
        }));
      } catch (error) {
        if (mine === generation.current) setState((s) => ({ ...s, loading: false, error }));
      } finally {
        if (mine === generation.current) busy.current = false;
      }
    },
    [search, unreadOnly, state.cursor],
  );

  // A new search or filter starts again from the first page (after a short pause in typing).
  useEffect(() => {
    const timer = window.setTimeout(() => void loadPage(true), search ? 250 : 0);
    return () => window.clearTimeout(timer);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [search, unreadOnly]);

  const upsert = useCallback((conversation: Conversation) => {
    setState((s) => {
      const rest = s.items.filter((c) => c.id !== conversation.id);
      const items = [conversation, ...rest].sort((a, b) => (b.lastMessageAt ?? "").localeCompare(a.lastMessageAt ?? ""));
      return { ...s, items };
    });
  }, []);

  const apply = useCallback(
    (event: InboxEvent, openId: string | null) => {
      if (event.type === "inbox.reset") {
        void loadPage(true);
        return;
      }
      if (event.conversation?.id) {
        upsert(event.conversation);
        return;
      }
      const id = event.message?.conversationId ?? event.messagesRead?.conversationId;
      if (!id) return;
      void ok(api.GET("/api/crm/conversations/{conversation_id}", { params: { path: { conversation_id: id } } }))
        .then((c) => upsert(id === openId && event.type === "message.received" ? { ...c } : c))
        .catch(() => undefined);
    },
    [loadPage, upsert],
  );

  const markRead = useCallback((id: string) => {
    setState((s) => ({ ...s, items: s.items.map((c) => (c.id === id ? { ...c, unreadCount: 0 } : c)) }));
  }, []);

  return { ...state, search, setSearch, unreadOnly, setUnreadOnly, more: () => loadPage(false), apply, markRead };
}

type ListModel = ReturnType<typeof useConversations>;

function initials(name: string): string {
  return name
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((w) => w[0]?.toUpperCase() ?? "")
    .join("");
}

/** Only the rows in view are in the page: ten thousand conversations scroll like ten. */
function ConversationList({ list, activeId }: { list: ListModel; activeId: string | null }) {
  const scroller = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [height, setHeight] = useState(600);

  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const observer = new ResizeObserver(() => setHeight(el.clientHeight));
    observer.observe(el);
    return () => observer.disconnect();
  }, []);

  const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(list.items.length, Math.ceil((scrollTop + height) / ROW_HEIGHT) + OVERSCAN);

  useEffect(() => {
    if (!list.done && !list.loading && !list.error && last >= list.items.length - OVERSCAN) void list.more();
  }, [last, list.items.length, list.done, list.loading, list.error]);

  const onKeyDown = (event: KeyboardEvent) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const target = event.target as HTMLElement;
    const index = Number(target.dataset.index);
    if (Number.isNaN(index)) return;
    event.preventDefault();
    const next = Math.max(0, Math.min(list.items.length - 1, index + (event.key === "ArrowDown" ? 1 : -1)));
    const el = scroller.current;
    if (el) {
      if (next * ROW_HEIGHT < el.scrollTop) el.scrollTop = next * ROW_HEIGHT;
      else if ((next + 1) * ROW_HEIGHT > el.scrollTop + el.clientHeight) el.scrollTop = (next + 1) * ROW_HEIGHT - el.clientHeight;
      setScrollTop(el.scrollTop);
    }
    requestAnimationFrame(() => scroller.current?.querySelector<HTMLElement>(`[data-index="${next}"]`)?.focus());
  };

  return (
    <div class="scroller" ref={scroller} onScroll={(e) => setScrollTop(e.currentTarget.scrollTop)} onKeyDown={onKeyDown}>
      {list.error ? <ErrorBanner error={list.error} /> : null}
      {!list.loading && list.items.length === 0 && !list.error && (
        <p class="empty">{list.search || list.unreadOnly ? "No conversation matches." : "No conversations yet: they arrive as OnlyFans syncs."}</p>
      )}
      <ul role="list" aria-label="Conversations" aria-busy={list.loading} style={{ height: `${list.items.length * ROW_HEIGHT}px`, position: "relative", margin: 0, padding: 0, listStyle: "none" }}>
        {list.items.slice(first, last).map((c, offset) => {
          const index = first + offset;
          const name = c.fan?.displayName || "Fan";
          const unread = (c.unreadCount ?? 0) > 0;
          return (
            <li key={c.id}>
              <a
                class={unread ? "conv unread" : "conv"}
                href={`/inbox/${c.id}`}
                data-index={index}
                aria-current={c.id === activeId ? "true" : undefined}
                style={{ transform: `translateY(${index * ROW_HEIGHT}px)`, top: 0 }}
              >
                <span class="avatar" aria-hidden="true">{initials(name)}</span>
                <span class="body">
                  <span class="name">
                    <span>{name}</span>
                    <span class="muted">{when(c.lastMessageAt)}</span>
                  </span>
                  <span class="preview">{c.lastMessagePreview || " "}</span>
                </span>
                {unread && (
                  <span class="badge">
                    {c.unreadCount}
                    <span class="sr-only"> unread</span>
                  </span>
                )}
              </a>
            </li>
          );
        })}
      </ul>
      {list.loading && <Loading label={list.items.length ? "Loading more…" : "Loading conversations…"} />}
    </div>
  );
}

const STATUS_TEXT: Record<string, string> = {
  queued: "Queued",
  sending: "Sending…",
  sent: "Sent",
  failed: "Not delivered",
  unsent: "Unsent",
  received: "",
};

function Thread({ conversationId, event, onRead }: { conversationId: string; event: InboxEvent | null; onRead: (id: string) => void }) {
  const conversation = useLoad(
    () => ok(api.GET("/api/crm/conversations/{conversation_id}", { params: { path: { conversation_id: conversationId } } })),
    [conversationId],
  );
  const [messages, setMessages] = useState<Message[]>([]); // oldest first
  const [cursor, setCursor] = useState<string | null>(null);
  const [done, setDone] = useState(false);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<unknown>(null);
  const [handoff, setHandoff] = useState<string | null>(null);
  const [suggestionRound, setSuggestionRound] = useState(0);
  const box = useRef<HTMLDivElement>(null);
  const keepFromBottom = useRef<number | null>(null);
  const stickToBottom = useRef(true);

  const loadOlder = useCallback(
    async (first: boolean) => {
      setLoading(true);
      setError(null);
      try {
        const page = await ok(
          api.GET("/api/crm/conversations/{conversation_id}/messages", {
            params: { path: { conversation_id: conversationId }, query: { limit: 30, cursor: first ? undefined : (cursor ?? undefined) } },
          }),
        );
        const el = box.current;
        if (el && !first) keepFromBottom.current = el.scrollHeight - el.scrollTop;
        const older = [...page.messages].reverse();
        setMessages((m) => (first ? older : [...older.filter((o) => !m.some((x) => x.id === o.id)), ...m]));
        setCursor(page.nextCursor);
        setDone(!page.nextCursor);
      } catch (e) {
        setError(e);
      } finally {
        setLoading(false);
      }
    },
    [conversationId, cursor],
  );

  useEffect(() => {
    stickToBottom.current = true;
    void loadOlder(true);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [conversationId]);

  useEffect(() => {
    if ((conversation.data?.unreadCount ?? 0) > 0) {
      void api
        .POST("/api/crm/conversations/{conversation_id}/read", { params: { path: { conversation_id: conversationId } } })
        .then(() => onRead(conversationId));
    }
  }, [conversation.data, conversationId, onRead]);

  // Keeps the view where it was when older messages come in above; follows new ones below.
  useLayoutEffect(() => {
    const el = box.current;
    if (!el) return;
    if (keepFromBottom.current !== null) {
      el.scrollTop = el.scrollHeight - keepFromBottom.current;
      keepFromBottom.current = null;
    } else if (stickToBottom.current) {
      el.scrollTop = el.scrollHeight;
    }
  }, [messages]);

  const onScroll = () => {
    const el = box.current;
    if (!el) return;
    stickToBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
    if (el.scrollTop < 120 && !loading && !done) void loadOlder(false);
  };

  const upsertMessage = useCallback((message: Message) => {
    setMessages((m) => {
      const at = m.findIndex((x) => x.id === message.id);
      if (at >= 0) return m.map((x, i) => (i === at ? message : x));
      return [...m, message].sort((a, b) => (a.createdAt ?? "").localeCompare(b.createdAt ?? ""));
    });
  }, []);

  useEffect(() => {
    if (!event) return;
    const about = event.message?.conversationId ?? event.ai?.conversationId ?? event.messagesRead?.conversationId ?? event.conversation?.id;
    if (about !== conversationId) return;
    if (event.message) {
      upsertMessage(event.message);
      if (event.type === "message.received" && event.message.direction === "in") {
        void api.POST("/api/messages/{message_id}/read", { params: { path: { message_id: event.message.id ?? "" } } });
      }
    }
    if (event.type === "ai.handoff_requested") setHandoff(event.ai?.reason || "the fan needs you");
    if (event.type?.startsWith("ai.")) setSuggestionRound((r) => r + 1);
  }, [event, conversationId, upsertMessage]);

  const fan = conversation.data?.fan;
  const name = fan?.displayName || "Fan";
  return (
    <>
      <div class="thread-head">
        <a class="btn btn-ghost back" href="/inbox">
          ←<span class="sr-only"> Back to the conversations</span>
        </a>
        <span class="avatar" aria-hidden="true">{initials(name)}</span>
        <div class="grow">
          <h2 style={{ margin: 0 }}>{name}</h2>
          {fan && (
            <span class="muted fan-meta">
              {fan.handle ? `@${fan.handle} · ` : ""}spent {money(fan.valueCents)}
            </span>
          )}
        </div>
        {fan?.id && <a href={`/fans/${fan.id}`}>Profile</a>}
      </div>
      {conversation.error ? <ErrorBanner error={conversation.error} /> : null}
      {handoff && (
        <div class="banner banner-warning" role="alert" style={{ margin: "0.5rem 0.75rem 0" }}>
          Needs your attention: the AI handed this conversation to you ({handoff.replace(/_/g, " ")}). Reply yourself.
        </div>
      )}
      <div class="messages" ref={box} onScroll={onScroll} aria-live="polite" aria-label={`Messages with ${name}`} tabIndex={0}>
        {done && messages.length > 0 && <p class="muted" style={{ textAlign: "center" }}>Start of the conversation</p>}
        {loading && <Loading label="Loading messages…" />}
        {error ? (
          <div>
            <ErrorBanner error={error} />
            <Button kind="secondary" onClick={() => void loadOlder(messages.length === 0)}>Try again</Button>
          </div>
        ) : null}
        {!loading && messages.length === 0 && !error && <p class="empty">No messages yet.</p>}
        {messages.map((m) => (
          <MessageBubble key={m.id} message={m} />
        ))}
      </div>
      <SuggestionPanel conversationId={conversationId} round={suggestionRound} onSent={upsertMessage} onHandoff={setHandoff} />
      <Composer conversationId={conversationId} onSent={upsertMessage} />
    </>
  );
}

function MessageBubble({ message }: { message: Message }) {
  const out = message.direction === "out";
  const status = message.deliveryStatus ?? "";
  return (
    <div class={out ? (status === "unsent" ? "msg out unsent" : "msg out") : "msg"}>
      {(message.priceCents ?? 0) > 0 && (
        <div class="ppv">
          PPV {money(message.priceCents)} {message.unlockedAt ? "· unlocked" : "· locked"}
        </div>
      )}
      <div>{message.text}</div>
      {(message.attachments?.length ?? 0) > 0 && <div class="muted">{message.attachments?.length} attachment(s)</div>}
      <div class="meta">
        <span>{when(message.createdAt)}</span>
        {message.senderKind === "ai" && <span>AI</span>}
        {out && status && (
          <span class={status === "failed" ? "failed" : undefined}>
            {STATUS_TEXT[status] ?? status}
            {status === "failed" ? `: ${message.failureReason || "OnlyFans did not take it. Check the connection in Settings"}. Send it again once fixed.` : ""}
            {status === "unsent" ? ": taken back from the fan's chat with the mass message" : ""}
          </span>
        )}
      </div>
    </div>
  );
}

function SuggestionPanel({
  conversationId,
  round,
  onSent,
  onHandoff,
}: {
  conversationId: string;
  round: number;
  onSent: (m: Message) => void;
  onHandoff: (reason: string) => void;
}) {
  const loaded = useLoad(
    () =>
      ok(api.GET("/api/ai/suggestions", { params: { query: { conversationId, status: ["suggested", "handed_off"], limit: 5 } } })),
    [conversationId, round],
  );
  const suggestions = loaded.data?.suggestions ?? [];
  const latest: Suggestion | undefined = suggestions.find((s) => s.status === "suggested");
  const handedOff = suggestions.find((s) => s.status === "handed_off");
  useEffect(() => {
    if (handedOff) onHandoff(handedOff.handoffReason || "the fan needs you");
  }, [handedOff?.id]);
  const [text, setText] = useState("");
  useEffect(() => setText(latest?.text ?? ""), [latest?.id]);
  const accept = useAction(async () => {
    const sent = await ok(
      api.POST("/api/ai/suggestions/{suggestion_id}/accept", { params: { path: { suggestion_id: latest?.id ?? "" } }, body: { text } }),
    );
    const message = (sent as { message?: Message } | undefined)?.message;
    if (message) onSent(message);
    loaded.reload();
  });
  const reject = useAction(async () => {
    await ok(api.POST("/api/ai/suggestions/{suggestion_id}/reject", { params: { path: { suggestion_id: latest?.id ?? "" } } }));
    loaded.reload();
  });
  if (!latest) return null;
  const edited = text.trim() !== (latest.text ?? "").trim();
  return (
    <div class="suggestion" aria-label="Suggested reply" role="region">
      <Field label="AI suggestion" hint="Edit it if you like, then send it or reject it.">
        {(id, describedBy) => <textarea id={id} aria-describedby={describedBy} value={text} onInput={(e) => setText(e.currentTarget.value)} />}
      </Field>
      <ErrorBanner error={accept.error ?? reject.error} />
      <div class="row">
        <Button busy={accept.busy} onClick={() => void accept.run()} disabled={!text.trim()}>
          {edited ? "Send edited reply" : "Accept and send"}
        </Button>
        <Button kind="secondary" busy={reject.busy} onClick={() => void reject.run()}>Reject</Button>
      </div>
    </div>
  );
}

let quickReplies: Promise<QuickReply[]> | null = null;
function loadQuickReplies(): Promise<QuickReply[]> {
  quickReplies ??= ok(api.GET("/api/crm/quick-replies", { params: { query: { limit: 200 } } }))
    .then((page) => (page as { quickReplies?: QuickReply[] }).quickReplies ?? [])
    .catch(() => {
      quickReplies = null;
      return [];
    });
  return quickReplies;
}

function Composer({ conversationId, onSent }: { conversationId: string; onSent: (m: Message) => void }) {
  const [text, setText] = useState("");
  const [price, setPrice] = useState("");
  const [media, setMedia] = useState<string[]>([]);
  const [replies, setReplies] = useState<QuickReply[]>([]);
  const [selected, setSelected] = useState(0);
  const [key, setKey] = useState(newKey);
  useEffect(() => void loadQuickReplies().then(setReplies), []);

  const shortcut = /^\/\S*$/.test(text) ? text : null;
  const matches = useMemo(() => (shortcut ? replies.filter((r) => (r.shortcut ?? "").startsWith(shortcut)).slice(0, 6) : []), [shortcut, replies]);
  useEffect(() => setSelected(0), [shortcut]);

  const send = useAction(async () => {
    const cents = price.trim() ? Math.round(Number(price) * 100) : 0;
    const attachments = media.map((id) => ({ kind: "file" as const, platformMediaId: id, mimeType: "", thumbnailUrl: "", url: "" }));
    const answer = await ok(
      api.POST("/api/messages/reply", { body: { conversationId, fanId: "", text: text.trim(), priceCents: cents, attachments, idempotencyKey: key } }),
    );
    if (answer.message) onSent(answer.message);
    setText("");
    setPrice("");
    setMedia([]);
    setKey(newKey());
  });

  const insert = (reply: QuickReply) => setText(reply.text ?? "");
  const onKeyDown = (e: KeyboardEvent) => {
    if (matches.length) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        setSelected((s) => (s + (e.key === "ArrowDown" ? 1 : matches.length - 1)) % matches.length);
        return;
      }
      if (e.key === "Enter" || e.key === "Tab") {
        e.preventDefault();
        insert(matches[selected]);
        return;
      }
      if (e.key === "Escape") {
        setText("");
        return;
      }
    }
    if (e.key === "Enter" && !e.shiftKey && text.trim()) {
      e.preventDefault();
      void send.run();
    }
  };

  const priceInvalid = price.trim() !== "" && !(Number(price) >= 0);
  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault();
        if (text.trim() && !priceInvalid) void send.run();
      }}
    >
      <ErrorBanner error={send.error} />
      <label for="reply-text" class="sr-only">Reply</label>
      <textarea
        id="reply-text"
        value={text}
        placeholder="Write a reply; type / for quick replies"
        onInput={(e) => setText(e.currentTarget.value)}
        onKeyDown={onKeyDown}
        aria-controls={matches.length ? "quick-replies" : undefined}
        aria-autocomplete="list"
        aria-activedescendant={matches.length ? `quick-${selected}` : undefined}
      />
      {matches.length > 0 && (
        <ul class="quick" id="quick-replies" role="listbox" aria-label="Quick replies">
          {matches.map((r, i) => (
            <li key={r.id} id={`quick-${i}`} role="option" aria-selected={i === selected} onMouseDown={(e) => { e.preventDefault(); insert(r); }}>
              <strong>{r.shortcut}</strong> <span class="muted">{r.text}</span>
            </li>
          ))}
        </ul>
      )}
      <div class="row" style={{ marginTop: "0.5rem" }}>
        <label class="row" for="reply-price">
          <span>PPV price ($)</span>
          <input id="reply-price" class="price" type="number" min="0" step="0.01" inputMode="decimal" value={price} placeholder="Free" aria-invalid={priceInvalid || undefined} onInput={(e) => setPrice(e.currentTarget.value)} />
        </label>
        <span class="grow" />
        <Button type="submit" busy={send.busy} disabled={!text.trim() || priceInvalid}>
          {Number(price) > 0 ? `Send for ${money(Math.round(Number(price) * 100))}` : "Send"}
        </Button>
      </div>
      {priceInvalid && <p class="field-error">Enter a price such as 9.99, or leave it empty to send for free.</p>}
      {(Number(price) > 0 || media.length > 0) && (
        <div style={{ marginTop: "0.5rem" }}>
          <MediaPicker label="Media from your vault" selected={media} onChange={setMedia} />
          <p class="hint">A paid message unlocks the media attached to it.</p>
        </div>
      )}
    </form>
  );
}

