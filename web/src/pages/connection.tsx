// The OnlyFans connection: sign in with the account's email and password (and the code
// OnlyFans sends when it asks for one), or import a session from a signed-in browser.
import { useState } from "preact/hooks";
import { api, ApiError, ok, when, type Schemas } from "../api/client";
import { Button, ErrorBanner, fieldError, Input, Loading, Notice, useAction, useLoad } from "../ui/kit";

export type Status = Schemas["huntaze.onlyfans.v1.AccountStatus"];

const STATE_TEXT: Record<NonNullable<Status["state"]>, string> = {
  unspecified: "Not connected",
  disconnected: "Not connected",
  connected: "Connected",
  needs_otp: "Waiting for the code OnlyFans sent you",
  needs_session_import: "OnlyFans wants a session from your browser",
  failed: "The connection failed",
  needs_attention: "The connection needs your attention",
};

export function useOnlyFansStatus() {
  return useLoad(async () => ok(api.GET("/api/of/status")));
}

export function StatusLine({ status }: { status: Status }) {
  return (
    <p>
      <strong>{STATE_TEXT[status.state ?? "unspecified"]}</strong>
      {status.username && <> as @{status.username}</>}
      {status.lastSyncedAt && <span class="muted"> · last synced {when(status.lastSyncedAt)}</span>}
      {status.reason && status.state !== "connected" && <span class="muted"> · {status.reason}</span>}
    </p>
  );
}

export function ConnectOnlyFans({ onboarding, onConnected }: { onboarding: boolean; onConnected: (status: Status) => void }) {
  const loaded = useOnlyFansStatus();
  const [status, setStatus] = useState<Status | null>(null);
  const [how, setHow] = useState<"password" | "session">("password");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [code, setCode] = useState("");
  const [cookies, setCookies] = useState("");
  const [userAgent, setUserAgent] = useState(navigator.userAgent);
  const [xBc, setXBc] = useState("");
  const current = status ?? loaded.data ?? null;

  const settle = (next: Status) => {
    setStatus(next);
    if (next.state === "connected") onConnected(next);
  };
  const connect = useAction(async () => {
    const body =
      how === "password"
        ? { credentials: { email, password, totpSecret: "" } }
        : { session: { cookies: parseCookies(cookies), userAgent, xBc } };
    const path = onboarding ? "/api/onboarding/connect-platform" : "/api/of/connect";
    try {
      settle(await ok(api.POST(path, { body })));
    } catch (error) {
      // Signing in to OnlyFans can outlast the API's deadline: the answer is then in the status.
      if (!(error instanceof ApiError && error.status === 504)) throw error;
      settle(await statusAfterTimeout(error));
    }
  });
  const otp = useAction(async () => {
    settle(await ok(api.POST("/api/of/connect/otp", { body: { code: code.trim() } })));
  });

  if (loaded.loading && !current) return <Loading label="Checking your OnlyFans connection…" />;
  if (current?.state === "connected") {
    return (
      <div>
        <Notice kind="success">
          <StatusLine status={current} />
        </Notice>
      </div>
    );
  }
  if (current?.state === "needs_otp") {
    return (
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void otp.run();
        }}
      >
        <Notice kind="info">OnlyFans sent a code to your email or phone. Enter it to finish connecting.</Notice>
        <ErrorBanner error={otp.error} />
        <Input label="Code from OnlyFans" value={code} onValue={setCode} autocomplete="one-time-code" required autoFocus error={fieldError(otp.error, "code")} />
        <Button type="submit" busy={otp.busy}>Finish connecting</Button>
        {otp.busy && <p class="muted" role="status">Entering the code on OnlyFans… this can take a minute.</p>}
      </form>
    );
  }
  return (
    <div>
      {current && current.state !== "disconnected" && (
        <Notice kind="warning">
          <StatusLine status={current} />
        </Notice>
      )}
      {loaded.error ? <ErrorBanner error={loaded.error} /> : null}
      <div class="tabs" role="group" aria-label="How to connect">
        <button type="button" class={`btn ${how === "password" ? "btn-secondary" : "btn-ghost"}`} aria-pressed={how === "password"} onClick={() => setHow("password")}>
          Email and password
        </button>
        <button type="button" class={`btn ${how === "session" ? "btn-secondary" : "btn-ghost"}`} aria-pressed={how === "session"} onClick={() => setHow("session")}>
          Import a browser session
        </button>
      </div>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void connect.run();
        }}
      >
        <ErrorBanner error={connect.error} />
        {how === "password" ? (
          <>
            <p class="muted">Your password is encrypted at rest and used only to sign in to OnlyFans for you.</p>
            <Input label="OnlyFans email" type="email" value={email} onValue={setEmail} autocomplete="off" required error={fieldError(connect.error, "email")} />
            <Input label="OnlyFans password" type="password" value={password} onValue={setPassword} autocomplete="off" required error={fieldError(connect.error, "password")} />
          </>
        ) : (
          <>
            <p class="muted">From a browser signed in to OnlyFans: its cookies (name=value; …), its user agent and its x-bc value.</p>
            <Input label="Cookies" value={cookies} onValue={setCookies} required error={fieldError(connect.error, "cookies")} />
            <Input label="User agent" value={userAgent} onValue={setUserAgent} required error={fieldError(connect.error, "userAgent")} />
            <Input label="x-bc" value={xBc} onValue={setXBc} required error={fieldError(connect.error, "xBc")} />
          </>
        )}
        <Button type="submit" busy={connect.busy}>Connect OnlyFans</Button>
        {connect.busy && <p class="muted" role="status">Signing in to OnlyFans… this can take a minute.</p>}
      </form>
    </div>
  );
}

const STATUS_POLL_MS = 2000;
const STATUS_POLL_LIMIT_MS = 120_000;

/** The connection's status once the worker is done with a sign-in the API stopped waiting for. */
async function statusAfterTimeout(timeout: ApiError): Promise<Status> {
  const deadline = Date.now() + STATUS_POLL_LIMIT_MS;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, STATUS_POLL_MS));
    const status = await ok(api.GET("/api/of/status"));
    if (status.state !== "disconnected") return status;
  }
  throw timeout;
}

function parseCookies(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(";")) {
    const at = part.indexOf("=");
    if (at > 0) out[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return out;
}
