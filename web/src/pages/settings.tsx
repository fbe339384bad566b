// Settings: the AI configuration, the OnlyFans connection, quick replies, sessions, and the
// account's security (two-factor authentication and the password).
import { useState } from "preact/hooks";
import { api, ok, when, type QuickReply } from "../api/client";
import { useSession, loadSession } from "../session";
import { Button, ErrorBanner, fieldError, Input, Loading, Notice, PageTitle, useAction, useLoad } from "../ui/kit";
import { AiConfigForm } from "./ai-config";
import { ConnectOnlyFans, StatusLine, useOnlyFansStatus } from "./connection";

const TABS = [
  { id: "ai", label: "AI replies" },
  { id: "connections", label: "Connections" },
  { id: "quick-replies", label: "Quick replies" },
  { id: "sessions", label: "Sessions" },
  { id: "security", label: "Security" },
];

export function Settings({ tab }: { tab: string }) {
  const current = TABS.find((t) => t.id === tab) ?? TABS[0];
  return (
    <section class="page">
      <PageTitle>Settings</PageTitle>
      <nav class="tabs" aria-label="Settings">
        {TABS.map((t) => (
          <a key={t.id} href={`/settings/${t.id}`} aria-current={t.id === current.id ? "page" : undefined}>
            {t.label}
          </a>
        ))}
      </nav>
      <div class="narrow" style={{ margin: 0 }}>
        <h2>{current.label}</h2>
        {current.id === "ai" && <AiConfigForm submitLabel="Save" />}
        {current.id === "connections" && <Connections />}
        {current.id === "quick-replies" && <QuickReplies />}
        {current.id === "sessions" && <Sessions />}
        {current.id === "security" && <Security />}
      </div>
    </section>
  );
}

function Connections() {
  const status = useOnlyFansStatus();
  const sync = useAction(async () => {
    await ok(api.POST("/api/of/sync"));
    status.reload();
  });
  const disconnect = useAction(async () => {
    status.set(await ok(api.POST("/api/of/disconnect")));
  });
  if (status.loading && !status.data) return <Loading label="Checking your OnlyFans connection…" />;
  if (status.error) return <ErrorBanner error={status.error} />;
  const s = status.data;
  return (
    <div class="card">
      <h3>OnlyFans</h3>
      {s && s.state === "connected" ? (
        <>
          <StatusLine status={s} />
          <ErrorBanner error={sync.error ?? disconnect.error} />
          <div class="row">
            <Button kind="secondary" busy={sync.busy} onClick={() => void sync.run()}>Sync now</Button>
            <Button kind="danger" busy={disconnect.busy} onClick={() => void disconnect.run()}>Disconnect</Button>
          </div>
        </>
      ) : (
        <ConnectOnlyFans onboarding={false} onConnected={(next) => status.set(next)} />
      )}
    </div>
  );
}

function QuickReplies() {
  const list = useLoad(() => ok(api.GET("/api/crm/quick-replies", { params: { query: { limit: 200 } } })));
  const [shortcut, setShortcut] = useState("/");
  const [text, setText] = useState("");
  const create = useAction(async () => {
    await ok(api.POST("/api/crm/quick-replies", { body: { shortcut, text } }));
    setShortcut("/");
    setText("");
    list.reload();
  });
  const remove = useAction(async (reply: QuickReply) => {
    await ok(api.DELETE("/api/crm/quick-replies/{quick_reply_id}", { params: { path: { quick_reply_id: reply.id ?? "" } } }));
    list.reload();
  });
  return (
    <>
      <p>In a reply, type a shortcut such as <code>/thanks</code> and press Enter to insert its text.</p>
      <form
        class="card"
        onSubmit={(e) => {
          e.preventDefault();
          void create.run();
        }}
      >
        <ErrorBanner error={create.error} />
        <Input label="Shortcut" value={shortcut} onValue={setShortcut} required error={fieldError(create.error, "shortcut")} />
        <Input label="Text" value={text} onValue={setText} required error={fieldError(create.error, "text")} />
        <Button type="submit" busy={create.busy}>Add quick reply</Button>
      </form>
      {list.loading && <Loading />}
      <ErrorBanner error={list.error ?? remove.error} />
      <ul class="card" aria-label="Quick replies" style={{ listStyle: "none" }}>
        {(list.data?.quickReplies ?? []).map((r) => (
          <li key={r.id} class="row" style={{ padding: "0.4rem 0" }}>
            <strong>{r.shortcut}</strong>
            <span class="grow">{r.text}</span>
            <Button kind="ghost" class="btn-small" onClick={() => void remove.run(r)}>Delete {r.shortcut}</Button>
          </li>
        ))}
        {list.data && list.data.quickReplies.length === 0 && <li class="muted">No quick replies yet.</li>}
      </ul>
    </>
  );
}

function Sessions() {
  const sessions = useLoad(() => ok(api.GET("/api/auth/sessions")));
  const revoke = useAction(async (id: string) => {
    await ok(api.DELETE("/api/auth/sessions/{session_id}", { params: { path: { session_id: id } } }));
    sessions.reload();
  });
  const others = useAction(async () => {
    await ok(api.DELETE("/api/auth/sessions/others"));
    sessions.reload();
  });
  if (sessions.loading && !sessions.data) return <Loading label="Loading your sessions…" />;
  return (
    <>
      <ErrorBanner error={sessions.error ?? revoke.error ?? others.error} />
      <div class="table-wrap">
        <table>
          <caption class="sr-only">Sessions</caption>
          <thead>
            <tr><th scope="col">Device</th><th scope="col">Address</th><th scope="col">Last used</th><th scope="col"><span class="sr-only">Actions</span></th></tr>
          </thead>
          <tbody>
            {(sessions.data?.sessions ?? []).map((s) => (
              <tr key={s.id}>
                <td>{s.userAgent || "Unknown device"}{s.current && <strong> (this device)</strong>}</td>
                <td>{s.ipAddress}</td>
                <td>{when(s.lastUsedAt)}</td>
                <td>
                  {!s.current && (
                    <Button kind="secondary" class="btn-small" onClick={() => void revoke.run(s.id ?? "")}>Sign out</Button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <p style={{ marginTop: "1rem" }}>
        <Button kind="danger" busy={others.busy} onClick={() => void others.run()}>Sign out everywhere else</Button>
      </p>
    </>
  );
}

function Security() {
  const session = useSession();
  return (
    <>
      <TwoFactor enabled={Boolean(session.user?.twoFactorEnabled)} />
      <ChangePassword />
    </>
  );
}

function TwoFactor({ enabled }: { enabled: boolean }) {
  const [enrollment, setEnrollment] = useState<{ qrSvg?: string; secret?: string } | null>(null);
  const [code, setCode] = useState("");
  const [password, setPassword] = useState("");
  const [codes, setCodes] = useState<string[] | null>(null);
  const begin = useAction(async () => setEnrollment(await ok(api.POST("/api/auth/2fa/enroll"))));
  const confirm = useAction(async () => {
    const answer = await ok(api.POST("/api/auth/2fa/confirm", { body: { code: code.trim() } }));
    setCodes(answer.recoveryCodes ?? []);
    setEnrollment(null);
    setCode("");
    await loadSession();
  });
  const disable = useAction(async () => {
    await ok(api.POST("/api/auth/2fa/disable", { body: { code: code.trim(), password } }));
    setCode("");
    setPassword("");
    await loadSession();
  });
  const regenerate = useAction(async () => {
    const answer = await ok(api.POST("/api/auth/2fa/recovery-codes", { body: { code: code.trim() } }));
    setCodes(answer.recoveryCodes ?? []);
    setCode("");
  });
  return (
    <div class="card">
      <h3>Two-factor authentication</h3>
      {codes && (
        <Notice kind="warning">
          Keep these recovery codes somewhere safe: each signs you in once if you lose your phone. They are shown only now.
          <code class="codes">{codes.join("\n")}</code>
        </Notice>
      )}
      {!enabled && !enrollment && (
        <>
          <p>Protect your account with a code from an authenticator app at each sign-in.</p>
          <ErrorBanner error={begin.error} />
          <Button busy={begin.busy} onClick={() => void begin.run()}>Turn on two-factor authentication</Button>
        </>
      )}
      {!enabled && enrollment && (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void confirm.run();
          }}
        >
          <p>Scan this code with your authenticator app, or type the key by hand.</p>
          {enrollment.qrSvg && (
            <p class="qr">
              <img alt="QR code for your authenticator app" src={`data:image/svg+xml;charset=utf-8,${encodeURIComponent(enrollment.qrSvg)}`} />
            </p>
          )}
          <p>Key: <code>{enrollment.secret}</code></p>
          <ErrorBanner error={confirm.error} />
          <Input label="Code from the app" value={code} onValue={setCode} autocomplete="one-time-code" inputMode="numeric" required error={fieldError(confirm.error, "code")} />
          <Button type="submit" busy={confirm.busy}>Confirm</Button>
        </form>
      )}
      {enabled && (
        <>
          <Notice kind="success">Two-factor authentication is on.</Notice>
          <ErrorBanner error={disable.error ?? regenerate.error} />
          <Input label="Code from the app" value={code} onValue={setCode} autocomplete="one-time-code" error={fieldError(disable.error ?? regenerate.error, "code")} />
          <Input label="Password (to turn it off)" type="password" value={password} onValue={setPassword} autocomplete="current-password" error={fieldError(disable.error, "password")} />
          <div class="row">
            <Button kind="secondary" busy={regenerate.busy} disabled={!code.trim()} onClick={() => void regenerate.run()}>New recovery codes</Button>
            <Button kind="danger" busy={disable.busy} disabled={!code.trim() || !password} onClick={() => void disable.run()}>Turn off</Button>
          </div>
        </>
      )}
    </div>
  );
}

function ChangePassword() {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [done, setDone] = useState(false);
  const change = useAction(async () => {
    await ok(api.POST("/api/auth/change-password", { body: { currentPassword: current, newPassword: next } }));
    setDone(true);
    setCurrent("");
    setNext("");
  });
  return (
    <form
      class="card"
      onSubmit={(e) => {
        e.preventDefault();
        setDone(false);
        void change.run();
      }}
    >
      <h3>Password</h3>
      <ErrorBanner error={change.error} />
      <Input label="Current password" type="password" value={current} onValue={setCurrent} autocomplete="current-password" required error={fieldError(change.error, "currentPassword")} />
      <Input label="New password" type="password" value={next} onValue={setNext} autocomplete="new-password" required error={fieldError(change.error, "newPassword")} />
      {done && <Notice kind="success">Your password is changed; your other sessions were signed out.</Notice>}
      <Button type="submit" busy={change.busy}>Change password</Button>
    </form>
  );
}
