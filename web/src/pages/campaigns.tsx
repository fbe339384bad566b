// Campaigns: the list, a new campaign (from a template of the creator's niche or from scratch,
// to a list or saved segment, with variants and a holdout), scheduling, pause / resume / cancel,
// and the results with the lift over the holdout and its interval.
import { useEffect, useState } from "preact/hooks";
import { api, money, ok, when, type Campaign, type CampaignMetrics, type Comparison, type Schemas, type Template, type VariantMetrics } from "../api/client";
import { navigate } from "../router";
import { num, percent } from "../ui/figures";
import { Button, ErrorBanner, Field, fieldError, Input, Loading, Notice, PageTitle, useAction, useLoad } from "../ui/kit";

type Niche = NonNullable<Template["niche"]>;
type VariantIn = Schemas["VariantIn"];
type Kind = Exclude<Schemas["CreateCampaignBody"]["kind"], "sequence">;

const KINDS: { id: Kind; label: string }[] = [
  { id: "one_off", label: "One message to a list or segment" },
  { id: "welcome", label: "Welcome each new subscriber" },
  { id: "reengagement", label: "Win back expired or silent fans" },
];

const NICHES: { id: Exclude<Niche, "unspecified">; label: string }[] = [
  { id: "general", label: "General" },
  { id: "fitness", label: "Fitness" },
  { id: "gaming", label: "Gaming" },
  { id: "adult", label: "Adult" },
  { id: "fashion", label: "Fashion" },
];

const STATUS_LABELS: Record<string, string> = {
  draft: "Draft",
  scheduled: "Scheduled",
  running: "Sending",
  paused: "Paused",
  completed: "Completed",
  cancelled: "Cancelled",
};

function StatusBadge({ status }: { status: Campaign["status"] }) {
  return <span class={`status status-${status ?? "draft"}`}>{STATUS_LABELS[status ?? "draft"] ?? status}</span>;
}

export function Campaigns() {
  const campaigns = useLoad(() => ok(api.GET("/api/campaigns", { params: { query: { limit: 100 } } })));
  const list = campaigns.data?.campaigns ?? [];
  return (
    <section class="page">
      <div class="row">
        <PageTitle>Campaigns</PageTitle>
        <span class="grow" />
        <a class="btn btn-primary" href="/campaigns/new">New campaign</a>
      </div>
      {campaigns.loading && !campaigns.data && <Loading label="Loading campaigns…" />}
      <ErrorBanner error={campaigns.error} />
      {campaigns.data && list.length === 0 && (
        <p class="empty">No campaign yet. <a href="/campaigns/new">Start one from a template of your niche</a>.</p>
      )}
      {list.length > 0 && (
        <div class="table-wrap" tabIndex={0} role="region" aria-label="Campaigns, scrollable">
          <table>
            <caption class="sr-only">Campaigns</caption>
            <thead>
              <tr>
                <th scope="col">Campaign</th>
                <th scope="col">Status</th>
                <th scope="col">Audience</th>
                <th scope="col">Holdout</th>
                <th scope="col">Sends</th>
              </tr>
            </thead>
            <tbody>
              {list.map((c) => (
                <tr key={c.id}>
                  <td><a href={`/campaigns/${c.id}`}>{c.name}</a></td>
                  <td><StatusBadge status={c.status} /></td>
                  <td>{num(c.audienceCount)}</td>
                  <td>{c.holdoutPercent ?? 0}%</td>
                  <td>{when(c.sendAt) || "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

interface VariantDraft {
  text: string;
  price: string;
  media: string;
}

const EMPTY_VARIANT: VariantDraft = { text: "", price: "", media: "" };
const KEYS = ["A", "B", "C", "D"];
const LIVE_REFRESH_MS = 5000;

function variantsIn(drafts: VariantDraft[]): VariantIn[] {
  return drafts.map((d, i) => ({
    key: KEYS[i],
    text: d.text,
    priceCents: d.price.trim() ? Math.round(Number(d.price) * 100) : 0,
    weight: 1,
    platformMediaIds: d.media.split(",").map((m) => m.trim()).filter(Boolean),
  }));
}

export function NewCampaign() {
  const lists = useLoad(() => ok(api.GET("/api/crm/lists", { params: { query: { limit: 100 } } })));
  const [niche, setNiche] = useState<Exclude<Niche, "unspecified">>("general");
  const templates = useLoad(() => ok(api.GET("/api/campaigns/templates", { params: { query: { niche } } })), [niche]);
  const [name, setName] = useState("");
  const [kind, setKind] = useState<Kind>("one_off");
  const [listId, setListId] = useState("");
  const [silentDays, setSilentDays] = useState("30");
  const [holdout, setHoldout] = useState("10");
  const [templateId, setTemplateId] = useState("");
  const [variants, setVariants] = useState<VariantDraft[]>([{ ...EMPTY_VARIANT }]);

  const applyTemplate = (t: Template) => {
    setTemplateId(t.id ?? "");
    if (!name.trim()) setName(t.name ?? "");
    setVariants((old) => [{ ...old[0], text: t.text ?? "", price: num(t.priceCents) ? String(num(t.priceCents) / 100) : "" }, ...old.slice(1)]);
  };
  const setVariant = (index: number, patch: Partial<VariantDraft>) =>
    setVariants((old) => old.map((v, i) => (i === index ? { ...v, ...patch } : v)));

  const create = useAction(async () => {
    const created = await ok(
      api.POST("/api/campaigns", {
        body: {
          name,
          kind,
          listId: kind === "welcome" ? "" : listId,
          silentForDays: kind === "reengagement" && !listId && silentDays.trim() ? Number(silentDays) : 0,
          holdoutPercent: holdout.trim() ? Number(holdout) : 0,
          attributionWindowHours: 0,
          timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "",
          templateId,
          variants: variantsIn(variants),
        },
      }),
    );
    navigate(`/campaigns/${created.id}`);
  });

  const audiences = lists.data?.lists ?? [];
  return (
    <section class="page">
      <a href="/campaigns">← Campaigns</a>
      <PageTitle>New campaign</PageTitle>
      <div class="two">
        <form
          class="card"
          aria-label="Campaign"
          onSubmit={(e) => {
            e.preventDefault();
            void create.run();
          }}
        >
          <ErrorBanner error={create.error} />
          <Input label="Campaign name" value={name} onValue={setName} error={fieldError(create.error, "name")} required />
          <Field label="Kind">
            {(id) => (
              <select id={id} value={kind} onChange={(e) => setKind(e.currentTarget.value as Kind)}>
                {KINDS.map((k) => <option key={k.id} value={k.id}>{k.label}</option>)}
              </select>
            )}
          </Field>
          {kind !== "welcome" && (
            <Field
              label="Audience"
              hint={kind === "reengagement" ? "Optional: without one, fans whose subscription ended or who went silent." : "A list or a saved segment of your fans (make one on the Fans page)."}
              error={fieldError(create.error, "listId")}
            >
              {(id, describedBy) =>
                lists.loading && !lists.data ? (
                  <select id={id} aria-describedby={describedBy} disabled><option>Loading your lists…</option></select>
                ) : (
                  <select id={id} aria-describedby={describedBy} value={listId} onChange={(e) => setListId(e.currentTarget.value)} required={kind === "one_off"}>
                    <option value="">{kind === "reengagement" ? "Expired or silent fans" : "Choose an audience"}</option>
                    {audiences.map((l) => (
                      <option key={l.id} value={l.id}>
                        {l.name} ({num(l.memberCount)} fans{l.kind === "dynamic" ? ", segment" : ""})
                      </option>
                    ))}
                  </select>
                )
              }
            </Field>
          )}
          {kind === "reengagement" && !listId && (
            <Input label="Silent for (days)" type="number" min="1" inputMode="numeric" value={silentDays} onValue={setSilentDays} error={fieldError(create.error, "silentForDays")} />
          )}
          <ErrorBanner error={lists.error} />
          {variants.map((v, i) => (
            <fieldset key={KEYS[i]}>
              <legend>{variants.length > 1 ? `Variant ${KEYS[i]}` : "Message"}</legend>
              <Field label={`Text (${KEYS[i]})`} hint="{name} becomes the fan's first name." error={fieldError(create.error, `variants[${i}].text`)}>
                {(id, describedBy) => (
                  <textarea id={id} aria-describedby={describedBy} value={v.text} onInput={(e) => setVariant(i, { text: e.currentTarget.value })} />
                )}
              </Field>
              <Input label={`PPV price in $ (${KEYS[i]})`} type="number" min="0" step="0.01" inputMode="decimal" value={v.price} onValue={(p) => setVariant(i, { price: p })} hint="Empty for a free message." />
              <Input label={`Media from your vault (${KEYS[i]})`} value={v.media} onValue={(m) => setVariant(i, { media: m })} hint="Media ids, separated by commas; a PPV message needs one." />
              {i > 0 && (
                <Button kind="ghost" onClick={() => setVariants((old) => old.filter((_, j) => j !== i))}>Remove variant {KEYS[i]}</Button>
              )}
            </fieldset>
          ))}
          {variants.length < KEYS.length && (
            <Button kind="secondary" onClick={() => setVariants((old) => [...old, { ...EMPTY_VARIANT }])}>Add a variant to test</Button>
          )}
          <Input
            label="Holdout (%)"
            type="number"
            min="0"
            max="50"
            inputMode="numeric"
            value={holdout}
            onValue={setHoldout}
            hint="Fans drawn at random and not sent to, to measure what the campaign adds."
            error={fieldError(create.error, "holdoutPercent")}
          />
          <Button type="submit" busy={create.busy} disabled={!name.trim() || (kind === "one_off" && !listId)}>Create draft</Button>
        </form>
        <div class="card">
          <h2>Templates</h2>
          <Field label="Niche">
            {(id) => (
              <select id={id} value={niche} onChange={(e) => setNiche(e.currentTarget.value as typeof niche)}>
                {NICHES.map((n) => <option key={n.id} value={n.id}>{n.label}</option>)}
              </select>
            )}
          </Field>
          {templates.loading && !templates.data && <Loading label="Loading templates…" />}
          <ErrorBanner error={templates.error} />
          <ul class="templates">
            {(templates.data?.templates ?? []).map((t) => (
              <li key={t.id} class={t.id === templateId ? "picked" : undefined}>
                <h3>{t.name}</h3>
                <p>{t.text}</p>
                <p class="muted">
                  {num(t.priceCents) ? `PPV ${money(num(t.priceCents))}` : "Free message"}
                  {num(t.results?.campaigns) > 0 && ` · ${num(t.results?.campaigns)} campaigns, ${percent((t.results?.conversion ?? 0) * 100, 1)} bought`}
                </p>
                <Button kind="secondary" class="btn-small" onClick={() => applyTemplate(t)} aria-pressed={t.id === templateId}>
                  Use “{t.name}”
                </Button>
              </li>
            ))}
          </ul>
        </div>
      </div>
    </section>
  );
}

export function CampaignPage({ campaignId }: { campaignId: string }) {
  const campaign = useLoad(() => ok(api.GET("/api/campaigns/{campaign_id}", { params: { path: { campaign_id: campaignId } } })), [campaignId]);
  const metrics = useLoad(
    () => ok(api.GET("/api/campaigns/{campaign_id}/metrics", { params: { path: { campaign_id: campaignId } } })),
    [campaignId],
  );
  const [sendAt, setSendAt] = useState("");
  // While sends are due or being made, the status and the results follow them.
  const live = campaign.data?.status === "scheduled" || campaign.data?.status === "running";
  useEffect(() => {
    if (!live) return;
    const timer = window.setInterval(() => {
      campaign.reload();
      metrics.reload();
    }, LIVE_REFRESH_MS);
    return () => window.clearInterval(timer);
  }, [live]);
  const act = useAction(async (what: "schedule" | "pause" | "resume" | "cancel") => {
    const path = { campaign_id: campaignId };
    let updated: Campaign;
    if (what === "schedule") updated = await ok(api.POST("/api/campaigns/{campaign_id}/schedule", { params: { path }, body: { sendAt } }));
    else if (what === "pause") updated = await ok(api.POST("/api/campaigns/{campaign_id}/pause", { params: { path } }));
    else if (what === "resume") updated = await ok(api.POST("/api/campaigns/{campaign_id}/resume", { params: { path } }));
    else updated = await ok(api.POST("/api/campaigns/{campaign_id}/cancel", { params: { path } }));
    campaign.set(updated);
    metrics.reload();
  });

  if (campaign.loading && !campaign.data) return <section class="page"><Loading label="Loading the campaign…" /></section>;
  if (campaign.error || !campaign.data) {
    return (
      <section class="page">
        <PageTitle>Campaign</PageTitle>
        <ErrorBanner error={campaign.error} />
        <a href="/campaigns">Back to campaigns</a>
      </section>
    );
  }
  const c = campaign.data;
  const status = c.status ?? "draft";
  return (
    <section class="page">
      <a href="/campaigns">← Campaigns</a>
      <PageTitle>{c.name || "Campaign"}</PageTitle>
      <p class="row">
        <StatusBadge status={status} />
        {c.sendAt && <span class="muted">Sends from {new Date(c.sendAt).toLocaleString()}</span>}
        <span class="muted">Holdout {c.holdoutPercent ?? 0}%</span>
      </p>
      <ErrorBanner error={act.error} />
      <div class="card">
        <h2>Sending</h2>
        {status === "draft" && (
          <form
            class="row"
            onSubmit={(e) => {
              e.preventDefault();
              void act.run("schedule");
            }}
          >
            <Input label="Send at" type="datetime-local" value={sendAt} onValue={setSendAt} hint={`Empty: now. Your time zone: ${c.timezone || "UTC"}.`} error={fieldError(act.error, "sendAt")} />
            <Button type="submit" busy={act.busy}>{sendAt ? "Schedule" : "Send now"}</Button>
          </form>
        )}
        <div class="row">
          {(status === "scheduled" || status === "running") && <Button kind="secondary" busy={act.busy} onClick={() => void act.run("pause")}>Pause</Button>}
          {status === "paused" && <Button busy={act.busy} onClick={() => void act.run("resume")}>Resume</Button>}
          {(status === "scheduled" || status === "running" || status === "paused") && (
            <ConfirmCancel busy={act.busy} onConfirm={() => void act.run("cancel")} />
          )}
          {(status === "completed" || status === "cancelled") && <p class="muted">This campaign is over{c.completedAt ? `, since ${when(c.completedAt)}` : ""}.</p>}
        </div>
        <h3>Messages</h3>
        <ul class="variants">
          {(c.variants ?? []).map((v) => (
            <li key={v.key}>
              <strong>{v.key}</strong> {v.text} {num(v.priceCents) > 0 && <span class="ppv">PPV {money(num(v.priceCents))}</span>}
            </li>
          ))}
        </ul>
      </div>
      <div class="card">
        <div class="row">
          <h2>Results</h2>
          <span class="grow" />
          <Button
            kind="ghost"
            class="btn-small"
            busy={metrics.loading}
            onClick={() => {
              campaign.reload();
              metrics.reload();
            }}
          >
            Refresh results
          </Button>
        </div>
        {metrics.loading && !metrics.data && <Loading label="Loading results…" />}
        <ErrorBanner error={metrics.error} />
        {metrics.data && (status === "draft" ? <p class="muted">Results appear once the campaign is scheduled.</p> : <Results metrics={metrics.data} />)}
      </div>
    </section>
  );
}

/** Cancelling is for good: the button asks once more, in the page (no browser dialog). */
function ConfirmCancel({ busy, onConfirm }: { busy: boolean; onConfirm: () => void }) {
  const [asking, setAsking] = useState(false);
  if (!asking) return <Button kind="danger" busy={busy} onClick={() => setAsking(true)}>Cancel campaign</Button>;
  return (
    <div class="row" role="group" aria-label="Cancel the campaign">
      <span>Messages not yet sent will never be sent.</span>
      <Button kind="danger" busy={busy} onClick={onConfirm}>Yes, cancel it</Button>
      <Button kind="ghost" onClick={() => setAsking(false)}>Keep it</Button>
    </div>
  );
}

function rate(value: number | undefined): string {
  return percent((value ?? 0) * 100, 1);
}

function Results({ metrics }: { metrics: CampaignMetrics }) {
  const rows: VariantMetrics[] = [...(metrics.variants ?? []), ...(metrics.total ? [{ ...metrics.total, key: "" }] : [])];
  return (
    <>
      <div class="stats">
        <div class="stat"><div class="muted">Audience</div><div class="value">{num(metrics.audience)}</div><div class="detail">{num(metrics.excluded)} left out by exclusions</div></div>
        <div class="stat"><div class="muted">Sent to</div><div class="value">{num(metrics.total?.recipients)}</div><div class="detail">{num(metrics.total?.sent)} delivered, {num(metrics.total?.pending)} to send</div></div>
        <div class="stat"><div class="muted">Revenue</div><div class="value">{money(num(metrics.total?.revenueCents))}</div><div class="detail">{num(metrics.total?.purchases)} purchases</div></div>
        <div class="stat"><div class="muted">Holdout</div><div class="value">{num(metrics.holdout)}</div><div class="detail">{rate(metrics.holdoutConversion)} bought anyway</div></div>
      </div>
      {metrics.lift ? <Lift comparison={metrics.lift} title="Lift over the holdout" /> : <p class="muted">No holdout: the lift cannot be measured.</p>}
      {(metrics.variantComparisons ?? []).map((c) => <Lift key={c.label} comparison={c} title={`Variants: ${c.label}`} />)}
      {/* Wider than a phone: the region scrolls, so it takes the keyboard's focus too. */}
      <div class="table-wrap" tabIndex={0} role="region" aria-label="Results per variant, scrollable">
        <table>
          <caption class="sr-only">Results per variant</caption>
          <thead>
            <tr>
              <th scope="col">Variant</th>
              <th scope="col">Recipients</th>
              <th scope="col">Sent</th>
              <th scope="col">Failed</th>
              <th scope="col">Skipped</th>
              <th scope="col">Pending</th>
              <th scope="col">Bought</th>
              <th scope="col">Revenue</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((v) => (
              <tr key={v.key || "total"}>
                <th scope="row">{v.key || "All"}</th>
                <td>{num(v.recipients)}</td>
                <td>{num(v.sent)}</td>
                <td>{num(v.failed)}</td>
                <td>{num(v.skippedBudget) + num(v.skippedOther)}</td>
                <td>{num(v.pending)}</td>
                <td>{num(v.converted)} ({rate(v.conversion)})</td>
                <td>{money(num(v.revenueCents))}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {metrics.computedAt && <p class="muted">Computed {new Date(metrics.computedAt).toLocaleString()}.</p>}
    </>
  );
}

function points(value: number | undefined): string {
  const v = (value ?? 0) * 100;
  return `${v > 0 ? "+" : v < 0 ? "−" : ""}${Math.abs(v).toFixed(1)} pts`;
}

function Lift({ comparison, title }: { comparison: Comparison; title: string }) {
  return (
    <div class={comparison.significant ? "lift significant" : "lift"} role="group" aria-label={title}>
      <h3>{title}</h3>
      <p class="value">{points(comparison.difference)}</p>
      <p>
        95% interval {points(comparison.interval?.low)} to {points(comparison.interval?.high)} · p = {(comparison.pValue ?? 1).toFixed(3)}
      </p>
      {comparison.significant ? <Notice kind="success">{comparison.verdict}</Notice> : <Notice kind="warning">{comparison.verdict || "Not significant: the difference may be chance."}</Notice>}
    </div>
  );
}
