// window.rallyTest: stable hooks for the headless-browser test.

export type AppState = "login" | "home" | "queue" | "playing" | "result" | "watching" | "console" | "tournaments";

export interface MatchResult {
  ourScore: number;
  theirScore: number;
  ratingBefore: number | null;
  ratingAfter: number | null;
  won: boolean;
}

export interface Percentiles {
  p50: number;
  p95: number;
  samples: number;
}

export interface Stats {
  fps: number;
  inputToScreenMs: Percentiles;
  serverEchoMs: Percentiles;
}

export interface RallyTest {
  state(): string;
  result(): MatchResult | null;
  frames(): number;
  lastBall(): { x: number; y: number } | null;
  stats(): Stats;
}

/** Mutable state behind the hooks; the views write it. */
export const probe = {
  state: "login" as AppState,
  result: null as MatchResult | null,
  frames: 0,
  firstFrameMs: null as number | null,
  lastFrameMs: null as number | null,
  lastBall: null as { x: number; y: number } | null,
  inputToScreen: [] as number[],
  serverEcho: [] as number[],

  /** A new match (or spectating) starts: frame counts and latency samples restart. */
  resetMatch(): void {
    this.result = null;
    this.frames = 0;
    this.firstFrameMs = null;
    this.lastFrameMs = null;
    this.lastBall = null;
    this.inputToScreen = [];
    this.serverEcho = [];
  },
};

export function percentiles(samples: number[]): Percentiles {
  if (samples.length === 0) return { p50: 0, p95: 0, samples: 0 };
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? 0;
  return { p50: at(0.5), p95: at(0.95), samples: s.length };
}

export function installHooks(): void {
  const hooks: RallyTest = {
    state: () => probe.state,
    result: () => (probe.result ? { ...probe.result } : null),
    frames: () => probe.frames,
    lastBall: () => (probe.lastBall ? { ...probe.lastBall } : null),
    stats: () => {
      const span =
        probe.firstFrameMs !== null && probe.lastFrameMs !== null ? (probe.lastFrameMs - probe.firstFrameMs) / 1000 : 0;
      return {
        fps: span > 0 ? (probe.frames - 1) / span : 0,
        inputToScreenMs: percentiles(probe.inputToScreen),
        serverEchoMs: percentiles(probe.serverEcho),
      };
    },
  };
  (window as unknown as { rallyTest: RallyTest }).rallyTest = hooks;
}
