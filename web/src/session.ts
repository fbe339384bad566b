// Who is signed in: the user and their profile, loaded once and shared by every page.
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, ok, type Profile, type User } from "./api/client";

export interface SessionState {
  status: "loading" | "signed-out" | "signed-in" | "unreachable";
  error?: unknown;
  user?: User;
  profile?: Profile;
}

let state: SessionState = { status: "loading" };
const listeners = new Set<(s: SessionState) => void>();

function set(next: SessionState): void {
  state = next;
  listeners.forEach((l) => l(state));
}

const ATTEMPTS = 4;

/** Who is signed in. A refused token means signed out; an outage is retried a few times, then
 * said as such (never taken for a sign-out). */
export async function loadSession(): Promise<SessionState> {
  for (let attempt = 1; ; attempt++) {
    try {
      const me = await ok(api.GET("/api/auth/me"));
      set({ status: "signed-in", user: me.user ?? undefined, profile: me.profile ?? undefined });
      return state;
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        set({ status: "signed-out" });
        return state;
      }
      if (attempt >= ATTEMPTS) {
        set({ status: "unreachable", error });
        return state;
      }
      await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
    }
  }
}

export function signedOut(): void {
  set({ status: "signed-out" });
}

export function useSession(): SessionState {
  const [value, setValue] = useState(state);
  useEffect(() => {
    listeners.add(setValue);
    setValue(state);
    return () => void listeners.delete(setValue);
  }, []);
  return value;
}

export function onboarded(s: SessionState): boolean {
  return Boolean(s.user?.onboardingCompleted || s.profile?.onboardingCompleted);
}
