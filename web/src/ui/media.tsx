// Media from the creator's OnlyFans vault, listed by the worker from the platform: a paid message
// or a campaign attaches them by id, so nobody types an id by hand.
import { useState } from "preact/hooks";
import { api, ApiError, ok, type VaultMedia } from "../api/client";
import { Button, ErrorBanner, Loading } from "./kit";

const PAGE = 24;
const KIND_LABELS: Record<string, string> = { image: "Photo", video: "Video", audio: "Audio", file: "File" };

function duration(seconds: number | undefined): string {
  const s = seconds ?? 0;
  return s > 0 ? ` ${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}` : "";
}

/** "Video 1:05 · added 3 Nov", what the creator recognises a file by. */
export function mediaLabel(media: VaultMedia): string {
  const added = media.createdAt ? ` · added ${new Date(media.createdAt).toLocaleDateString(undefined, { day: "numeric", month: "short" })}` : "";
  return `${KIND_LABELS[media.kind ?? "file"] ?? "File"}${duration(media.durationSeconds)}${added}`;
}

// The vault as read so far, shared by every picker of the page (the platform is asked once).
let loaded: { media: VaultMedia[]; next: string | null } | null = null;

async function loadPage(cursor: string | null): Promise<{ media: VaultMedia[]; next: string | null }> {
  const page = await ok(api.GET("/api/of/vault/media", { params: { query: { limit: PAGE, ...(cursor ? { cursor } : {}) } } }));
  return { media: page.media ?? [], next: page.nextCursor ?? null };
}

/** Pick vault media for one message; `selected` are platform media ids. */
export function MediaPicker({ label, selected, onChange }: { label: string; selected: string[]; onChange: (ids: string[]) => void }) {
  const [open, setOpen] = useState(false);
  const [vault, setVault] = useState(loaded);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const load = async (cursor: string | null) => {
    setBusy(true);
    setError(null);
    try {
      const page = await loadPage(cursor);
      loaded = { media: [...(cursor ? (loaded?.media ?? []) : []), ...page.media], next: page.next };
      setVault(loaded);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const toggle = () => {
    if (!open && !vault) void load(null);
    setOpen(!open);
  };
  const flip = (id: string, on: boolean) => onChange(on ? [...selected, id] : selected.filter((m) => m !== id));
  const notConnected = error instanceof ApiError && error.code === "NOT_CONNECTED";
  const known = new Map((vault?.media ?? []).map((m) => [m.platformMediaId ?? "", m]));

  return (
    <fieldset class="media-picker">
      <legend>{label}</legend>
      <p class="hint">
        {selected.length === 0
          ? "None attached."
          : `${selected.length} attached: ${selected.map((id) => (known.has(id) ? mediaLabel(known.get(id)!) : `#${id}`)).join(", ")}.`}
      </p>
      <Button kind="secondary" class="btn-small" aria-expanded={open} onClick={toggle}>
        {open ? "Close the vault" : "Choose from your vault"}
      </Button>
      {open && (
        <div class="media-list">
          {busy && !vault && <Loading label="Reading your vault on OnlyFans…" />}
          {notConnected ? (
            <p class="banner banner-warning">
              Connect your OnlyFans account to attach media from its vault: <a href="/settings/connections">Connections</a>.
            </p>
          ) : (
            <ErrorBanner error={error} />
          )}
          {vault && vault.media.length === 0 && <p class="empty">Your vault is empty: upload media on OnlyFans first.</p>}
          {vault && vault.media.length > 0 && (
            <ul>
              {vault.media.map((m) => {
                const id = m.platformMediaId ?? "";
                return (
                  <li key={id}>
                    <label>
                      <input type="checkbox" checked={selected.includes(id)} onChange={(e) => flip(id, e.currentTarget.checked)} />
                      {mediaLabel(m)} <span class="muted">#{id}</span>
                    </label>
                  </li>
                );
              })}
            </ul>
          )}
          {vault?.next && (
            <Button kind="ghost" class="btn-small" busy={busy} onClick={() => void load(vault.next)}>
              Show more media
            </Button>
          )}
        </div>
      )}
    </fieldset>
  );
}
