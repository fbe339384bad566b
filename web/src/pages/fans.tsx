// Fans: filters, segments with a live count of the fans they match, bulk tags, and a fan's
// profile with purchases, notes and tags.
import { useEffect, useState } from "preact/hooks";
import { api, money, ok, when, type Fan, type FanList, type Schemas } from "../api/client";
import { Button, ErrorBanner, Field, fieldError, Input, Loading, Notice, PageTitle, useAction, useLoad } from "../ui/kit";

type Segment = Schemas["SegmentFilterBody"];
type SubscriptionState = NonNullable<Segment["subscriptionStates"]>[number];
type Sort = "-lastMessageAt" | "-valueCents" | "displayName" | "-createdAt";

interface Filters {
  search: string;
  state: "" | SubscriptionState;
  minSpend: string;
  activeDays: string;
  tag: string;
  sort: Sort;
}

const EMPTY: Filters = { search: "", state: "", minSpend: "", activeDays: "", tag: "", sort: "-lastMessageAt" };

function segmentOf(f: Filters): Segment {
  return {
    subscriptionStates: f.state ? [f.state] : [],
    minValueCents: f.minSpend.trim() ? Math.round(Number(f.minSpend) * 100) : null,
    lastActiveWithinDays: f.activeDays.trim() ? Number(f.activeDays) : null,
    tagsAny: f.tag.trim() ? [f.tag.trim()] : [],
  };
}

function filtersOf(segment: Schemas["huntaze.crm.v1.SegmentFilter"] | null | undefined): Filters {
  const state = segment?.subscriptionStates?.[0];
  return {
    ...EMPTY,
    state: state && state !== "unspecified" ? state : "",
    minSpend: segment?.minValueCents ? String(segment.minValueCents / 100) : "",
    activeDays: segment?.lastActiveWithinDays ? String(segment.lastActiveWithinDays) : "",
    tag: segment?.tagsAny?.[0] ?? "",
  };
}

export function Fans() {
  const [filters, setFilters] = useState<Filters>(EMPTY);
  const [applied, setApplied] = useState<Filters>(EMPTY);
  const [fans, setFans] = useState<Fan[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<unknown>(null);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [count, setCount] = useState<number | null>(null);
  const lists = useLoad(() => ok(api.GET("/api/crm/lists", { params: { query: { limit: 100 } } })));

  const load = async (f: Filters, after: string | null) => {
    setLoading(true);
    setError(null);
    try {
      const seg = segmentOf(f);
      const page = await ok(
        api.GET("/api/crm/fans", {
          params: {
            query: {
              limit: 50,
              cursor: after ?? undefined,
              search: f.search.trim() || undefined,
              sort: f.sort,
              subscriptionStates: seg.subscriptionStates?.length ? seg.subscriptionStates : undefined,
              minValueCents: seg.minValueCents ?? undefined,
              lastActiveWithinDays: seg.lastActiveWithinDays ?? undefined,
              tagsAny: seg.tagsAny?.length ? seg.tagsAny : undefined,
            },
          },
        }),
      );
      setFans((old) => (after ? [...old, ...page.fans] : page.fans));
      setCursor(page.nextCursor);
    } catch (e) {
      setError(e);
    } finally {
      setLoading(false);
    }
  };

  useEffect(() => {
    setSelected(new Set());
    void load(applied, null);
  }, [applied]);

  // The segment's live count, as the filters are edited.
  useEffect(() => {
    const timer = window.setTimeout(() => {
      ok(api.POST("/api/crm/lists/preview", { body: { segment: segmentOf(filters) } }))
        .then((answer) => setCount(Number(answer.fanCount ?? 0)))
        .catch(() => setCount(null));
    }, 250);
    return () => window.clearTimeout(timer);
  }, [filters.state, filters.minSpend, filters.activeDays, filters.tag]);

  const set = (patch: Partial<Filters>) => setFilters((f) => ({ ...f, ...patch }));
  return (
    <section class="page">
      <PageTitle>Fans</PageTitle>
      <Segments lists={lists.data?.lists ?? []} loading={lists.loading} error={lists.error} onPick={(l) => {
        const next = filtersOf(l.segment);
        setFilters(next);
        setApplied(next);
      }} />
      <form
        class="card"
        aria-label="Filters"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied(filters);
        }}
      >
        <div class="filters">
          <Input label="Search" type="search" value={filters.search} onValue={(v) => set({ search: v })} placeholder="Name or handle" />
          <Field label="Subscription">
            {(id) => (
              <select id={id} value={filters.state} onChange={(e) => set({ state: e.currentTarget.value as Filters["state"] })}>
                <option value="">Any</option>
                <option value="active">Active</option>
                <option value="expired">Expired</option>
                <option value="cancelled">Cancelled</option>
                <option value="none">Never subscribed</option>
              </select>
            )}
          </Field>
          <Input label="Spent at least ($)" type="number" min="0" inputMode="decimal" value={filters.minSpend} onValue={(v) => set({ minSpend: v })} />
          <Input label="Active within (days)" type="number" min="1" inputMode="numeric" value={filters.activeDays} onValue={(v) => set({ activeDays: v })} />
          <Input label="Tag" value={filters.tag} onValue={(v) => set({ tag: v })} />
          <Field label="Sort by">
            {(id) => (
              <select id={id} value={filters.sort} onChange={(e) => set({ sort: e.currentTarget.value as Sort })}>
                <option value="-lastMessageAt">Latest message</option>
                <option value="-valueCents">Highest spend</option>
                <option value="displayName">Name</option>
                <option value="-createdAt">Newest fans</option>
              </select>
            )}
          </Field>
        </div>
        <div class="row">
          <Button type="submit">Show fans</Button>
          <span role="status" class="muted">{count === null ? "" : `${count} fan${count === 1 ? "" : "s"} match these filters`}</span>
          <span class="grow" />
          <SaveSegment segment={segmentOf(filters)} onSaved={lists.reload} />
        </div>
      </form>
      <BulkTags ids={[...selected]} onDone={() => void load(applied, null)} />
      <ErrorBanner error={error} />
      <div class="table-wrap">
        <table>
          <caption class="sr-only">Fans</caption>
          <thead>
            <tr>
              <th scope="col">
                <span class="sr-only">Select</span>
              </th>
              <th scope="col">Fan</th>
              <th scope="col">Subscription</th>
              <th scope="col">Spent</th>
              <th scope="col">Last message</th>
              <th scope="col">Tags</th>
            </tr>
          </thead>
          <tbody>
            {fans.map((fan) => (
              <tr key={fan.id}>
                <td>
                  <input
                    type="checkbox"
                    aria-label={`Select ${fan.displayName}`}
                    checked={selected.has(fan.id ?? "")}
                    onChange={(e) => {
                      const next = new Set(selected);
                      if (e.currentTarget.checked) next.add(fan.id ?? "");
                      else next.delete(fan.id ?? "");
                      setSelected(next);
                    }}
                  />
                </td>
                <td>
                  <a href={`/fans/${fan.id}`}>{fan.displayName || "Fan"}</a>
                  {fan.handle && <div class="muted">@{fan.handle}</div>}
                </td>
                <td>{fan.subscriptionState}</td>
                <td>{money(fan.valueCents)}</td>
                <td>{when(fan.lastMessageAt)}</td>
                <td>
                  {(fan.tags ?? []).map((t) => (
                    <span class="tag" key={t}>{t}</span>
                  ))}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {!loading && fans.length === 0 && !error && <p class="empty">No fan matches these filters.</p>}
      </div>
      {loading && <Loading label="Loading fans…" />}
      {cursor && !loading && (
        <Button kind="secondary" onClick={() => void load(applied, cursor)}>Show more fans</Button>
      )}
    </section>
  );
}

function Segments({ lists, loading, error, onPick }: { lists: FanList[]; loading: boolean; error: unknown; onPick: (l: FanList) => void }) {
  if (loading && lists.length === 0) return <Loading label="Loading segments…" />;
  if (error) return <ErrorBanner error={error} />;
  if (lists.length === 0) return null;
  return (
    <nav aria-label="Segments" class="row" style={{ marginBottom: "1rem" }}>
      {lists.map((l) => (
        <button type="button" key={l.id} class="btn btn-secondary btn-small" onClick={() => onPick(l)} disabled={l.kind !== "dynamic"} title={l.kind === "dynamic" ? undefined : "A hand-picked list"}>
          {l.name} <span class="badge">{l.memberCount ?? 0}</span>
        </button>
      ))}
    </nav>
  );
}

function SaveSegment({ segment, onSaved }: { segment: Segment; onSaved: () => void }) {
  const [open, setOpen] = useState(false);
  const [name, setName] = useState("");
  const save = useAction(async () => {
    await ok(api.POST("/api/crm/lists", { body: { name, kind: "dynamic", segment } }));
    setOpen(false);
    setName("");
    onSaved();
  });
  if (!open) return <Button kind="secondary" onClick={() => setOpen(true)}>Save as segment</Button>;
  return (
    <div class="row">
      <ErrorBanner error={save.error} />
      <Input label="Segment name" value={name} onValue={setName} error={fieldError(save.error, "name")} />
      <Button busy={save.busy} disabled={!name.trim()} onClick={() => void save.run()}>Save segment</Button>
      <Button kind="ghost" onClick={() => setOpen(false)}>Cancel</Button>
    </div>
  );
}

function BulkTags({ ids, onDone }: { ids: string[]; onDone: () => void }) {
  const [tag, setTag] = useState("");
  const apply = useAction(async (remove: boolean) => {
    await ok(api.POST("/api/crm/fans/tags", { body: { fanIds: ids, addTags: remove ? [] : [tag.trim()], removeTags: remove ? [tag.trim()] : [] } }));
    setTag("");
    onDone();
  });
  if (ids.length === 0) return null;
  return (
    <div class="card row" role="group" aria-label="Tag the selected fans">
      <span>{ids.length} selected</span>
      <Input label="Tag" value={tag} onValue={setTag} />
      <Button busy={apply.busy} disabled={!tag.trim()} onClick={() => void apply.run(false)}>Add tag</Button>
      <Button kind="secondary" busy={apply.busy} disabled={!tag.trim()} onClick={() => void apply.run(true)}>Remove tag</Button>
      <ErrorBanner error={apply.error} />
    </div>
  );
}

export function FanProfile({ fanId }: { fanId: string }) {
  const fan = useLoad(() => ok(api.GET("/api/crm/fans/{fan_id}", { params: { path: { fan_id: fanId } } })), [fanId]);
  const purchases = useLoad(
    () => ok(api.GET("/api/crm/fans/{fan_id}/purchases", { params: { path: { fan_id: fanId }, query: { limit: 50 } } })),
    [fanId],
  );
  if (fan.loading && !fan.data) return <section class="page"><Loading label="Loading the fan…" /></section>;
  if (fan.error || !fan.data) return <section class="page"><ErrorBanner error={fan.error} /><a href="/fans">Back to fans</a></section>;
  const f = fan.data;
  return (
    <section class="page">
      <a href="/fans">← Fans</a>
      <PageTitle>{f.displayName || "Fan"}</PageTitle>
      <div class="stats">
        <div class="stat"><div class="muted">Spent</div><div class="value">{money(f.valueCents)}</div></div>
        <div class="stat"><div class="muted">Subscription</div><div class="value">{f.subscriptionState}</div></div>
        <div class="stat"><div class="muted">Subscribed</div><div class="value">{when(f.subscribedAt) || "—"}</div></div>
        <div class="stat"><div class="muted">Last message</div><div class="value">{when(f.lastMessageAt) || "—"}</div></div>
      </div>
      <div class="two">
        <div>
          <NotesAndTags fan={f} onSaved={fan.set} />
        </div>
        <div class="card">
          <h2>Purchases</h2>
          {purchases.loading && <Loading label="Loading purchases…" />}
          <ErrorBanner error={purchases.error} />
          {purchases.data && purchases.data.purchases.length === 0 && <p class="empty">No purchase yet.</p>}
          {purchases.data && purchases.data.purchases.length > 0 && (
            <table>
              <thead>
                <tr><th scope="col">When</th><th scope="col">What</th><th scope="col">Amount</th></tr>
              </thead>
              <tbody>
                {purchases.data.purchases.map((p) => (
                  <tr key={p.id}>
                    <td>{when(p.occurredAt)}</td>
                    <td>{(p.kind ?? "").replace(/_/g, " ")}</td>
                    <td>{money(p.amountCents, p.currency || "USD")}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      </div>
    </section>
  );
}

function NotesAndTags({ fan, onSaved }: { fan: Fan; onSaved: (f: Fan) => void }) {
  const [notes, setNotes] = useState(fan.notes ?? "");
  const [tags, setTags] = useState<string[]>(fan.tags ?? []);
  const [tag, setTag] = useState("");
  const [saved, setSaved] = useState(false);
  const save = useAction(async (nextTags: string[] = tags) => {
    const updated = await ok(api.PATCH("/api/crm/fans/{fan_id}", { params: { path: { fan_id: fan.id ?? "" } }, body: { notes, tags: nextTags } }));
    onSaved(updated as Fan);
    setSaved(true);
  });
  const setAndSave = (next: string[]) => {
    setTags(next);
    void save.run(next);
  };
  return (
    <div class="card">
      <h2>Notes and tags</h2>
      <ErrorBanner error={save.error} />
      {tags.length === 0 && <p class="muted">No tags yet.</p>}
      <div class="row" role={tags.length ? "list" : undefined} aria-label={tags.length ? "Tags" : undefined} style={{ marginBottom: "0.5rem" }}>
        {tags.map((t) => (
          <span class="tag" role="listitem" key={t}>
            {t}
            <button type="button" class="link" aria-label={`Remove tag ${t}`} onClick={() => setAndSave(tags.filter((x) => x !== t))}>×</button>
          </span>
        ))}
      </div>
      <form
        class="row"
        onSubmit={(e) => {
          e.preventDefault();
          const t = tag.trim();
          if (t && !tags.includes(t)) setAndSave([...tags, t]);
          setTag("");
        }}
      >
        <Input label="New tag" value={tag} onValue={setTag} error={fieldError(save.error, "tags")} />
        <Button type="submit" kind="secondary" disabled={!tag.trim()}>Add tag</Button>
      </form>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          setSaved(false);
          void save.run();
        }}
      >
        <Field label="Notes" hint="Only you see these." error={fieldError(save.error, "notes")}>
          {(id, describedBy) => <textarea id={id} aria-describedby={describedBy} value={notes} onInput={(e) => setNotes(e.currentTarget.value)} />}
        </Field>
        {saved && <Notice kind="success">Saved.</Notice>}
        <Button type="submit" busy={save.busy}>Save notes</Button>
      </form>
    </div>
  );
}
