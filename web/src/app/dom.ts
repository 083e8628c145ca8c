// A small element builder and the view contract the router uses.

type Attrs = Record<string, string | number | boolean | undefined | ((e: Event) => void)>;
type Child = Node | string | number | null | undefined | false;

/** `h("button", { id: "login", onclick: go }, "Log in")`. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** Replaces `el`'s children. */
export function fill(el: Element, ...children: (Child | Child[])[]): void {
  el.replaceChildren();
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

/** What a route renders into the page; `dispose` runs when the route changes. */
export interface View {
  dispose(): void;
}

/** Collects cleanups (timers, stream aborts, listeners) for a view's dispose. */
export class Scope implements View {
  private cleanups: (() => void)[] = [];
  readonly abort = new AbortController();
  disposed = false;

  add(f: () => void): void {
    if (this.disposed) f();
    else this.cleanups.push(f);
  }

  every(ms: number, f: () => void): void {
    f();
    const id = setInterval(f, ms);
    this.add(() => clearInterval(id));
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.abort.abort();
    for (const f of this.cleanups.splice(0).reverse()) f();
  }
}

export function navigate(hash: string): void {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}

/** Query parameters after the route, e.g. `#/play?mode=pong-bot&autopilot=1`. */
export function hashParams(): URLSearchParams {
  const i = location.hash.indexOf("?");
  return new URLSearchParams(i >= 0 ? location.hash.slice(i + 1) : "");
}

export function fmtRating(r: number | null | undefined): string {
  return r === null || r === undefined ? "—" : Math.round(r).toString();
}
