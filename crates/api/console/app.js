// The console's shell: hash routes, navigation by permission, and the session's start
// (a refresh through the HttpOnly cookie when the page loads).

import * as api from "./api.js";
import { h, toast } from "./ui.js";
import * as pub from "./pages/public.js";
import * as account from "./pages/account.js";
import * as admin from "./pages/admin.js";

export const session = { user: null, permissions: new Set() };

const routes = {
  "/sign-in": { page: pub.signIn, title: "Sign in", public: true },
  "/sign-up": { page: pub.signUp, title: "Create an account", public: true },
  "/forgot-password": { page: pub.forgot, title: "Forgot password", public: true },
  "/reset-password": { page: pub.reset, title: "Choose a new password", public: true },
  "/verify-email": { page: pub.verifyEmail, title: "Verify your email", public: true, any: true },
  "/confirm-email": { page: pub.confirmEmail, title: "Confirm your new email", public: true, any: true },
  "/account": { page: account.profile, title: "Profile" },
  "/account/security": { page: account.security, title: "Password and two-factor" },
  "/account/passkeys": { page: account.passkeys, title: "Passkeys" },
  "/account/sessions": { page: account.sessions, title: "Sessions" },
  "/account/data": { page: account.data, title: "Your data" },
  "/admin/users": { page: admin.users, title: "Users", needs: "users:read" },
  "/admin/user": { page: admin.user, title: "User", needs: "users:read" },
  "/admin/roles": { page: admin.roles, title: "Roles", needs: "roles:read" },
  "/admin/audit": { page: admin.audit, title: "Audit log", needs: "audit:read" },
};

const accountLinks = [
  ["/account", "Profile"],
  ["/account/security", "Security"],
  ["/account/passkeys", "Passkeys"],
  ["/account/sessions", "Sessions"],
  ["/account/data", "Your data"],
];
const adminLinks = [
  ["/admin/users", "Users", "users:read"],
  ["/admin/roles", "Roles", "roles:read"],
  ["/admin/audit", "Audit log", "audit:read"],
];

export function go(path) {
  if (location.hash === `#${path}`) render();
  else location.hash = `#${path}`;
}

export async function loadSession() {
  session.user = await api.get("/api/v1/users/me");
  try {
    const perms = await api.get("/api/v1/users/me/permissions");
    session.permissions = new Set(perms.items);
  } catch {
    session.permissions = new Set();
  }
}

/** After any login response: load the user and open the account. */
export async function signedIn() {
  await loadSession();
  const next = sessionStorageSafeNext();
  go(next || "/account");
}

function sessionStorageSafeNext() {
  // The page asked for before signing in, kept in memory only.
  const next = pendingRoute;
  pendingRoute = null;
  return next;
}

let pendingRoute = null;

export async function signOut() {
  try {
    await api.logout();
  } catch {
    // The session may already be gone; the console forgets it either way.
  }
  session.user = null;
  session.permissions = new Set();
  go("/sign-in");
}

api.onSignedOut(() => {
  session.user = null;
  session.permissions = new Set();
  toast("Your session has ended. Please sign in again.");
  go("/sign-in");
});

function nav(current) {
  const navEl = document.getElementById("nav");
  navEl.replaceChildren();
  const user = session.user;
  const link = ([path, label]) => h("a", {
    href: `#${path}`,
    "aria-current": current === path ? "page" : undefined,
  }, label);
  if (!user) {
    navEl.append(h("ul", {}, ...[["/sign-in", "Sign in"], ["/sign-up", "Create account"]].map((l) => h("li", {}, link(l)))));
    return;
  }
  navEl.append(
    h("ul", { "aria-label": "Account" }, ...accountLinks.map((l) => h("li", {}, link(l)))),
  );
  const allowed = adminLinks.filter(([, , perm]) => session.permissions.has(perm));
  if (allowed.length) {
    navEl.append(h("ul", { "aria-label": "Administration", class: "admin" }, ...allowed.map((l) => h("li", {}, link(l)))));
  }
  navEl.append(h("div", { class: "who" },
    h("span", { class: "email" }, user.email),
    h("button", { type: "button", class: "link", onclick: signOut }, "Sign out")));
}

async function render() {
  const raw = location.hash.replace(/^#/, "") || "/account";
  const [path, queryString] = raw.split("?");
  const query = new URLSearchParams(queryString || "");
  const route = routes[path] || null;
  const main = document.getElementById("main");
  if (!route) {
    go(session.user ? "/account" : "/sign-in");
    return;
  }
  if (!route.public && !session.user) {
    pendingRoute = path;
    go("/sign-in");
    return;
  }
  if (route.public && !route.any && session.user && path !== "/reset-password") {
    go("/account");
    return;
  }
  if (route.needs && !session.permissions.has(route.needs)) {
    go("/account");
    return;
  }
  document.title = `${route.title} · Rampart`;
  nav(path);
  const heading = h("h1", { tabindex: "-1" }, route.title);
  const body = h("div", { class: "page" });
  main.replaceChildren(heading, body);
  try {
    await route.page(body, query, { session, go, signedIn, signOut, loadSession });
  } catch (e) {
    const { message } = await import("./ui.js");
    body.append(h("p", { class: "alert", role: "alert" }, message(e)));
  }
  if (document.activeElement === document.body || !main.contains(document.activeElement)) heading.focus();
}

async function boot() {
  // Continue a session through the refresh cookie, if there is one.
  if (await api.refresh()) {
    try {
      await loadSession();
    } catch {
      session.user = null;
    }
  }
  window.addEventListener("hashchange", render);
  await render();
  document.body.dataset.ready = "true";
}

boot();
