// Account pages: profile and email, password and MFA, passkeys, sessions, export and
// deletion.

import * as api from "../api.js";
import { h, form, card, action, toast, fmtDate, message } from "../ui.js";
import { qrSvg } from "../qr.js";
import { passkeyRegister, passkeysSupported } from "./webauthn.js";

export async function profile(root, _q, app) {
  const user = app.session.user;
  const facts = h("dl", { class: "facts" },
    h("dt", {}, "Email"), h("dd", {}, user.email,
      user.emailVerified === false ? h("span", { class: "badge warn" }, "not verified") : null,
      user.emailVerified === true ? h("span", { class: "badge ok" }, "verified") : null),
    h("dt", {}, "Roles"), h("dd", {}, user.roles.join(", ")),
    h("dt", {}, "Two-factor"), h("dd", {}, user.mfaEnabled ? "On" : "Off"),
    h("dt", {}, "Member since"), h("dd", {}, fmtDate(user.createdAt)));

  const nameForm = form({
    fields: [{ name: "displayName", label: "Display name", autocomplete: "name", value: user.displayName, maxlength: 100 }],
    submit: "Save name",
    onsubmit: async (v) => {
      app.session.user = await api.patch("/api/v1/users/me", { displayName: v.displayName });
      toast("Your name was saved.");
    },
  });

  const emailDone = h("p", { class: "success", role: "status", hidden: true });
  const emailForm = form({
    fields: [
      { name: "newEmail", label: "New email", type: "email", autocomplete: "email", maxlength: 254 },
      { name: "password", label: "Current password", type: "password", autocomplete: "current-password" },
    ],
    submit: "Change email",
    onsubmit: async (v) => {
      await api.post("/api/v1/users/me/email", v);
      emailForm.inputs.password.value = "";
      emailDone.textContent = "Check the new address: the change takes effect when you open the link we sent there.";
      emailDone.hidden = false;
    },
  });

  const verifyButton = user.emailVerified === false
    ? action("Send the verification link again", async () => {
      await api.post("/api/v1/auth/email/verify/request", {});
      toast("A new verification link is on its way.");
    })
    : null;

  root.append(
    card("Your account", facts, verifyButton),
    card("Name", nameForm.el),
    card("Email address", emailForm.el, emailDone),
  );
}

export async function security(root, _q, app) {
  const pwForm = form({
    fields: [
      { name: "currentPassword", label: "Current password", type: "password", autocomplete: "current-password" },
      { name: "newPassword", label: "New password", type: "password", autocomplete: "new-password", hint: "At least 12 characters; common passwords are refused." },
    ],
    submit: "Change password",
    onsubmit: async (v) => {
      await api.post("/api/v1/auth/password", v);
      // Every session ended, this one too.
      api.clearSession();
      app.session.user = null;
      toast("Password changed. Every session was signed out: sign in with the new password.");
      app.go("/sign-in");
    },
  });
  const mfa = h("div");
  root.append(card("Password", pwForm.el), card("Two-factor authentication", mfa));
  renderMfa(mfa, app);
}

function renderMfa(box, app) {
  const user = app.session.user;
  if (user.mfaEnabled) {
    const off = form({
      fields: [
        { name: "password", label: "Password", type: "password", autocomplete: "current-password" },
        { name: "code", label: "Authentication code", autocomplete: "one-time-code", maxlength: 32 },
      ],
      submit: "Turn off two-factor",
      danger: true,
      onsubmit: async (v) => {
        await api.post("/api/v1/auth/mfa/totp/disable", v);
        await app.loadSession();
        toast("Two-factor authentication is off. Your other sessions were signed out.");
        renderMfa(box, app);
      },
    });
    box.replaceChildren(h("p", {}, h("span", { class: "badge ok" }, "On"), " Sign-ins ask for a code from your authenticator app."), off.el);
    return;
  }
  const start = action("Set up an authenticator app", async () => {
    const setup = await api.post("/api/v1/auth/mfa/totp/setup", {});
    const qr = qrSvg(setup.otpauthUri, "QR code for your authenticator app");
    const enable = form({
      fields: [
        { name: "code", label: "Code from the app", autocomplete: "one-time-code", inputmode: "numeric", maxlength: 6 },
        { name: "password", label: "Password", type: "password", autocomplete: "current-password" },
      ],
      submit: "Turn on two-factor",
      onsubmit: async (v) => {
        const result = await api.post("/api/v1/auth/mfa/totp/enable", v);
        await app.loadSession();
        showRecoveryCodes(box, result.recoveryCodes, app);
      },
    });
    box.replaceChildren(
      h("ol", { class: "steps" },
        h("li", {}, "Scan this code with an authenticator app, or type the key below."),
        h("li", {}, "Enter the 6-digit code it shows, with your password.")),
      h("div", { class: "qr-box" }, qr,
        h("p", {}, "Key: ", h("code", { class: "secret", "data-testid": "totp-secret" }, setup.secret))),
      enable.el);
  });
  box.replaceChildren(h("p", {}, h("span", { class: "badge" }, "Off"), " Add a second step to your sign-in with an authenticator app."), start);
}

function showRecoveryCodes(box, codes, app) {
  const text = codes.join("\n");
  const copy = action("Copy", async () => {
    await navigator.clipboard.writeText(text);
    toast("Recovery codes copied.");
  });
  const download = h("a", {
    class: "button secondary",
    href: `data:text/plain;charset=utf-8,${encodeURIComponent(`Rampart recovery codes\n\n${text}\n`)}`,
    download: "rampart-recovery-codes.txt",
  }, "Download");
  const done = h("button", { type: "button", class: "primary", onclick: () => renderMfa(box, app) }, "I have saved them");
  box.replaceChildren(
    h("p", { class: "success", role: "status" }, "Two-factor authentication is on. Your other sessions were signed out."),
    h("p", {}, h("strong", {}, "Save these recovery codes now. "), "Each works once if you lose your device. They will not be shown again."),
    h("ul", { class: "codes", "data-testid": "recovery-codes" }, ...codes.map((c) => h("li", {}, h("code", {}, c)))),
    h("div", { class: "actions" }, copy, download, done));
}

export async function passkeys(root, _q, app) {
  const list = h("div");
  const load = async () => {
    let items = [];
    try {
      items = (await api.get("/api/v1/auth/passkeys")).items;
    } catch (problem) {
      list.replaceChildren(h("p", { class: "alert", role: "alert" }, message(problem)));
      return;
    }
    if (!items.length) {
      list.replaceChildren(h("p", {}, "You have no passkeys yet."));
      return;
    }
    list.replaceChildren(h("ul", { class: "rows" }, ...items.map((pk) => {
      const nameId = `pk-${pk.id}`;
      const rename = form({
        fields: [{ name: "name", label: `New name for ${pk.name}`, value: pk.name, maxlength: 100 }],
        submit: "Rename",
        onsubmit: async (v) => {
          await api.patch(`/api/v1/auth/passkeys/${pk.id}`, { name: v.name });
          toast("Passkey renamed.");
          await load();
        },
      });
      rename.el.hidden = true;
      return h("li", { class: "row" },
        h("div", {}, h("strong", { id: nameId }, pk.name),
          h("p", { class: "meta" }, `Added ${fmtDate(pk.createdAt)} · last used ${fmtDate(pk.lastUsedAt)}${pk.backedUp ? " · synced" : ""}`)),
        h("div", { class: "actions" },
          h("button", { type: "button", class: "secondary", onclick: () => { rename.el.hidden = !rename.el.hidden; } }, "Rename"),
          action("Remove", async () => {
            await api.del(`/api/v1/auth/passkeys/${pk.id}`);
            toast("Passkey removed; sessions that used it were signed out.");
            await load();
          }, { danger: true, confirmText: `Remove the passkey "${pk.name}"?` })),
        rename.el);
    })));
  };
  const add = form({
    fields: [
      { name: "name", label: "Name for this passkey", value: "My passkey", maxlength: 100 },
      { name: "password", label: "Password", type: "password", autocomplete: "current-password" },
    ],
    submit: "Add a passkey",
    onsubmit: async (v) => {
      await passkeyRegister(v.password, v.name);
      add.inputs.password.value = "";
      add.inputs.name.value = "My passkey";
      toast("Passkey added.");
      await load();
    },
  });
  root.append(
    card("Your passkeys", h("p", {}, "A passkey signs you in with your device's screen lock, without a password or code."), list),
    passkeysSupported() ? card("Add a passkey", add.el) : card("Add a passkey", h("p", {}, "This browser does not support passkeys.")),
  );
  await load();
  void app;
}

export async function sessions(root) {
  const list = h("div");
  const load = async () => {
    const { items } = await api.get("/api/v1/auth/sessions");
    list.replaceChildren(h("ul", { class: "rows" }, ...items.map((s) => h("li", { class: "row" },
      h("div", {},
        h("strong", {}, describeAgent(s.userAgent)), s.current ? h("span", { class: "badge ok" }, "this device") : null,
        h("p", { class: "meta" }, `Signed in ${fmtDate(s.createdAt)} · last active ${fmtDate(s.lastUsedAt)} · ${s.ipAddress || "unknown address"}`)),
      s.current ? null : h("div", { class: "actions" }, action("End", async () => {
        await api.del(`/api/v1/auth/sessions/${s.id}`);
        toast("Session ended.");
        await load();
      }, { danger: true }))))));
  };
  const endOthers = action("End all other sessions", async () => {
    const { items } = await api.get("/api/v1/auth/sessions");
    for (const s of items.filter((x) => !x.current)) {
      try {
        await api.del(`/api/v1/auth/sessions/${s.id}`);
      } catch (problem) {
        if (problem.code !== "not_found") throw problem;
      }
    }
    toast("Every other session was ended.");
    await load();
  }, { danger: true });
  root.append(card("Where you are signed in", list, h("div", { class: "actions" }, endOthers)));
  await load();
}

function describeAgent(ua) {
  if (!ua) return "Unknown device";
  const browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrom(e|ium)\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : /curl|python|reqwest/i.test(ua) ? "API client" : "Browser";
  // iOS before macOS and Android before Linux: their agents name the other too.
  const os = /Windows/.test(ua) ? "Windows" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS X/.test(ua) ? "macOS" : /Android/.test(ua) ? "Android" : /Linux/.test(ua) ? "Linux" : "";
  return os ? `${browser} on ${os}` : browser;
}

export async function data(root, _q, app) {
  const exportButton = action("Download my data", async () => {
    const body = await api.get("/api/v1/users/me/export");
    const blob = new Blob([JSON.stringify(body, null, 2)], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: "rampart-export.json" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    toast("Your data was downloaded.");
  });
  const del = form({
    fields: [{ name: "password", label: "Password", type: "password", autocomplete: "current-password" }],
    submit: "Delete my account",
    danger: true,
    onsubmit: async (v) => {
      if (!window.confirm("Delete your account? This cannot be undone.")) return;
      await api.post("/api/v1/users/me/delete", { password: v.password });
      api.clearSession();
      app.session.user = null;
      toast("Your account was deleted.");
      app.go("/sign-in");
    },
  });
  root.append(
    card("Export", h("p", {}, "Everything Rampart stores about you, as a JSON file: profile, sessions, passkeys, notes and audit events."), exportButton),
    card("Delete account", h("p", {}, "Your account is closed at once and every session ends."), del.el),
  );
}
