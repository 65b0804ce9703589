// Public pages: sign in (password, then TOTP or recovery code; passkey), sign up,
// forgot and reset password, verify and confirm email.

import * as api from "../api.js";
import { h, form, card, message, takeToken, toast } from "../ui.js";
import { passkeyLogin, passkeysSupported } from "./webauthn.js";

export async function signIn(root, _query, app) {
  const step = h("div");
  const showPassword = () => {
    const f = form({
      fields: [
        { name: "email", label: "Email", type: "email", autocomplete: "username" },
        { name: "password", label: "Password", type: "password", autocomplete: "current-password" },
      ],
      submit: "Sign in",
      onsubmit: async (v) => {
        const result = await api.login("/api/v1/auth/login", { email: v.email, password: v.password });
        if (result && result.mfaRequired) showCode(result.mfaToken);
        else await app.signedIn();
      },
    });
    step.replaceChildren(f.el);
  };
  const showCode = (mfaToken) => {
    const f = form({
      fields: [{
        name: "code",
        label: "Authentication code",
        hint: "The 6-digit code from your authenticator app, or one of your recovery codes.",
        autocomplete: "one-time-code",
        inputmode: "text",
        maxlength: 32,
      }],
      submit: "Verify",
      onsubmit: async (v) => {
        try {
          await api.login("/api/v1/auth/mfa/verify", { mfaToken, code: v.code });
        } catch (problem) {
          if (problem.code === "unauthenticated") {
            toast("That sign-in attempt has expired. Please start again.");
            showPassword();
            return;
          }
          throw problem;
        }
        await app.signedIn();
      },
    });
    step.replaceChildren(
      h("p", {}, "Your account is protected with two-factor authentication."),
      f.el,
      h("p", {}, h("button", { type: "button", class: "link", onclick: showPassword }, "Start over")),
    );
    f.inputs.code.focus();
  };
  showPassword();

  const passkeyAlert = h("p", { class: "alert", role: "alert", hidden: true });
  const passkeyButton = h("button", { type: "button", class: "secondary wide" }, "Sign in with a passkey");
  passkeyButton.addEventListener("click", async () => {
    passkeyAlert.hidden = true;
    try {
      await passkeyLogin();
      await app.signedIn();
    } catch (problem) {
      passkeyAlert.textContent = problem && problem.name === "NotAllowedError"
        ? "The passkey request was cancelled."
        : problem && problem.code === "invalid_credentials"
          ? "That passkey was not accepted. It may have been removed from your account: sign in with your password."
          : message(problem);
      passkeyAlert.hidden = false;
    }
  });

  root.append(
    h("div", { class: "narrow" },
      card("With your password", step),
      passkeysSupported() ? card("With a passkey", passkeyAlert, passkeyButton) : null,
      h("p", { class: "links" },
        h("a", { href: "#/forgot-password" }, "Forgot your password?"), " · ",
        h("a", { href: "#/sign-up" }, "Create an account"))),
  );
}

export async function signUp(root, _query, app) {
  const done = h("div");
  const f = form({
    fields: [
      { name: "displayName", label: "Name", autocomplete: "name", maxlength: 100 },
      { name: "email", label: "Email", type: "email", autocomplete: "email", maxlength: 254 },
      {
        name: "password", label: "Password", type: "password", autocomplete: "new-password",
        hint: "At least 12 characters. A long phrase is easiest to remember; common passwords are refused.",
      },
    ],
    submit: "Create account",
    onsubmit: async (v) => {
      await api.post("/api/v1/auth/register", v, { auth: false });
      // Straight on to the account: sign in with what was just typed.
      try {
        const result = await api.login("/api/v1/auth/login", { email: v.email, password: v.password });
        if (result && result.accessToken) {
          toast("Your account is ready. If we sent you a verification link, open it to confirm your email.");
          await app.signedIn();
          return;
        }
      } catch {
        // Sign-in may require a verified email first; say so below.
      }
      done.replaceChildren(h("p", { class: "success", role: "status" },
        "Your account is ready. Check your email for a verification link, then ",
        h("a", { href: "#/sign-in" }, "sign in"), "."));
      f.el.hidden = true;
    },
  });
  root.append(h("div", { class: "narrow" }, card("Your details", f.el, done),
    h("p", { class: "links" }, "Already have an account? ", h("a", { href: "#/sign-in" }, "Sign in"))));
}

export async function forgot(root) {
  const done = h("p", { class: "success", role: "status", hidden: true });
  const f = form({
    fields: [{ name: "email", label: "Email", type: "email", autocomplete: "email", maxlength: 254 }],
    submit: "Send reset link",
    onsubmit: async (v) => {
      await api.post("/api/v1/auth/password-reset/request", { email: v.email }, { auth: false });
      f.el.hidden = true;
      done.textContent = "If an account uses that address, a link to choose a new password is on its way. It works once and expires soon.";
      done.hidden = false;
    },
  });
  root.append(h("div", { class: "narrow" }, card("Reset your password", h("p", {}, "We will email you a link to choose a new password."), f.el, done),
    h("p", { class: "links" }, h("a", { href: "#/sign-in" }, "Back to sign in"))));
}

export async function reset(root, query) {
  const token = takeToken(query);
  if (!token) {
    root.append(h("div", { class: "narrow" }, card("Link incomplete",
      h("p", {}, "This page needs the link from the reset email. "),
      h("p", {}, h("a", { href: "#/forgot-password" }, "Ask for a new link")))));
    return;
  }
  const done = h("p", { class: "success", role: "status", hidden: true });
  const f = form({
    fields: [{
      name: "newPassword", label: "New password", type: "password", autocomplete: "new-password",
      hint: "At least 12 characters; common passwords are refused.",
    }],
    submit: "Set new password",
    onsubmit: async (v) => {
      try {
        await api.post("/api/v1/auth/password-reset/confirm", { token, newPassword: v.newPassword }, { auth: false });
      } catch (problem) {
        if (problem.errors && problem.errors.some((e) => e.field === "token")) {
          problem.errors = [];
          problem.message = "This link has expired or was already used. Ask for a new one.";
          problem.code = "link_expired";
        }
        throw problem;
      }
      f.el.hidden = true;
      done.replaceChildren("Your password has been changed and every session signed out. ", h("a", { href: "#/sign-in" }, "Sign in"), " with the new password.");
      done.hidden = false;
    },
  });
  root.append(h("div", { class: "narrow" }, card("New password", f.el, done)));
}

async function tokenPage(root, query, app, { path, body, ok, title }) {
  const token = takeToken(query);
  const status = h("p", { role: "status" }, token ? "Checking the link…" : "This page needs the link from your email.");
  root.append(h("div", { class: "narrow" }, card(title, status, h("p", { class: "links" }, h("a", { href: "#/account" }, "Go to your account")))));
  if (!token) return;
  try {
    await api.call("POST", path, body(token), { auth: api.signedIn() });
    status.className = "success";
    status.textContent = ok;
    // A signed-in console shows the address and its state as they now are.
    if (app.session.user) {
      try {
        await app.loadSession();
      } catch {
        // The account pages load it again when they open.
      }
    }
  } catch (problem) {
    status.className = "alert";
    status.textContent = problem.code === "validation_failed"
      ? "This link has expired, was replaced by a newer one, or was already used."
      : message(problem);
  }
}

export function verifyEmail(root, query, app) {
  return tokenPage(root, query, app, {
    path: "/api/v1/auth/email/verify/confirm",
    body: (token) => ({ token }),
    ok: "Your email address is verified.",
    title: "Email verification",
  });
}

export function confirmEmail(root, query, app) {
  return tokenPage(root, query, app, {
    path: "/api/v1/auth/email/change/confirm",
    body: (token) => ({ token }),
    ok: "Your email address has been changed. Other sessions were signed out.",
    title: "Email change",
  });
}
