// The AI configuration form, shared by onboarding and settings. The API replaces the whole
// configuration, so the form starts from the saved one and sends it back with its changes.
import { useState } from "preact/hooks";
import { api, ok, type Schemas } from "../api/client";
import { Button, ErrorBanner, Field, fieldError, Input, Loading, Notice, useAction, useLoad } from "../ui/kit";

type AiConfig = Schemas["AiConfigBody"];
type Mode = NonNullable<AiConfig["mode"]>;

const MODES: { value: Mode; label: string; hint: string }[] = [
  { value: "off", label: "Off", hint: "No drafts; you write every reply." },
  { value: "suggest", label: "Suggest", hint: "The AI drafts a reply; you accept, edit or reject it." },
  { value: "autopilot", label: "Autopilot", hint: "The AI replies by itself after a short delay, unless you reply first." },
];
const TONES = ["flirty", "friendly", "playful", "professional", "caring"];

function lines(text: string): string[] {
  return text.split("\n").map((l) => l.trim()).filter(Boolean);
}

export function AiConfigForm({ submitLabel, onSaved }: { submitLabel: string; onSaved?: () => void }) {
  const loaded = useLoad(async () => (await ok(api.GET("/api/ai/config"))) as AiConfig);
  if (loaded.loading && !loaded.data) return <Loading label="Loading your AI configuration…" />;
  if (loaded.error) return <ErrorBanner error={loaded.error} />;
  return <AiConfigFields saved={loaded.data ?? {}} submitLabel={submitLabel} onSaved={onSaved} />;
}

function AiConfigFields({ saved, submitLabel, onSaved }: { saved: AiConfig; submitLabel: string; onSaved?: () => void }) {
  const [mode, setMode] = useState<Mode>(saved.mode && saved.mode !== ("unspecified" as Mode) ? saved.mode : "suggest");
  const [personality, setPersonality] = useState(saved.personality ?? "");
  const [tone, setTone] = useState(saved.responseStyle?.tone || "friendly");
  const [emoji, setEmoji] = useState(saved.responseStyle?.useEmoji ?? true);
  const [dos, setDos] = useState((saved.dos ?? []).join("\n"));
  const [donts, setDonts] = useState((saved.donts ?? []).join("\n"));
  const [ppvMin, setPpvMin] = useState(saved.guardrails?.ppvMinCents ? String(saved.guardrails.ppvMinCents / 100) : "");
  const [ppvMax, setPpvMax] = useState(saved.guardrails?.ppvMaxCents ? String(saved.guardrails.ppvMaxCents / 100) : "");
  const [answers, setAnswers] = useState<{ trigger: string; reply: string }[]>(saved.customResponses ?? []);
  const [done, setDone] = useState(false);
  const save = useAction(async () => {
    const cents = (v: string) => (v.trim() ? Math.round(Number(v) * 100) : null);
    const body: AiConfig = {
      ...saved,
      mode,
      personality,
      dos: lines(dos),
      customResponses: answers.filter((a) => a.trigger.trim() && a.reply.trim()),
      donts: lines(donts),
      responseStyle: { ...saved.responseStyle, tone, useEmoji: emoji },
      guardrails: { ...saved.guardrails, ppvMinCents: cents(ppvMin), ppvMaxCents: cents(ppvMax) },
    };
    await ok(api.PUT("/api/ai/config", { body }));
    setDone(true);
    onSaved?.();
  });
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        setDone(false);
        void save.run();
      }}
    >
      <ErrorBanner error={save.error} />
      <fieldset>
        <legend>How the AI helps</legend>
        {MODES.map((m) => (
          <label class="check" key={m.value}>
            <input type="radio" name="ai-mode" value={m.value} checked={mode === m.value} onChange={() => setMode(m.value)} />
            <span>
              <strong>{m.label}</strong> <span class="muted">{m.hint}</span>
            </span>
          </label>
        ))}
      </fieldset>
      <Field label="Personality" hint="How you talk to fans, in your words: the AI writes like this." error={fieldError(save.error, "personality")}>
        {(id, describedBy) => (
          <textarea id={id} aria-describedby={describedBy} value={personality} maxLength={2000} onInput={(e) => setPersonality(e.currentTarget.value)} />
        )}
      </Field>
      <div class="two">
        <Field label="Tone">
          {(id) => (
            <select id={id} value={tone} onChange={(e) => setTone(e.currentTarget.value)}>
              {TONES.map((t) => (
                <option key={t} value={t}>{t[0].toUpperCase() + t.slice(1)}</option>
              ))}
            </select>
          )}
        </Field>
        <label class="check">
          <input type="checkbox" checked={emoji} onChange={(e) => setEmoji(e.currentTarget.checked)} />
          Use emoji
        </label>
      </div>
      <div class="two">
        <Field label="Always (one rule a line)" error={fieldError(save.error, "dos")}>
          {(id) => <textarea id={id} value={dos} onInput={(e) => setDos(e.currentTarget.value)} />}
        </Field>
        <Field label="Never (one rule a line)" error={fieldError(save.error, "donts")}>
          {(id) => <textarea id={id} value={donts} onInput={(e) => setDonts(e.currentTarget.value)} />}
        </Field>
      </div>
      <div class="two">
        <Input label="Lowest PPV price the AI may offer ($)" type="number" min="0" step="0.01" inputMode="decimal" value={ppvMin} onValue={setPpvMin} error={fieldError(save.error, "guardrails.ppvMinCents")} />
        <Input label="Highest PPV price the AI may offer ($)" type="number" min="0" step="0.01" inputMode="decimal" value={ppvMax} onValue={setPpvMax} error={fieldError(save.error, "guardrails.ppvMaxCents")} />
      </div>
      <fieldset>
        <legend>Saved answers</legend>
        <p class="hint">When a fan's message contains the words, the AI drafts this answer ({"{name}"} becomes the fan's name).</p>
        {answers.map((a, i) => (
          <div class="two" key={i}>
            <Input label={`When a fan writes (${i + 1})`} value={a.trigger} onValue={(v) => setAnswers(answers.map((x, j) => (j === i ? { ...x, trigger: v } : x)))} error={fieldError(save.error, `customResponses[${i}].trigger`)} />
            <div>
              <Input label={`Answer (${i + 1})`} value={a.reply} onValue={(v) => setAnswers(answers.map((x, j) => (j === i ? { ...x, reply: v } : x)))} error={fieldError(save.error, `customResponses[${i}].reply`)} />
              <button type="button" class="link" onClick={() => setAnswers(answers.filter((_, j) => j !== i))}>Remove answer {i + 1}</button>
            </div>
          </div>
        ))}
        <Button kind="secondary" class="btn-small" onClick={() => setAnswers([...answers, { trigger: "", reply: "" }])}>Add a saved answer</Button>
      </fieldset>
      {done && <Notice kind="success">Your AI configuration is saved.</Notice>}
      <Button type="submit" busy={save.busy}>{submitLabel}</Button>
    </form>
  );
}
