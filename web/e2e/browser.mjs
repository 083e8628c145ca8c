// The browser test's script (run by tests/browser.rs, which starts `rally up`):
// headless Chromium (Debian's, driven by playwright-core) registers, queues
// against a house bot, plays the match to its end over WebTransport with the
// keyboard, and reads the result and the new rating; a second page, another
// account, watches a running match and sees the ball move; a third, an
// operator, opens the console and finds the shard and a match there.
//
// Input comes from the environment: RALLY_WEB_URL (the web client), CHROMIUM
// (the browser binary), ARTIFACTS (a directory for screenshots and stats.json),
// OPERATOR_USER / OPERATOR_PASSWORD (an account the test made an operator).
// Every wait is on a condition with a deadline; the last line on stdout is
// `BROWSER_STATS {json}`.

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = need("RALLY_WEB_URL");
const artifacts = need("ARTIFACTS");
mkdirSync(artifacts, { recursive: true });

function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

/** Polls `probe` (a function run in the page) until it returns a truthy value. */
async function until(page, what, probe, arg, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await page.evaluate(probe, arg).catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) {
      await page.screenshot({ path: join(artifacts, `timeout-${what.replace(/\W+/g, "-")}.png`) }).catch(() => {});
      const state = await page.evaluate(() => window.rallyTest?.state()).catch(() => "unknown");
      const text = await page.evaluate(() => document.body.innerText.slice(0, 600)).catch(() => "");
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (page state ${state}; page says: ${text})`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Run in the page: whether the app is in state `wanted`. */
const inState = (wanted) => window.rallyTest?.state() === wanted;

async function register(browser, username, password, tag) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") console.log(`[${tag} console] ${message.text()}`);
  });
  page.on("pageerror", (error) => console.log(`[${tag} page error] ${error.message}`));
  await page.goto(`${url}#/login`);
  await until(page, `${tag}: the login page`, inState, "login");
  await page.fill("#username", username);
  await page.fill("#password", password);
  return { context, page };
}

async function signUp(browser, username, password, tag) {
  const session = await register(browser, username, password, tag);
  await session.page.click("#register");
  await until(session.page, `${tag}: home after registering`, inState, "home");
  return session;
}

async function logIn(browser, username, password, tag) {
  const session = await register(browser, username, password, tag);
  await session.page.click("#login");
  await until(session.page, `${tag}: home after logging in`, inState, "home");
  return session;
}

/** Plays with the arrow keys: the paddle chases the ball's height. */
async function playWithKeys(page) {
  let held = null;
  const deadline = Date.now() + 240_000;
  while (Date.now() < deadline) {
    const view = await page.evaluate(() => ({ state: window.rallyTest.state(), frame: window.rallyTest.frame() }));
    if (view.state === "result") break;
    if (view.state === "playing" && view.frame && view.frame.ownSeat !== null) {
      const own = view.frame.paddles[view.frame.ownSeat];
      const gap = view.frame.ball.y - own.y;
      const want = Math.abs(gap) < own.h / 4 ? null : gap < 0 ? "ArrowUp" : "ArrowDown";
      if (want !== held) {
        if (held) await page.keyboard.up(held);
        if (want) await page.keyboard.down(want);
        held = want;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 30));
  }
  if (held) await page.keyboard.up(held);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const stamp = Date.now().toString(36);
try {
  // A player: register, the home page shows a rating; queue against a bot.
  const player = await signUp(browser, `web-${stamp}`, "correct horse battery staple", "player");
  await until(player.page, "the player's rating on the home page", () => document.querySelector("#rating")?.textContent?.trim(), undefined);
  await player.page.screenshot({ path: join(artifacts, "home.png") });
  await player.page.click("#play-bot");
  await until(player.page, "the match to start", inState, "playing", 90_000);
  await until(player.page, "frames drawn", () => window.rallyTest.frames() > 30, undefined);
  await player.page.screenshot({ path: join(artifacts, "playing.png") });

  // A spectator, while the player plays: another account watches a running match.
  const watcher = await signUp(browser, `watch-${stamp}`, "correct horse battery staple", "watcher");
  const matchId = await until(
    watcher.page,
    "a running match to watch on the home page",
    () => document.querySelector("[id^=watch-]")?.id.slice("watch-".length),
    undefined,
    60_000,
  );
  await watcher.page.click(`#watch-${matchId}`);
  await until(watcher.page, "the watch page", inState, "watching");
  const first = await until(watcher.page, "a ball on the watch page", () => window.rallyTest.lastBall(), undefined);
  const moved = await until(
    watcher.page,
    "the ball to move on the watch page",
    (was) => {
      const now = window.rallyTest.lastBall();
      return now && (now.x !== was.x || now.y !== was.y) ? now : null;
    },
    first,
  );
  await watcher.page.screenshot({ path: join(artifacts, "watching.png") });

  // The operator console lists the shard and a running match.
  const operator = await logIn(browser, need("OPERATOR_USER"), need("OPERATOR_PASSWORD"), "operator");
  await operator.page.goto(`${url}#/console`);
  await until(operator.page, "the console", inState, "console");
  const shardRows = await until(operator.page, "a shard in the console", () => document.querySelectorAll("#console-shards tbody tr").length, undefined);
  const matchRows = await until(operator.page, "a match in the console", () => document.querySelectorAll("#console-matches tbody tr").length, undefined);
  const shardText = await operator.page.evaluate(() => document.querySelector("#console-shards").innerText);
  await operator.page.screenshot({ path: join(artifacts, "console.png") });

  // The player plays on with the keyboard to the end: the result and the new rating.
  await playWithKeys(player.page);
  const result = await until(player.page, "the result", () => window.rallyTest.result(), undefined, 30_000);
  await until(player.page, "the rating after the match", () => window.rallyTest.result()?.ratingAfter != null, undefined, 30_000);
  const after = await player.page.evaluate(() => window.rallyTest.result());
  const stats = await player.page.evaluate(() => window.rallyTest.stats());
  await player.page.screenshot({ path: join(artifacts, "result.png") });

  const report = { result: after ?? result, stats, spectated: { matchId, first, moved }, console: { shardRows, matchRows, shardText } };
  writeFileSync(join(artifacts, "stats.json"), JSON.stringify(report, null, 2));
  console.log(`BROWSER_STATS ${JSON.stringify(report)}`);
} finally {
  await browser.close();
}
