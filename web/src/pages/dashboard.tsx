// The dashboard, the console's home: today's and this week's revenue with their change, fans,
// unread messages, campaigns, AI acceptance, accounts that need attention, what to do next,
// and the last 30 days of revenue as a chart.
import { api, money, ok, type Dashboard as DashboardData, type SeriesPoint } from "../api/client";
import { BarChart, changeText, num, percent, Stat } from "../ui/figures";
import { ErrorBanner, Loading, PageTitle, useLoad } from "../ui/kit";

export function Dashboard() {
  const dashboard = useLoad(() => ok(api.GET("/api/dashboard")));
  const series = useLoad(() => ok(api.GET("/api/analytics/series", { params: { query: { period: "30d" } } })));
  return (
    <section class="page">
      <PageTitle>Dashboard</PageTitle>
      {dashboard.loading && !dashboard.data && <Loading label="Loading your figures…" />}
      {dashboard.error ? (
        <>
          <ErrorBanner error={dashboard.error} />
          <button type="button" class="btn btn-secondary" onClick={dashboard.reload}>Try again</button>
        </>
      ) : null}
      {dashboard.data && <Figures data={dashboard.data} />}
      <div class="card">
        <h2>Revenue, last 30 days</h2>
        {series.loading && !series.data && <Loading label="Loading the chart…" />}
        <ErrorBanner error={series.error} />
        {series.data && <RevenueChart points={series.data.points ?? []} />}
      </div>
    </section>
  );
}

function Figures({ data }: { data: DashboardData }) {
  const attention = data.accountsNeedingAttention ?? [];
  return (
    <>
      {attention.map((a) => (
        <div class="banner banner-warning" role="status" key={`${a.platform}-${a.reason}`}>
          <strong>{a.platform === "onlyfans" ? "OnlyFans" : a.platform} needs attention:</strong> {a.message}{" "}
          <a href="/settings/connections">Fix the connection</a>
        </div>
      ))}
      <div class="stats" aria-label="Today at a glance" role="group">
        <Stat label="Revenue today" value={money(num(data.revenueTodayCents?.current))} detail={changeText(data.revenueTodayCents, "yesterday")} trend={data.revenueTodayCents?.percent} />
        <Stat label="Revenue this week" value={money(num(data.revenueWeekCents?.current))} detail={changeText(data.revenueWeekCents, "the week before")} trend={data.revenueWeekCents?.percent} />
        <Stat label="Fans" value={num(data.fans?.total)} detail={`${num(data.fans?.subscribers)} subscribed, ${num(data.fans?.expiring)} expiring`} />
        <Stat label="Unread messages" value={num(data.unreadMessages)} />
        <Stat label="Active campaigns" value={num(data.activeCampaigns)} />
        <Stat label="AI acceptance, 7 days" value={percent(data.aiAcceptancePercent)} />
      </div>
      {(data.quickActions ?? []).length > 0 && (
        <nav class="card" aria-label="Quick actions">
          <h2>What to do next</h2>
          <ul class="actions">
            {(data.quickActions ?? []).map((q) => (
              <li key={q.key}>
                <a class="btn btn-secondary" href={q.href}>{q.label}</a>
              </li>
            ))}
          </ul>
        </nav>
      )}
    </>
  );
}

function RevenueChart({ points }: { points: SeriesPoint[] }) {
  const bars = points.map((p) => ({ label: (p.bucket ?? "").slice(5), value: num(p.revenueCents) }));
  const total = bars.reduce((sum, b) => sum + b.value, 0);
  const best = bars.reduce((top, b) => (b.value > top.value ? b : top), { label: "", value: 0 });
  const summary =
    total === 0 ? "No revenue in the last 30 days yet." : `${money(total)} in total; the best day was ${best.label} with ${money(best.value)}.`;
  return <BarChart title="Revenue per day" bars={bars} format={(v) => money(v)} summary={summary} />;
}
