// #/login: log in or register with a username and password.
import { errorText, login, register } from "../api";
import { h, navigate, Scope, type View } from "./dom";
import { probe } from "./hooks";

export function loginView(root: HTMLElement): View {
  const scope = new Scope();
  probe.state = "login";
  const username = h("input", { id: "username", autocomplete: "username", required: true, maxlength: 32 });
  const password = h("input", { id: "password", type: "password", autocomplete: "current-password", required: true });
  const error = h("p", { id: "login-error", class: "error", role: "alert" });
  const busy = (on: boolean) => {
    for (const b of form.querySelectorAll("button")) b.disabled = on;
  };
  async function submit(kind: "login" | "register") {
    error.textContent = "";
    if (!username.value || !password.value) {
      error.textContent = "Enter a username and a password.";
      return;
    }
    busy(true);
    try {
      if (kind === "login") await login(username.value, password.value);
      else await register(username.value, password.value);
      navigate("#/");
    } catch (e) {
      error.textContent = errorText(e);
    } finally {
      busy(false);
    }
  }
  const form = h(
    "form",
    {
      class: "card narrow",
      onsubmit: (e: Event) => {
        e.preventDefault();
        void submit("login");
      },
    },
    h("h1", {}, "rally"),
    h("label", {}, "Username", username),
    h("label", {}, "Password", password),
    h(
      "div",
      { class: "row" },
      h("button", { id: "login", type: "submit", class: "primary" }, "Log in"),
      h("button", { id: "register", type: "button", onclick: () => void submit("register") }, "Register"),
    ),
    error,
  );
  root.replaceChildren(form);
  username.focus();
  return scope;
}
