// gRPC-Web clients for the lobby (Auth, Profile, Chat, Console, Tournaments)
// and the matchmaker, addressed from GET /config.json, with the access token
// kept in sessionStorage and refreshed before it expires.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Auth, type TokenPair } from "./gen/auth_pb";
import { Chat } from "./gen/chat_pb";
import { Matchmaker } from "./gen/matchmaker_pb";
import { Profile } from "./gen/profile_pb";
import { Tournaments } from "./gen/tournament_pb";
import { Console } from "./gen/optional";

export interface ShardConfig {
  name: string;
  address: string;
  certificate_hashes: string[];
}

/** GET /config.json, as the Rust web server serves it. */
export interface WebConfig {
  lobby: string;
  matchmaker: string;
  shards: ShardConfig[];
}

export async function fetchConfig(): Promise<WebConfig> {
  const res = await fetch("/config.json", { cache: "no-store" });
  if (!res.ok) throw new Error(`GET /config.json: HTTP ${res.status}`);
  const c = (await res.json()) as Partial<WebConfig>;
  if (typeof c.lobby !== "string" || typeof c.matchmaker !== "string") {
    throw new Error("/config.json lacks the lobby or matchmaker URL");
  }
  return { lobby: c.lobby, matchmaker: c.matchmaker, shards: Array.isArray(c.shards) ? c.shards : [] };
}

/** The certificate hashes for a shard, from a fresh config.json (hashes rotate). No entry: none (a real certificate). */
export async function shardHashes(shardName: string, shardAddress: string): Promise<string[]> {
  const cfg = await fetchConfig();
  const entry = cfg.shards.find((s) => s.name === shardName) ?? cfg.shards.find((s) => s.address === shardAddress);
  return entry ? entry.certificate_hashes.map((h) => h.toLowerCase()) : [];
}

// ---- tokens --------------------------------------------------------------

export interface Session {
  accessToken: string;
  accessExpiresAtMs: number;
  refreshToken: string;
  playerId: string; // uint64 as decimal text
  username: string;
}

const SESSION_KEY = "rally.session";
/** Refresh this long before the access token expires. */
const REFRESH_MARGIN_MS = 15_000;

export function currentSession(): Session | null {
  try {
    const raw = sessionStorage.getItem(SESSION_KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

function saveSession(s: Session | null): void {
  if (s) sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else sessionStorage.removeItem(SESSION_KEY);
}

function withTokens(prev: Pick<Session, "playerId" | "username">, t: TokenPair): Session {
  return {
    accessToken: t.accessToken,
    accessExpiresAtMs: Number(t.accessExpiresAtMs),
    refreshToken: t.refreshToken,
    playerId: prev.playerId,
    username: prev.username,
  };
}

// ---- clients ---------------------------------------------------------------

export interface Api {
  config: WebConfig;
  auth: Client<typeof Auth>;
  profile: Client<typeof Profile>;
  chat: Client<typeof Chat>;
  matchmaker: Client<typeof Matchmaker>;
  tournaments: Client<typeof Tournaments>;
  /** Undefined while the server's protocol has no Console service. */
  console: ConsoleClient | undefined;
}

type ConsoleClient = typeof Console extends undefined ? never : Client<NonNullable<typeof Console>>;

let api: Promise<Api> | null = null;
let refreshing: Promise<void> | null = null;

/** The clients, built once from /config.json. */
export function getApi(): Promise<Api> {
  api ??= fetchConfig().then(build);
  api.catch(() => (api = null));
  return api;
}

function build(config: WebConfig): Api {
  const plainLobby = createGrpcWebTransport({ baseUrl: config.lobby });
  const authClient = createClient(Auth, plainLobby);

  async function freshAccessToken(): Promise<string | null> {
    let s = currentSession();
    if (!s) return null;
    if (Date.now() + REFRESH_MARGIN_MS >= s.accessExpiresAtMs) {
      refreshing ??= (async () => {
        const cur = currentSession();
        if (!cur) return;
        try {
          const t = await authClient.refresh({ refreshToken: cur.refreshToken });
          saveSession(withTokens(cur, t));
        } catch (e) {
          if (ConnectError.from(e).code === Code.Unauthenticated) saveSession(null);
          throw e;
        }
      })().finally(() => (refreshing = null));
      await refreshing;
      s = currentSession();
    }
    return s?.accessToken ?? null;
  }

  const bearer: Interceptor = (next) => async (req) => {
    const token = await freshAccessToken();
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const lobby = createGrpcWebTransport({ baseUrl: config.lobby, interceptors: [bearer] });
  const mm = createGrpcWebTransport({ baseUrl: config.matchmaker, interceptors: [bearer] });
  return {
    config,
    auth: createClient(Auth, lobby),
    profile: createClient(Profile, lobby),
    chat: createClient(Chat, lobby),
    matchmaker: createClient(Matchmaker, mm),
    tournaments: createClient(Tournaments, lobby),
    console: (Console ? createClient(Console, lobby) : undefined) as ConsoleClient | undefined,
  };
}

// ---- account ---------------------------------------------------------------

export async function register(username: string, password: string): Promise<Session> {
  const a = await getApi();
  const r = await a.auth.register({ username, password, idempotencyKey: crypto.randomUUID() });
  if (!r.tokens || !r.account) throw new Error("Register answered without tokens");
  const s = withTokens({ playerId: r.account.playerId.toString(), username: r.account.username }, r.tokens);
  saveSession(s);
  return s;
}

export async function login(username: string, password: string): Promise<Session> {
  const a = await getApi();
  const t = await a.auth.login({ username, password });
  // The account id comes from Me, with the new token.
  saveSession(withTokens({ playerId: "0", username }, t));
  const me = await a.auth.me({});
  const s = withTokens({ playerId: me.playerId.toString(), username: me.username }, t);
  saveSession(s);
  return s;
}

export async function logout(): Promise<void> {
  const s = currentSession();
  saveSession(null);
  if (!s) return;
  try {
    await (await getApi()).auth.logout({ refreshToken: s.refreshToken });
  } catch {
    // The local session is gone either way.
  }
}

/** The message a person reads for a failed call: the gRPC message, not the wrapper's prefix. */
export function errorText(e: unknown): string {
  if (e instanceof ConnectError) return e.rawMessage || Code[e.code] || "request failed";
  if (e instanceof Error) return e.message;
  return String(e);
}

export function errorCode(e: unknown): Code | null {
  return e instanceof ConnectError ? e.code : null;
}

export { Code, ConnectError };

// ---- matchmaker additions (ListMatches, Spectate) ----------------------------
// Another helper is adding these RPCs; until the generated client has them the
// home page shows no running matches and Watch reports that it is unavailable.

export interface LiveMatchView {
  matchId: bigint;
  mode: string;
  shardName: string;
  roster: { playerId: bigint; displayName: string; seat: number; side: number; bot: boolean }[];
  startedAtMs: bigint;
}

export interface SpectateView {
  matchId: bigint;
  shardName: string;
  shardAddress: string;
  certificateSha256: string;
  token: Uint8Array;
  delayMs: number;
}

type Loose = Record<string, ((req: object) => Promise<unknown>) | undefined>;

export async function listMatches(mode: string, pageSize: number): Promise<LiveMatchView[] | null> {
  const mm = (await getApi()).matchmaker as unknown as Loose;
  const call = mm["listMatches"];
  if (!call) return null;
  const r = (await call({ mode, pageSize })) as { matches?: LiveMatchView[] };
  return r.matches ?? [];
}

export async function spectate(matchId: bigint): Promise<SpectateView> {
  const mm = (await getApi()).matchmaker as unknown as Loose;
  const call = mm["spectate"];
  if (!call) throw new Error("this matchmaker cannot spectate yet (no Spectate RPC)");
  return (await call({ matchId })) as SpectateView;
}
