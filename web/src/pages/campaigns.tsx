// Campaigns: the list, a new campaign (from a template of the creator's niche or from scratch,
// to a list or saved segment, with variants and a holdout, or a sequence of follow-ups),
// scheduling, pause / resume / cancel, deleting a draft, the results with the lift over the
// holdout and its interval; and the templates, with what they earned, to edit.
import { useEffect, useState } from "preact/hooks";
import { api, money, ok, when, type Campaign, type CampaignMetrics, type Comparison, type Schemas, type Step, type Template, type VariantMetrics } from "../api/client";
import { navigate } from "../router";
import { num, percent } from "../ui/figures";
import { Button, ErrorBanner, Field, fieldError, Input, Loading, Notice, PageTitle, useAction, useLoad } from "../ui/kit";
import { MediaPicker } from "../ui/media";

type Niche = NonNullable<Template["niche"]>;
type VariantIn = Schemas["VariantIn"];
type StepIn = Schemas["StepIn"];
type Kind = Schemas["CreateCampaignBody"]["kind"];

const KINDS: { id: Kind; label: string }[] = [
  { id: "one_off", label: "One message to a list or segment" },
  { id: "sequence", label: "A message, then follow-ups until the fan replies or buys" },
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
        <a class="btn btn-secondary" href="/campaigns/templates">Templates</a>
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
  media: string[];
}

type DelayUnit = "minutes" | "hours" | "days";
interface StepDraft extends VariantDraft {
  delay: string;
  unit: DelayUnit;
}

const EMPTY_VARIANT: VariantDraft = { text: "", price: "", media: [] };
const EMPTY_STEP: StepDraft = { ...EMPTY_VARIANT, delay: "1", unit: "days" };
const KEYS = ["A", "B", "C", "D"];
const MAX_STEPS = 10;
const UNIT_MINUTES: Record<DelayUnit, number> = { minutes: 1, hours: 60, days: 1440 };
const LIVE_REFRESH_MS = 5000;

function cents(price: string): number {
  return price.trim() ? Math.round(Number(price) * 100) : 0;
}

function variantsIn(drafts: VariantDraft[]): VariantIn[] {
  return drafts.map((d, i) => ({ key: KEYS[i], text: d.text, priceCents: cents(d.price), weight: 1, platformMediaIds: d.media }));
}

function stepsIn(drafts: StepDraft[]): StepIn[] {
  return drafts.map((d) => ({
    delayMinutes: Math.round(Number(d.delay || 0) * UNIT_MINUTES[d.unit]),
    text: d.text,
    priceCents: cents(d.price),
    platformMediaIds: d.media,
  }));
}

/** "2 days", "90 minutes": a step's delay as the creator set it. */
export function delayText(minutes: number): string {
  if (minutes % 1440 === 0) return `${minutes / 1440} day${minutes === 1440 ? "" : "s"}`;
  if (minutes % 60 === 0) return `${minutes / 60} hour${minutes === 60 ? "" : "s"}`;
  return `${minutes} minute${minutes === 1 ? "" : "s"}`;
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
  const [steps, setSteps] = useState<StepDraft[]>([{ ...EMPTY_STEP }]);

  const applyTemplate = (t: Template) => {
    setTemplateId(t.id ?? "");
    if (!name.trim()) setName(t.name ?? "");
    setVariants((old) => [{ ...old[0], text: t.text ?? "", price: num(t.priceCents) ? String(num(t.priceCents) / 100) : "" }, ...old.slice(1)]);
  };
  const setVariant = (index: number, patch: Partial<VariantDraft>) =>
    setVariants((old) => old.map((v, i) => (i === index ? { ...v, ...patch } : v)));
  const setStep = (index: number, patch: Partial<StepDraft>) =>
    setSteps((old) => old.map((v, i) => (i === index ? { ...v, ...patch } : v)));
  const listRequired = kind === "one_off" || kind === "sequence";

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
          steps: kind === "sequence" ? stepsIn(steps) : [],
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
                  <select id={id} aria-describedby={describedBy} value={listId} onChange={(e) => setListId(e.currentTarget.value)} required={listRequired}>
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
              <legend>{variants.length > 1 ? `Variant ${KEYS[i]}` : kind === "sequence" ? "First message" : "Message"}</legend>
              <Field label={`Text (${KEYS[i]})`} hint="{name} becomes the fan's first name." error={fieldError(create.error, `variants[${i}].text`)}>
                {(id, describedBy) => (
                  <textarea id={id} aria-describedby={describedBy} value={v.text} onInput={(e) => setVariant(i, { text: e.currentTarget.value })} />
                )}
              </Field>
              <Input label={`PPV price in $ (${KEYS[i]})`} type="number" min="0" step="0.01" inputMode="decimal" value={v.price} onValue={(p) => setVariant(i, { price: p })} hint="Empty for a free message." />
              <MediaPicker label={`Media from your vault (${KEYS[i]})`} selected={v.media} onChange={(media) => setVariant(i, { media })} />
              {i > 0 && (
                <Button kind="ghost" onClick={() => setVariants((old) => old.filter((_, j) => j !== i))}>Remove variant {KEYS[i]}</Button>
              )}
            </fieldset>
          ))}
          {variants.length < KEYS.length && (
            <Button kind="secondary" onClick={() => setVariants((old) => [...old, { ...EMPTY_VARIANT }])}>Add a variant to test</Button>
          )}
          {kind === "sequence" && (
            <>
              <p class="hint">Each follow-up waits its delay after the previous message, and is not sent to a fan who replied or bought meanwhile.</p>
              {steps.map((step, i) => (
                <fieldset key={i}>
                  <legend>Follow-up {i + 1}</legend>
                  <div class="row">
                    <Input
                      label={`Wait (follow-up ${i + 1})`}
                      type="number"
                      min="1"
                      inputMode="numeric"
                      value={step.delay}
                      onValue={(delay) => setStep(i, { delay })}
                      error={fieldError(create.error, `steps[${i}].delayMinutes`)}
                    />
                    <Field label={`Unit (follow-up ${i + 1})`}>
                      {(id) => (
                        <select id={id} value={step.unit} onChange={(e) => setStep(i, { unit: e.currentTarget.value as DelayUnit })}>
                          <option value="minutes">minutes</option>
                          <option value="hours">hours</option>
                          <option value="days">days</option>
                        </select>
                      )}
                    </Field>
                  </div>
                  <Field label={`Text (follow-up ${i + 1})`} hint="{name} becomes the fan's first name." error={fieldError(create.error, `steps[${i}].text`)}>
                    {(id, describedBy) => (
                      <textarea id={id} aria-describedby={describedBy} value={step.text} onInput={(e) => setStep(i, { text: e.currentTarget.value })} />
                    )}
                  </Field>
                  <Input label={`PPV price in $ (follow-up ${i + 1})`} type="number" min="0" step="0.01" inputMode="decimal" value={step.price} onValue={(price) => setStep(i, { price })} hint="Empty for a free message." />
                  <MediaPicker label={`Media from your vault (follow-up ${i + 1})`} selected={step.media} onChange={(media) => setStep(i, { media })} />
                  {steps.length > 1 && (
                    <Button kind="ghost" onClick={() => setSteps((old) => old.filter((_, j) => j !== i))}>Remove follow-up {i + 1}</Button>
                  )}
                </fieldset>
              ))}
              {steps.length < MAX_STEPS && (
                <Button kind="secondary" onClick={() => setSteps((old) => [...old, { ...EMPTY_STEP }])}>Add a follow-up</Button>
              )}
            </>
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
          <Button type="submit" busy={create.busy} disabled={!name.trim() || (listRequired && !listId)}>Create draft</Button>
        </form>
        <div class="card">
          <div class="row">
            <h2>Templates</h2>
            <span class="grow" />
            <a href="/campaigns/templates">Edit templates</a>
          </div>
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
  const remove = useAction(async () => {
    await ok(api.DELETE("/api/campaigns/{campaign_id}", { params: { path: { campaign_id: campaignId } } }));
    navigate("/campaigns");
  });
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
          {(status === "draft" || status === "completed" || status === "cancelled") && (
            <ConfirmDelete busy={remove.busy} draft={status === "draft"} onConfirm={() => void remove.run()} />
          )}
        </div>
        <ErrorBanner error={remove.error} />
        <h3>Messages</h3>
        <ul class="variants">
          {(c.variants ?? []).map((v) => (
            <li key={v.key}>
              <strong>{v.key}</strong> {v.text} {num(v.priceCents) > 0 && <span class="ppv">PPV {money(num(v.priceCents))}</span>}
            </li>
          ))}
        </ul>
        {(c.steps ?? []).length > 0 && <Steps steps={c.steps ?? []} />}
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
        {metrics.data && (status === "draft" ? <p class="muted">Results appear once the campaign is scheduled.</p> : <Results metrics={metrics.data} sequence={c.kind === "sequence"} />)}
      </div>
    </section>
  );
}

function Steps({ steps }: { steps: Step[] }) {
  return (
    <>
      <h3>Follow-ups</h3>
      <p class="muted">Each stops for a fan who replied or bought.</p>
      <ol class="steps-list">
        {steps.map((step, i) => (
          <li key={i}>
            <span class="muted">After {delayText(num(step.delayMinutes))}:</span> {step.text}{" "}
            {num(step.priceCents) > 0 && <span class="ppv">PPV {money(num(step.priceCents))}</span>}
          </li>
        ))}
      </ol>
    </>
  );
}

/** Deleting is for good too: a draft goes with its messages, an ended campaign with its results. */
function ConfirmDelete({ busy, draft, onConfirm }: { busy: boolean; draft: boolean; onConfirm: () => void }) {
  const [asking, setAsking] = useState(false);
  const what = draft ? "draft" : "campaign";
  if (!asking) return <Button kind="danger" busy={busy} onClick={() => setAsking(true)}>Delete {what}</Button>;
  return (
    <div class="row" role="group" aria-label={`Delete the ${what}`}>
      <span>{draft ? "The draft and its messages are deleted for good." : "The campaign and its results are deleted for good."}</span>
      <Button kind="danger" busy={busy} onClick={onConfirm}>Yes, delete it</Button>
      <Button kind="ghost" onClick={() => setAsking(false)}>Keep it</Button>
    </div>
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

function Results({ metrics, sequence }: { metrics: CampaignMetrics; sequence: boolean }) {
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
              {sequence && <th scope="col">Stopped</th>}
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
                {sequence && <td>{num(v.stopped)}</td>}
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

const NICHE_LABELS: Record<string, string> = Object.fromEntries(NICHES.map((n) => [n.id, n.label]));
const VARIABLES = ["name"];

/** The creator's templates: what each earned in the campaigns that used it, and its text to edit. */
export function Templates() {
  const [niche, setNiche] = useState<Exclude<Niche, "unspecified"> | "">("");
  const templates = useLoad(
    () => ok(api.GET("/api/campaigns/templates", { params: { query: niche ? { niche } : {} } })),
    [niche],
  );
  const list = templates.data?.templates ?? [];
  return (
    <section class="page">
      <a href="/campaigns">← Campaigns</a>
      <PageTitle>Templates</PageTitle>
      <p class="muted">A campaign started from a template keeps its own copy: editing a template changes the campaigns made after.</p>
      <Field label="Niche">
        {(id) => (
          <select id={id} value={niche} onChange={(e) => setNiche(e.currentTarget.value as typeof niche)}>
            <option value="">Every niche</option>
            {NICHES.map((n) => <option key={n.id} value={n.id}>{n.label}</option>)}
          </select>
        )}
      </Field>
      {templates.loading && !templates.data && <Loading label="Loading templates…" />}
      <ErrorBanner error={templates.error} />
      {templates.data && list.length === 0 && <p class="empty">No template for this niche.</p>}
      <ul class="templates">
        {list.map((t) => (
          <TemplateCard key={t.id} template={t} onSaved={templates.reload} />
        ))}
      </ul>
    </section>
  );
}

function TemplateCard({ template, onSaved }: { template: Template; onSaved: () => void }) {
  const [editing, setEditing] = useState(false);
  const [shown, setShown] = useState(template);
  const [name, setName] = useState("");
  const [text, setText] = useState("");
  const [price, setPrice] = useState("");
  const results = shown.results;
  const open = () => {
    setName(shown.name ?? "");
    setText(shown.text ?? "");
    setPrice(num(shown.priceCents) ? String(num(shown.priceCents) / 100) : "");
    setEditing(true);
  };
  const save = useAction(async () => {
    const saved = await ok(
      api.PATCH("/api/campaigns/templates/{template_id}", {
        params: { path: { template_id: shown.id ?? "" } },
        body: { name, text, priceCents: cents(price) },
      }),
    );
    setShown(saved);
    setEditing(false);
    onSaved();
  });
  const heading = shown.name ?? "Template";
  return (
    <li>
      <h2>{heading}</h2>
      <p class="muted">
        {NICHE_LABELS[shown.niche ?? ""] ?? "General"} · {num(shown.priceCents) ? `PPV ${money(num(shown.priceCents))}` : "Free message"}
        {(shown.variables ?? []).length > 0 && ` · uses ${(shown.variables ?? []).map((v) => `{${v}}`).join(", ")}`}
      </p>
      {!editing && <p>{shown.text}</p>}
      <dl class="template-results">
        <div><dt>Campaigns</dt><dd>{num(results?.campaigns)}</dd></div>
        <div><dt>Recipients</dt><dd>{num(results?.recipients)}</dd></div>
        <div><dt>Purchases</dt><dd>{num(results?.purchases)}</dd></div>
        <div><dt>Revenue</dt><dd>{money(num(results?.revenueCents))}</dd></div>
        <div><dt>Bought</dt><dd>{percent((results?.conversion ?? 0) * 100, 1)}</dd></div>
      </dl>
      {editing ? (
        <form
          class="template-edit"
          aria-label={`Edit “${heading}”`}
          onSubmit={(e) => {
            e.preventDefault();
            void save.run();
          }}
        >
          <ErrorBanner error={save.error} />
          <Input label="Template name" value={name} onValue={setName} error={fieldError(save.error, "name")} required />
          <Field label="Template text" hint="Variables in braces are filled in for each fan." error={fieldError(save.error, "text")}>
            {(id, describedBy) => <textarea id={id} aria-describedby={describedBy} value={text} onInput={(e) => setText(e.currentTarget.value)} required />}
          </Field>
          <div class="row">
            {VARIABLES.map((v) => (
              <Button key={v} kind="ghost" class="btn-small" onClick={() => setText((old) => `${old}{${v}}`)}>
                Insert {`{${v}}`}
              </Button>
            ))}
          </div>
          <Input label="Template PPV price in $" type="number" min="0" step="0.01" inputMode="decimal" value={price} onValue={setPrice} hint="Empty for a free message." error={fieldError(save.error, "priceCents")} />
          <div class="row">
            <Button type="submit" busy={save.busy} disabled={!name.trim() || !text.trim()}>Save template</Button>
            <Button kind="ghost" onClick={() => setEditing(false)}>Cancel</Button>
          </div>
        </form>
      ) : (
        <Button kind="secondary" class="btn-small" onClick={open}>Edit “{heading}”</Button>
      )}
    </li>
  );
}
