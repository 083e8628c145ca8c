// #/ : your rating, the leaderboard, lobby chat, play buttons and running matches.
import { currentSession, errorText, getApi, listMatches, logout } from "../api";
import type { ChatMessage } from "../gen/chat_pb";
import { fill, fmtRating, h, navigate, Scope, type View } from "./dom";
import { probe } from "./hooks";

const LOBBY_CHANNEL = "lobby";
const CHAT_KEEP = 100;

export function homeView(root: HTMLElement): View {
  const scope = new Scope();
  probe.state = "home";
  const me = currentSession();

  const rating = h("span", { id: "rating" }, "…");
  const record = h("span", { class: "muted" });
  const board = h("ol", { id: "leaderboard", class: "board" });
  const boardNote = h("p", { class: "muted" });
  const matches = h("ul", { id: "matches", class: "matches" });
  const matchesNote = h("p", { class: "muted" }, "Loading…");
  const chatLog = h("ul", { id: "chat-log", class: "chat" });
  const chatInput = h("input", { id: "chat-input", placeholder: "Say something to the lobby", maxlength: 500 });
  const chatError = h("p", { class: "error" });
  const error = h("p", { class: "error" });

  root.replaceChildren(
    h(
      "header",
      { class: "bar" },
      h("h1", {}, "rally"),
      h("span", {}, "Signed in as ", h("b", { id: "me" }, me?.username ?? "?")),
      h("nav", {}, h("a", { href: "#/console" }, "Console"), " ", h("a", { href: "#/tournaments" }, "Tournaments"), " ",
        h("a", { href: "#/login", onclick: (e: Event) => { e.preventDefault(); void logout().then(() => navigate("#/login")); } }, "Log out")),
    ),
    error,
    h(
      "main",
      { class: "grid" },
      h(
        "section",
        { class: "card" },
        h("h2", {}, "Play"),
        h("p", {}, "Your rating: ", rating, " ", record),
        h(
          "div",
          { class: "row" },
          h("button", { id: "play-bot", class: "primary", onclick: () => navigate("#/play?mode=pong-bot") }, "Play vs bot"),
          h("button", { id: "play-person", class: "primary", onclick: () => navigate("#/play?mode=pong") }, "Play vs a person"),
        ),
        h("h2", {}, "Running matches"),
        matchesNote,
        matches,
      ),
      h("section", { class: "card" }, h("h2", {}, "Leaderboard"), board, boardNote),
      h(
        "section",
        { class: "card chat-card" },
        h("h2", {}, "Lobby chat"),
        chatLog,
        h(
          "form",
          {
            class: "row",
            onsubmit: (e: Event) => {
              e.preventDefault();
              void send();
            },
          },
          chatInput,
          h("button", { id: "chat-send", type: "submit" }, "Send"),
        ),
        chatError,
      ),
    ),
  );

  let channelId: string | null = null;
  const seen = new Set<string>();
  function addMessage(m: ChatMessage) {
    const key = m.messageId.toString();
    if (seen.has(key)) return;
    seen.add(key);
    const time = new Date(Number(m.sentAtMs)).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    chatLog.append(h("li", {}, h("span", { class: "muted" }, time, " "), h("b", {}, m.senderName || `#${m.senderId}`), ": ", m.body));
    while (chatLog.children.length > CHAT_KEEP) chatLog.firstElementChild?.remove();
    chatLog.scrollTop = chatLog.scrollHeight;
  }
  async function send() {
    const body = chatInput.value.trim();
    if (!body || !channelId) return;
    chatError.textContent = "";
    try {
      const a = await getApi();
      const m = await a.chat.send({ channelId, body, idempotencyKey: crypto.randomUUID() });
      addMessage(m);
      chatInput.value = "";
    } catch (e) {
      chatError.textContent = errorText(e);
    }
  }

  void (async () => {
    try {
      const a = await getApi();
      const p = await a.profile.getProfile({ playerId: 0n });
      rating.textContent = fmtRating(p.rating);
      record.textContent = `(${p.wins} won, ${p.losses} lost)`;
      const lb = await a.profile.leaderboard({ pageSize: 10, rankOf: p.playerId });
      fill(
        board,
        lb.entries.map((e) =>
          h("li", { class: e.playerId === p.playerId ? "me" : undefined }, h("span", { class: "rank" }, `${e.rank}.`), " ", e.displayName, h("span", { class: "num" }, fmtRating(e.rating))),
        ),
      );
      if (lb.player && !lb.entries.some((e) => e.playerId === p.playerId)) {
        boardNote.textContent = `You: rank ${lb.player.rank}, ${fmtRating(lb.player.rating)}`;
      }
    } catch (e) {
      if (!scope.disposed) error.textContent = errorText(e);
    }
  })();

  void (async () => {
    try {
      const a = await getApi();
      const ch = await a.chat.join({ target: { case: "publicName", value: LOBBY_CHANNEL } });
      channelId = ch.channelId;
      const hist = await a.chat.history({ channelId, pageSize: 30 });
      [...hist.messages].sort((x, y) => (x.messageId < y.messageId ? -1 : 1)).forEach(addMessage);
      const after = hist.messages.reduce((m, x) => (x.messageId > m ? x.messageId : m), 0n);
      for await (const m of a.chat.subscribe({ channelId, afterId: after }, { signal: scope.abort.signal })) addMessage(m);
    } catch (e) {
      if (!scope.disposed) chatError.textContent = `Chat: ${errorText(e)}`;
    }
  })();

  scope.every(3000, () => {
    void listMatches("", 20)
      .then((list) => {
        if (scope.disposed) return;
        if (list === null) {
          matchesNote.textContent = "This matchmaker does not list matches.";
          return;
        }
        matchesNote.textContent = list.length ? "" : "No matches are running.";
        fill(
          matches,
          list.map((m) =>
            h(
              "li",
              {},
              h("span", {}, m.roster.map((s) => (s.bot ? `${s.displayName || "bot"} 🤖` : s.displayName)).join(" vs ") || `match ${m.matchId}`),
              h("span", { class: "muted" }, ` ${m.mode} on ${m.shardName}`),
              h("button", { id: `watch-${m.matchId}`, onclick: () => navigate(`#/watch/${m.matchId}`) }, "Watch"),
            ),
          ),
        );
      })
      .catch((e: unknown) => {
        if (!scope.disposed) matchesNote.textContent = `Matches: ${errorText(e)}`;
      });
  });
  return scope;
}
