// The gateway's REST API, typed from its OpenAPI document (`types.ts`, generated).
// Browsers are signed in by HttpOnly cookies; an expired access token is refreshed once.
import createClient from "openapi-fetch";
import type { components, paths } from "./types";

export type Schemas = components["schemas"];
export type Conversation = Schemas["huntaze.crm.v1.Conversation"];
export type Message = Schemas["huntaze.crm.v1.Message"];
export type Fan = Schemas["huntaze.crm.v1.Fan"];
export type FanList = Schemas["huntaze.crm.v1.FanList"];
export type Purchase = Schemas["huntaze.crm.v1.Purchase"];
export type QuickReply = Schemas["huntaze.crm.v1.QuickReply"];
export type SegmentFilter = Schemas["huntaze.crm.v1.SegmentFilter"];
export type InboxEvent = Schemas["huntaze.crm.v1.InboxEvent"];
export type Suggestion = Schemas["huntaze.ai.v1.Suggestion"];
export type User = Schemas["huntaze.auth.v1.User"];
export type Profile = Schemas["huntaze.auth.v1.Profile"];
export type Session = Schemas["huntaze.auth.v1.Session"];
export type Dashboard = Schemas["huntaze.analytics.v1.Dashboard"];
export type Change = Schemas["huntaze.analytics.v1.Change"];
export type Overview = Schemas["huntaze.analytics.v1.Overview"];
export type SeriesPoint = Schemas["huntaze.analytics.v1.SeriesPoint"];
export type FanInsight = Schemas["huntaze.analytics.v1.FanInsight"];
export type Campaign = Schemas["huntaze.campaigns.v1.Campaign"];
export type CampaignMetrics = Schemas["huntaze.campaigns.v1.CampaignMetrics"];
export type VariantMetrics = Schemas["huntaze.campaigns.v1.VariantMetrics"];
export type Comparison = Schemas["huntaze.campaigns.v1.Comparison"];
export type Template = Schemas["huntaze.campaigns.v1.Template"];
export type Step = Schemas["huntaze.campaigns.v1.Step"];
export type VaultMedia = Schemas["huntaze.onlyfans.v1.VaultMedia"];

export interface FieldError {
  field: string;
  message: string;
}

/** An RFC 9457 problem document the API answered, as an error. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly title: string;
  readonly errors: FieldError[];
  readonly retryAfter: number | null;

  constructor(status: number, body: Partial<Schemas["Problem"]> | null, retryAfter: number | null) {
    const detail =
      body?.detail ??
      (status === 0
        ? "The server cannot be reached. Check your connection, then try again."
        : "Something went wrong on our side. Try again in a moment.");
    super(detail);
    this.status = status;
    this.code = body?.code ?? "";
    this.title = body?.title ?? "Error";
    this.errors = (body?.errors as FieldError[] | undefined) ?? [];
    this.retryAfter = retryAfter;
  }

  /** The message for one field (camelCase, as the API names it). */
  fieldError(field: string): string | undefined {
    return this.errors.find((e) => e.field === field || e.field.endsWith(`.${field}`))?.message;
  }
}

let refreshing: Promise<boolean> | null = null;

/** Exchanges the refresh cookie for new tokens (one exchange at a time). */
export function refreshTokens(): Promise<boolean> {
  refreshing ??= fetch("/api/auth/refresh", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: "{}",
  })
    .then((r) => r.ok)
    .catch(() => false)
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

const NO_REFRESH = ["/api/auth/login", "/api/auth/refresh", "/api/auth/register", "/api/auth/logout"];

let onSignedOut: () => void = () => undefined;
export function whenSignedOut(handler: () => void): void {
  onSignedOut = handler;
}

/** `fetch`, sending the request again once after a refresh when the access token expired. */
async function fetchRefreshingOnce(request: Request): Promise<Response> {
  const path = new URL(request.url).pathname;
  const again = NO_REFRESH.includes(path) ? null : request.clone();
  const response = await fetch(request);
  if (response.status !== 401 || again === null) return response;
  if (await refreshTokens()) return fetch(again);
  onSignedOut();
  return response;
}

export const api = createClient<paths>({
  baseUrl: location.origin,
  credentials: "same-origin",
  fetch: fetchRefreshingOnce,
});

/** The data of an openapi-fetch answer, or its problem thrown as an `ApiError`. */
export async function ok<T>(
  call: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  let answer: { data?: T; error?: unknown; response: Response };
  try {
    answer = await call;
  } catch {
    throw new ApiError(0, null, null);
  }
  const { data, error, response } = answer;
  if (response.ok) return data as T;
  const retry = response.headers.get("retry-after");
  throw new ApiError(
    response.status,
    (error ?? null) as Partial<Schemas["Problem"]> | null,
    retry ? Number(retry) : null,
  );
}

/** Money in cents, as the creator reads it. */
export function money(cents: number | undefined | null, currency = "USD"): string {
  return new Intl.NumberFormat(undefined, { style: "currency", currency }).format((cents ?? 0) / 100);
}

export function when(stamp: string | null | undefined): string {
  if (!stamp) return "";
  const date = new Date(stamp);
  const today = new Date();
  return date.toDateString() === today.toDateString()
    ? date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

export function newKey(): string {
  return crypto.randomUUID();
}
