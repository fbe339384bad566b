// The onboarding: the creator's profile, the AI configuration, connecting OnlyFans, done.
import { useState } from "preact/hooks";
import { api, ok, type Profile } from "../api/client";
import { navigate } from "../router";
import { loadSession } from "../session";
import { Button, ErrorBanner, Field, fieldError, Input, Loading, Notice, PageTitle, useAction, useLoad } from "../ui/kit";
import { AiConfigForm } from "./ai-config";
import { ConnectOnlyFans } from "./connection";

const STEPS = ["Profile", "AI replies", "OnlyFans", "Done"] as const;
const NICHES = ["lifestyle", "fitness", "cosplay", "gaming", "fashion", "music", "art", "adult", "other"];
const GOALS = ["Grow subscribers", "Sell more PPV", "Save time on chats", "Keep fans longer"];

export function Onboarding() {
  const [step, setStep] = useState(0);
  return (
    <main id="main" class="page narrow">
      <p class="brand" aria-hidden="true">Huntaze</p>
      <PageTitle>Set up your account</PageTitle>
      <ol class="steps" aria-label="Steps">
        {STEPS.map((name, i) => (
          <li key={name} class={i < step ? "done" : undefined} aria-current={i === step ? "step" : undefined}>
            {i + 1}. {name}
          </li>
        ))}
      </ol>
      <section class="card" aria-labelledby="step-title">
        <h2 id="step-title">{STEPS[step]}</h2>
        {step === 0 && <ProfileStep onDone={() => setStep(1)} />}
        {step === 1 && (
          <>
            <p>Choose how the AI helps with your chats. You can change this any time in Settings.</p>
            <AiConfigForm submitLabel="Save and continue" onSaved={() => setStep(2)} />
          </>
        )}
        {step === 2 && <ConnectStep onDone={() => setStep(3)} />}
        {step === 3 && <DoneStep />}
      </section>
      {step > 0 && step < 3 && (
        <button type="button" class="link" onClick={() => setStep(step - 1)}>
          Back to {STEPS[step - 1]}
        </button>
      )}
    </main>
  );
}

function ProfileStep({ onDone }: { onDone: () => void }) {
  const loaded = useLoad(async () => ok(api.GET("/api/onboarding/profile")));
  if (loaded.loading && !loaded.data) return <Loading />;
  if (loaded.error) return <ErrorBanner error={loaded.error} />;
  return <ProfileForm profile={(loaded.data as Profile | undefined) ?? {}} onDone={onDone} />;
}

function ProfileForm({ profile, onDone }: { profile: Profile; onDone: () => void }) {
  const [displayName, setDisplayName] = useState(profile.displayName ?? "");
  const [bio, setBio] = useState(profile.bio ?? "");
  const [niche, setNiche] = useState(profile.niche || "lifestyle");
  const [timezone, setTimezone] = useState(profile.timezone || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
  const [goals, setGoals] = useState<string[]>(profile.goals ?? []);
  const save = useAction(async () => {
    await ok(api.POST("/api/onboarding/save-profile", { body: { displayName, bio, niche, timezone, goals } }));
    onDone();
  });
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        void save.run();
      }}
    >
      <ErrorBanner error={save.error} />
      <Input label="Display name" value={displayName} onValue={setDisplayName} required autocomplete="nickname" error={fieldError(save.error, "displayName")} />
      <Field label="About you" hint="A few lines fans would read on your page." error={fieldError(save.error, "bio")}>
        {(id, describedBy) => <textarea id={id} aria-describedby={describedBy} value={bio} maxLength={1000} onInput={(e) => setBio(e.currentTarget.value)} />}
      </Field>
      <div class="two">
        <Field label="Niche" error={fieldError(save.error, "niche")}>
          {(id) => (
            <select id={id} value={niche} onChange={(e) => setNiche(e.currentTarget.value)}>
              {NICHES.map((n) => (
                <option key={n} value={n}>{n[0].toUpperCase() + n.slice(1)}</option>
              ))}
            </select>
          )}
        </Field>
        <Input label="Time zone" value={timezone} onValue={setTimezone} required hint="For example Europe/Paris." error={fieldError(save.error, "timezone")} />
      </div>
      <fieldset>
        <legend>Your goals</legend>
        {GOALS.map((g) => (
          <label class="check" key={g}>
            <input
              type="checkbox"
              checked={goals.includes(g)}
              onChange={(e) => setGoals(e.currentTarget.checked ? [...goals, g] : goals.filter((x) => x !== g))}
            />
            {g}
          </label>
        ))}
      </fieldset>
      <Button type="submit" busy={save.busy}>Save and continue</Button>
    </form>
  );
}

function ConnectStep({ onDone }: { onDone: () => void }) {
  const [connected, setConnected] = useState(false);
  return (
    <>
      <p>Connect your OnlyFans account: your fans, chats and sales come into Huntaze, and your replies go out from it.</p>
      <ConnectOnlyFans onboarding onConnected={() => setConnected(true)} />
      <div class="row end">
        {connected ? (
          <Button onClick={onDone}>Continue</Button>
        ) : (
          <Button kind="ghost" onClick={onDone}>Skip for now</Button>
        )}
      </div>
    </>
  );
}

function DoneStep() {
  const finish = useAction(async () => {
    await ok(api.POST("/api/onboarding/complete"));
    await loadSession();
    navigate("/inbox");
  });
  return (
    <>
      <Notice kind="success">You are all set. Your inbox fills up as OnlyFans syncs.</Notice>
      <ErrorBanner error={finish.error} />
      <Button busy={finish.busy} onClick={() => void finish.run()}>Go to my inbox</Button>
    </>
  );
}
