// Figures as the creator reads them: a stat with its change against the period before, and a
// small bar chart drawn as SVG (no chart library shipped for one chart).
import type { ComponentChildren } from "preact";
import type { Change } from "../api/client";

/** An API number (int64 members may come as strings) as a number. */
export function num(value: number | string | null | undefined): number {
  return Number(value ?? 0) || 0;
}

export function percent(value: number | null | undefined, digits = 0): string {
  return value === null || value === undefined ? "—" : `${value.toFixed(digits)}%`;
}

/** "+12% vs. yesterday", or what there is to say without a previous figure. */
export function changeText(change: Change | null | undefined, against: string): string {
  const pct = change?.percent;
  if (pct === null || pct === undefined) return num(change?.current) > 0 ? `new vs. ${against}` : `nothing vs. ${against}`;
  const sign = pct > 0 ? "+" : pct < 0 ? "−" : "±";
  return `${sign}${Math.abs(pct).toFixed(0)}% vs. ${against}`;
}

export function Stat({ label, value, detail, trend }: { label: string; value: ComponentChildren; detail?: string; trend?: number | null }) {
  const direction = trend === null || trend === undefined || trend === 0 ? "" : trend > 0 ? " up" : " down";
  return (
    <div class="stat">
      <div class="muted">{label}</div>
      <div class="value">{value}</div>
      {detail && <div class={`detail${direction}`}>{detail}</div>}
    </div>
  );
}

export interface Bar {
  label: string;
  value: number;
}

const WIDTH = 640;
const HEIGHT = 180;
const PAD_BOTTOM = 1;
const PAD_TOP = 8;

/** Bars for a series, described in words for screen readers (the figures are in `summary`). */
export function BarChart({ title, bars, format, summary }: { title: string; bars: Bar[]; format: (v: number) => string; summary: string }) {
  const max = Math.max(1, ...bars.map((b) => b.value));
  const step = WIDTH / Math.max(1, bars.length);
  const barWidth = Math.max(2, step * 0.7);
  const usable = HEIGHT - PAD_BOTTOM - PAD_TOP;
  const every = Math.max(1, Math.ceil(bars.length / 5));
  const ticks = bars.filter((_, i) => i % every === 0 || i === bars.length - 1).map((b) => b.label);
  return (
    <figure class="chart">
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-label={`${title}: ${summary}`} preserveAspectRatio="none">
        <line x1="0" x2={WIDTH} y1={HEIGHT - PAD_BOTTOM} y2={HEIGHT - PAD_BOTTOM} class="axis" />
        {bars.map((b, i) => {
          const h = (b.value / max) * usable;
          return (
            <rect key={b.label} x={i * step + (step - barWidth) / 2} y={HEIGHT - PAD_BOTTOM - h} width={barWidth} height={Math.max(h, b.value > 0 ? 1 : 0)} class="bar">
              <title>{`${b.label}: ${format(b.value)}`}</title>
            </rect>
          );
        })}
      </svg>
      {/* Labels in HTML, so they keep their size when the chart stretches to the screen. */}
      <div class="ticks" aria-hidden="true">
        {ticks.map((t) => <span key={t}>{t}</span>)}
      </div>
      <figcaption class="muted">{summary}</figcaption>
    </figure>
  );
}
