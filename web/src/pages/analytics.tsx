// Analytics over 7, 30 or 90 days: revenue by type and platform against the period before,
// fans, messages, AI performance, campaign results, the fans worth a look with the reason, the
// written summary, and the daily figures as a CSV file.
import { api, money, ok, type FanInsight, type Overview } from "../api/client";
import { useLocation } from "../router";
import { BarChart, changeText, num, percent, Stat } from "../ui/figures";
import { ErrorBanner, Loading, PageTitle, useLoad } from "../ui/kit";

type Period = "7d" | "30d" | "90d";
const PERIODS: { id: Period; label: string }[] = [
  { id: "7d", label: "7 days" },
  { id: "30d", label: "30 days" },
  { id: "90d", label: "90 days" },
];

const PLATFORM_NAMES: Record<string, string> = { onlyfans: "OnlyFans", tiktok: "TikTok", instagram: "Instagram", reddit: "Reddit", other: "Other" };

export function Analytics() {
  const { query } = useLocation();
  const asked = query.get("period");
  const period: Period = asked === "7d" || asked === "90d" ? asked : "30d";
  const overview = useLoad(() => ok(api.GET("/api/analytics/overview", { params: { query: { period } } })), [period]);
  const series = useLoad(() => ok(api.GET("/api/analytics/series", { params: { query: { period } } })), [period]);
  const summary = useLoad(() => ok(api.GET("/api/analytics/summary", { params: { query: { period } } })), [period]);
  return (
    <section class="page">
      <div class="row">
        <PageTitle>Analytics</PageTitle>
        <span class="grow" />
        <a class="btn btn-secondary" href={`/api/analytics/export.csv?period=${period}`} download>
          Download CSV ({PERIODS.find((p) => p.id === period)?.label})
        </a>
      </div>
      <nav class="tabs" aria-label="Period">
        {PERIODS.map((p) => (
          <a key={p.id} href={`/analytics?period=${p.id}`} aria-current={p.id === period ? "page" : undefined}>
            Last {p.label}
          </a>
        ))}
      </nav>
      {overview.loading && !overview.data && <Loading label="Loading analytics…" />}
      {overview.error ? (
        <>
          <ErrorBanner error={overview.error} />
          <button type="button" class="btn btn-secondary" onClick={overview.reload}>Try again</button>
        </>
      ) : null}
      <div class="card summary" aria-label="Summary" role="region">
        {summary.loading && !summary.data && <Loading label="Writing the summary…" />}
        <ErrorBanner error={summary.error} />
        {summary.data && (
          <>
            <p>{summary.data.summary}</p>
            <p class="muted">{summary.data.writtenBy === "facts" || !summary.data.writtenBy ? "Written from your figures." : `Written by ${summary.data.writtenBy} from your figures.`}</p>
          </>
        )}
      </div>
      {overview.data && <Report data={overview.data} />}
      <div class="card">
        <h2>Revenue per day</h2>
        {series.loading && !series.data && <Loading label="Loading the chart…" />}
        <ErrorBanner error={series.error} />
        {series.data && (
          <BarChart
            title="Revenue per day"
            bars={(series.data.points ?? []).map((p) => ({ label: (p.bucket ?? "").slice(5), value: num(p.revenueCents) }))}
            format={(v) => money(v)}
            summary={`${money((series.data.points ?? []).reduce((s, p) => s + num(p.revenueCents), 0))} over the period.`}
          />
        )}
      </div>
    </section>
  );
}

function Report({ data }: { data: Overview }) {
  const revenue = data.revenue;
  const ai = data.ai;
  const byType = [
    { label: "Subscriptions", cents: num(revenue?.subscriptionCents) },
    { label: "Renewals", cents: num(revenue?.renewalCents) },
    { label: "Tips", cents: num(revenue?.tipCents) },
    { label: "Pay-per-view", cents: num(revenue?.ppvCents) },
  ];
  const insights = data.insights;
  return (
    <>
      <p class="muted">
        {data.startDay} to {data.endDay} ({data.timezone || "UTC"}), compared with the period before.
      </p>
      <div class="stats" role="group" aria-label="The period at a glance">
        <Stat label="Revenue" value={money(num(revenue?.totalCents?.current))} detail={changeText(revenue?.totalCents, "the period before")} trend={revenue?.totalCents?.percent} />
        <Stat label="Purchases" value={num(revenue?.purchases?.current)} detail={changeText(revenue?.purchases, "the period before")} trend={revenue?.purchases?.percent} />
        <Stat label="New fans" value={num(data.fans?.newFans?.current)} detail={changeText(data.fans?.newFans, "the period before")} trend={data.fans?.newFans?.percent} />
        <Stat label="Active fans" value={num(data.fans?.active)} detail={`${num(data.fans?.subscribers)} subscribed, ${num(data.fans?.expiring)} expiring`} />
        <Stat label="Messages received" value={num(data.messages?.received?.current)} detail={`${num(data.messages?.sent?.current)} sent`} />
        <Stat label="Median reply time" value={data.messages?.medianResponseSeconds == null ? "—" : duration(data.messages.medianResponseSeconds)} />
      </div>
      <div class="two">
        <div class="card">
          <h2>Revenue by type</h2>
          <table>
            <caption class="sr-only">Revenue by type</caption>
            <tbody>
              {byType.map((t) => (
                <tr key={t.label}><th scope="row">{t.label}</th><td>{money(t.cents)}</td></tr>
              ))}
            </tbody>
          </table>
        </div>
        <div class="card">
          <h2>Revenue by platform</h2>
          {(data.platforms ?? []).length === 0 ? (
            <p class="empty">No revenue in this period yet.</p>
          ) : (
            <table>
              <caption class="sr-only">Revenue by platform</caption>
              <thead><tr><th scope="col">Platform</th><th scope="col">Revenue</th><th scope="col">Purchases</th><th scope="col">Share</th></tr></thead>
              <tbody>
                {(data.platforms ?? []).map((p) => (
                  <tr key={p.platform}>
                    <th scope="row">{PLATFORM_NAMES[p.platform ?? ""] ?? p.platform}</th>
                    <td>{money(num(p.revenueCents))}</td>
                    <td>{num(p.purchases)}</td>
                    <td>{percent(p.percent)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
        <div class="card">
          <h2>AI replies</h2>
          <div class="stats">
            <Stat label="Acceptance" value={percent(ai?.acceptancePercent)} />
            <Stat label="Suggested" value={num(ai?.shown)} detail={`${num(ai?.accepted)} accepted, ${num(ai?.edited)} edited, ${num(ai?.rejected)} rejected`} />
            <Stat label="Autopilot sends" value={num(ai?.autopilotSends)} />
            <Stat label="Revenue after AI replies" value={money(num(ai?.attributedRevenueCents))} />
          </div>
        </div>
        <div class="card">
          <h2>Campaigns</h2>
          <p>{num(data.campaigns?.active)} active now.</p>
          {(data.campaigns?.results ?? []).length > 0 && (
            <ul>
              {(data.campaigns?.results ?? []).map((r) => (
                <li key={r.eventType}>{(r.eventType ?? "").split(".").pop()?.replace(/_/g, " ")}: {num(r.events)}</li>
              ))}
            </ul>
          )}
          <a href="/campaigns">See campaign results</a>
        </div>
      </div>
      <h2>Fans worth a look</h2>
      <div class="two">
        <Insights title="Top spenders" fans={insights?.topSpenders ?? []} value={(f) => money(num(f.value))} />
        <Insights title="At risk of leaving" fans={insights?.churnRisks ?? []} value={(f) => `risk ${num(f.value)}/100`} />
        <Insights title="Highest expected value" fans={insights?.expectedLtv ?? []} value={(f) => money(num(f.value))} />
        <Insights title="Big spenders gone quiet" fans={insights?.quietWhales ?? []} value={(f) => `${money(num(f.value))} a month before`} />
      </div>
    </>
  );
}

function duration(seconds: number): string {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function Insights({ title, fans, value }: { title: string; fans: FanInsight[]; value: (f: FanInsight) => string }) {
  return (
    <div class="card">
      <h3>{title}</h3>
      {fans.length === 0 ? (
        <p class="muted">Nobody here for this period.</p>
      ) : (
        <ul class="insights">
          {fans.map((f) => (
            <li key={f.fanId}>
              <div class="row">
                <a href={`/fans/${f.fanId}`}>{f.displayName || "Fan"}</a>
                <span class="grow" />
                <strong>{value(f)}</strong>
              </div>
              <p class="muted">{f.reason}</p>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
