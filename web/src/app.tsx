// The console: which page a path opens, the signed-in shell and its navigation.
import type { ComponentChildren } from "preact";
import { useEffect } from "preact/hooks";
import { api, whenSignedOut } from "./api/client";
import { ForgotPassword, ResetPassword, SignIn, SignUp, VerifyEmail } from "./pages/auth";
import { FanProfile, Fans } from "./pages/fans";
import { Analytics } from "./pages/analytics";
import { CampaignPage, Campaigns, NewCampaign, Templates } from "./pages/campaigns";
import { Dashboard } from "./pages/dashboard";
import { Inbox } from "./pages/inbox";
import { Onboarding } from "./pages/onboarding";
import { Settings } from "./pages/settings";
import { match, navigate, useLocation } from "./router";
import { loadSession, onboarded, signedOut, useSession } from "./session";
import { ErrorBanner, Loading } from "./ui/kit";

/** The signed-in pages in the navigation; a new page is one more entry. */
export const NAV: { path: string; label: string }[] = [
  { path: "/dashboard", label: "Dashboard" },
  { path: "/inbox", label: "Inbox" },
  { path: "/fans", label: "Fans" },
  { path: "/campaigns", label: "Campaigns" },
  { path: "/analytics", label: "Analytics" },
  { path: "/settings", label: "Settings" },
];

const PUBLIC = ["/sign-in", "/sign-up", "/verify-email", "/forgot-password", "/reset-password"];

function Redirect({ to }: { to: string }) {
  useEffect(() => navigate(to, { replace: true }), [to]);
  return null;
}

function Shell({ path, children }: { path: string; children: ComponentChildren }) {
  const session = useSession();
  return (
    <div class="shell">
      <a class="skip" href="#main">Skip to content</a>
      <header class="topbar">
        <a class="brand" href="/">Huntaze</a>
        <nav aria-label="Main">
          <ul>
            {NAV.map((item) => (
              <li key={item.path}>
                <a href={item.path} aria-current={path === item.path || path.startsWith(`${item.path}/`) ? "page" : undefined}>
                  {item.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <span class="who-name">{session.profile?.displayName || session.user?.name}</span>
          <button
            type="button"
            class="btn btn-ghost"
            onClick={async () => {
              await api.POST("/api/auth/logout").catch(() => undefined);
              signedOut();
              navigate("/sign-in");
            }}
          >
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>{children}</main>
    </div>
  );
}

function SignedInPage({ path }: { path: string }) {
  let params: Record<string, string> | null;
  if (path === "/onboarding") return <Onboarding />;
  let page: ComponentChildren;
  if (path === "/dashboard") page = <Dashboard />;
  else if (path === "/inbox") page = <Inbox conversationId={null} />;
  else if ((params = match("/inbox/:id", path))) page = <Inbox conversationId={params.id} />;
  else if (path === "/fans") page = <Fans />;
  else if ((params = match("/fans/:id", path))) page = <FanProfile fanId={params.id} />;
  else if (path === "/campaigns") page = <Campaigns />;
  else if (path === "/campaigns/new") page = <NewCampaign />;
  else if (path === "/campaigns/templates") page = <Templates />;
  else if ((params = match("/campaigns/:id", path))) page = <CampaignPage campaignId={params.id} />;
  else if (path === "/analytics") page = <Analytics />;
  else if (path === "/settings") page = <Settings tab="ai" />;
  else if ((params = match("/settings/:tab", path))) page = <Settings tab={params.tab} />;
  else
    page = (
      <section class="page">
        <h1 class="page-title">Page not found</h1>
        <p>
          Nothing lives at this address. Go to the <a href="/dashboard">dashboard</a>.
        </p>
      </section>
    );
  return <Shell path={path}>{page}</Shell>;
}

export function App() {
  const { path, query } = useLocation();
  const session = useSession();

  useEffect(() => {
    whenSignedOut(() => signedOut());
    void loadSession();
  }, []);

  // Each page starts with its title focused, so a screen reader hears where it is.
  useEffect(() => {
    const title = document.querySelector<HTMLElement>("h1.page-title");
    if (title && document.activeElement === document.body) title.focus({ preventScroll: true });
  }, [path]);

  if (path === "/verify-email") return <VerifyEmail token={query.get("token") ?? ""} />;
  if (path === "/reset-password") return <ResetPassword token={query.get("token") ?? ""} />;
  if (path === "/forgot-password") return <ForgotPassword />;
  if (path === "/sign-up") return <SignUp />;
  if (session.status === "loading") return <main id="main" class="auth"><Loading /></main>;
  if (session.status === "unreachable") {
    return (
      <main id="main" class="auth">
        <div class="auth-card">
          <h1 class="page-title">Huntaze cannot be reached</h1>
          <ErrorBanner error={session.error} />
          <button type="button" class="btn btn-primary" onClick={() => void loadSession()}>Try again</button>
        </div>
      </main>
    );
  }
  if (session.status === "signed-out") {
    // The new-device alert's link: securing an account whose password may be known.
    if (path === "/settings/security") return <ForgotPassword title="Secure your account" />;
    if (path !== "/sign-in" && !PUBLIC.includes(path)) {
      return <Redirect to={`/sign-in?next=${encodeURIComponent(path + location.search)}`} />;
    }
    return <SignIn next={query.get("next")} />;
  }
  if (path === "/sign-in" || path === "/") {
    return <Redirect to={onboarded(session) ? query.get("next") || "/dashboard" : "/onboarding"} />;
  }
  return <SignedInPage path={path} />;
}
