// Signing up, verifying the email address, signing in (with the two-factor step) and resetting
// a forgotten password. The links in the emails open these pages.
import { useEffect, useState } from "preact/hooks";
import { api, ok } from "../api/client";
import { navigate } from "../router";
import { loadSession } from "../session";
import { Button, ErrorBanner, fieldError, Input, Notice, PageTitle, useAction } from "../ui/kit";

function AuthCard({ title, children }: { title: string; children: preact.ComponentChildren }) {
  return (
    <main id="main" class="auth">
      <div class="auth-card">
        <p class="brand" aria-hidden="true">Huntaze</p>
        <PageTitle>{title}</PageTitle>
        {children}
      </div>
    </main>
  );
}

async function afterSignIn(next: string | null): Promise<void> {
  await loadSession();
  navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/", { replace: true });
}

export function SignIn({ next }: { next: string | null }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [challenge, setChallenge] = useState<string | null>(null);
  const [code, setCode] = useState("");
  const signIn = useAction(async () => {
    const answer = await ok(api.POST("/api/auth/login", { body: { email, password } }));
    if (answer.status === "two_factor_required" && answer.challenge) setChallenge(answer.challenge.challengeToken);
    else await afterSignIn(next);
  });
  const second = useAction(async () => {
    await ok(api.POST("/api/auth/login/2fa", { body: { challengeToken: challenge ?? "", code: code.replace(/\s+/g, "") } }));
    await afterSignIn(next);
  });
  if (challenge) {
    return (
      <AuthCard title="Two-factor code">
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void second.run();
          }}
        >
          <p>Enter the 6-digit code from your authenticator app, or one of your recovery codes.</p>
          <ErrorBanner error={second.error} />
          <Input label="Code" value={code} onValue={setCode} autocomplete="one-time-code" inputMode="text" required autoFocus error={fieldError(second.error, "code")} />
          <Button type="submit" busy={second.busy}>Verify and sign in</Button>
          <p>
            <button type="button" class="link" onClick={() => setChallenge(null)}>Use another account</button>
          </p>
        </form>
      </AuthCard>
    );
  }
  return (
    <AuthCard title="Sign in">
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void signIn.run();
        }}
      >
        <ErrorBanner error={signIn.error} />
        <Input label="Email address" type="email" value={email} onValue={setEmail} autocomplete="username" required error={fieldError(signIn.error, "email")} />
        <Input label="Password" type="password" value={password} onValue={setPassword} autocomplete="current-password" required error={fieldError(signIn.error, "password")} />
        <Button type="submit" busy={signIn.busy}>Sign in</Button>
      </form>
      <p class="aside">
        <a href="/forgot-password">Forgot your password?</a> · New here? <a href="/sign-up">Create an account</a>
      </p>
    </AuthCard>
  );
}

export function SignUp() {
  const [name, setName] = useState("");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [sentTo, setSentTo] = useState<string | null>(null);
  const register = useAction(async () => {
    await ok(api.POST("/api/auth/register", { body: { name, email, password } }));
    setSentTo(email);
  });
  const resend = useAction(async () => {
    await ok(api.POST("/api/auth/resend-verification", { body: { email: sentTo ?? "" } }));
  });
  if (sentTo) {
    return (
      <AuthCard title="Check your email">
        <Notice kind="success">
          We sent a link to <strong>{sentTo}</strong>. Open it to verify your address, then sign in.
        </Notice>
        <ErrorBanner error={resend.error} />
        <Button kind="secondary" busy={resend.busy} onClick={() => void resend.run()}>Send the email again</Button>
        <p class="aside"><a href="/sign-in">Go to sign in</a></p>
      </AuthCard>
    );
  }
  return (
    <AuthCard title="Create your account">
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void register.run();
        }}
      >
        <ErrorBanner error={register.error} />
        <Input label="Your name" value={name} onValue={setName} autocomplete="name" required error={fieldError(register.error, "name")} />
        <Input label="Email address" type="email" value={email} onValue={setEmail} autocomplete="email" required error={fieldError(register.error, "email")} />
        <Input
          label="Password"
          type="password"
          value={password}
          onValue={setPassword}
          autocomplete="new-password"
          required
          hint="At least 12 characters; a few unrelated words make a strong one."
          error={fieldError(register.error, "password")}
        />
        <Button type="submit" busy={register.busy}>Create account</Button>
      </form>
      <p class="aside">Already have an account? <a href="/sign-in">Sign in</a></p>
    </AuthCard>
  );
}

export function VerifyEmail({ token }: { token: string }) {
  const [verified, setVerified] = useState(false);
  // A click rather than verifying on open: mail scanners fetch every link of a message.
  const verify = useAction(async () => {
    await ok(api.POST("/api/auth/verify-email", { body: { token } }));
    setVerified(true);
  });
  if (!token) {
    return (
      <AuthCard title="This link is incomplete">
        <p>Open the link from the email again, or copy the whole address into the browser.</p>
        <p class="aside"><a href="/sign-in">Go to sign in</a></p>
      </AuthCard>
    );
  }
  if (verified) {
    return (
      <AuthCard title="Email address verified">
        <Notice kind="success">Your email address is verified.</Notice>
        <a class="btn btn-primary" href="/onboarding">Continue</a>
      </AuthCard>
    );
  }
  return (
    <AuthCard title="Verify your email address">
      <p>Confirm that this email address is yours.</p>
      <ErrorBanner error={verify.error} />
      {fieldError(verify.error, "token") ? (
        <ResendVerification />
      ) : (
        <Button busy={verify.busy} onClick={() => void verify.run()}>Verify my email address</Button>
      )}
    </AuthCard>
  );
}

function ResendVerification() {
  const [email, setEmail] = useState("");
  const [sent, setSent] = useState(false);
  const resend = useAction(async () => {
    await ok(api.POST("/api/auth/resend-verification", { body: { email } }));
    setSent(true);
  });
  if (sent) return <Notice kind="success">If {email} is waiting for verification, a new link is on its way.</Notice>;
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        void resend.run();
      }}
    >
      <ErrorBanner error={resend.error} />
      <Input label="Email address" type="email" value={email} onValue={setEmail} autocomplete="email" required error={fieldError(resend.error, "email")} />
      <Button type="submit" busy={resend.busy}>Send me a new link</Button>
    </form>
  );
}

export function ForgotPassword({ title = "Forgot your password?" }: { title?: string }) {
  const [email, setEmail] = useState("");
  const [sent, setSent] = useState(false);
  const request = useAction(async () => {
    await ok(api.POST("/api/auth/forgot-password", { body: { email } }));
    setSent(true);
  });
  return (
    <AuthCard title={title}>
      {sent ? (
        <Notice kind="success">If an account uses {email}, a link to choose a new password is on its way. It works for one hour.</Notice>
      ) : (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void request.run();
          }}
        >
          <p>We will email you a link to choose a new password. Choosing one signs out every session.</p>
          <ErrorBanner error={request.error} />
          <Input label="Email address" type="email" value={email} onValue={setEmail} autocomplete="email" required error={fieldError(request.error, "email")} />
          <Button type="submit" busy={request.busy}>Email me a link</Button>
        </form>
      )}
      <p class="aside"><a href="/sign-in">Back to sign in</a></p>
    </AuthCard>
  );
}

export function ResetPassword({ token }: { token: string }) {
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [done, setDone] = useState(false);
  const [mismatch, setMismatch] = useState(false);
  const reset = useAction(async () => {
    await ok(api.POST("/api/auth/reset-password", { body: { token, newPassword: password } }));
    setDone(true);
  });
  useEffect(() => setMismatch(false), [password, confirm]);
  if (done) {
    return (
      <AuthCard title="Password changed">
        <Notice kind="success">Your password is changed and every session was signed out.</Notice>
        <a class="btn btn-primary" href="/sign-in">Sign in</a>
      </AuthCard>
    );
  }
  return (
    <AuthCard title="Choose a new password">
      {!token && <Notice kind="warning">This link is incomplete: open the link from the email again.</Notice>}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (password !== confirm) setMismatch(true);
          else void reset.run();
        }}
      >
        <ErrorBanner error={reset.error} />
        <Input label="New password" type="password" value={password} onValue={setPassword} autocomplete="new-password" required error={fieldError(reset.error, "newPassword")} />
        <Input label="New password again" type="password" value={confirm} onValue={setConfirm} autocomplete="new-password" required error={mismatch ? "The two passwords are not the same." : undefined} />
        <Button type="submit" busy={reset.busy} disabled={!token}>Change password</Button>
      </form>
      {fieldError(reset.error, "token") && <p class="aside"><a href="/forgot-password">Ask for a new link</a></p>}
    </AuthCard>
  );
}
