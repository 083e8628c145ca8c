// Entry point: hash routes and the test hooks.
import { currentSession } from "./api";
import type { View } from "./app/dom";
import { homeView } from "./app/home";
import { installHooks } from "./app/hooks";
import { loginView } from "./app/login";

installHooks();
const root = document.getElementById("app") ?? document.body;
let current: View | null = null;

function route(): void {
  current?.dispose();
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/";
  if (!currentSession() && path !== "/login") {
    location.hash = "#/login";
    return;
  }
  current = path === "/login" ? loginView(root) : homeView(root);
}
window.addEventListener("hashchange", route);
route();
