// Who is signed in: the user and their profile, loaded once and shared by every page.
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, ok, type Profile, type User } from "./api/client";

export interface SessionState {
  status: "loading" | "signed-out" | "signed-in";
  user?: User;
  profile?: Profile;
}

let state: SessionState = { status: "loading" };
const listeners = new Set<(s: SessionState) => void>();

function set(next: SessionState): void {
  state = next;
  listeners.forEach((l) => l(state));
}

export async function loadSession(): Promise<SessionState> {
  try {
    const me = await ok(api.GET("/api/auth/me"));
    set({ status: "signed-in", user: me.user ?? undefined, profile: me.profile ?? undefined });
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) set({ status: "signed-out" });
    else throw error;
  }
  return state;
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
