// Administration: users, roles and grants, the audit log and its chain. Each page is
// offered only to holders of its permission, and every action is checked by the API.

import * as api from "../api.js";
import { h, form, card, action, toast, fmtDate, message, id } from "../ui.js";

const enc = encodeURIComponent;

export async function users(root, query, app) {
  const email = query.get("email") || "";
  const cursor = query.get("cursor") || "";
  const search = form({
    fields: [{ name: "email", label: "Search by email", type: "search", required: false, value: email, maxlength: 254 }],
    submit: "Search",
    onsubmit: async (v) => app.go(`/admin/users${v.email ? `?email=${enc(v.email)}` : ""}`),
  });
  search.el.classList.add("inline");
  const params = new URLSearchParams({ limit: "20" });
  if (email) params.set("email", email);
  if (cursor) params.set("cursor", cursor);
  const page = await api.get(`/api/v1/users?${params}`);
  const table = h("table", {},
    h("caption", { class: "sr-only" }, "Users"),
    h("thead", {}, h("tr", {}, ...["Email", "Name", "Status", "Roles", "Two-factor", "Created"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, ...page.items.map((u) => h("tr", {},
      h("td", {}, h("a", { href: `#/admin/user?id=${u.id}` }, u.email)),
      h("td", {}, u.displayName),
      h("td", {}, h("span", { class: `badge ${u.status === "active" ? "ok" : "warn"}` }, u.status)),
      h("td", {}, u.roles.join(", ")),
      h("td", {}, u.mfaEnabled ? "On" : "Off"),
      h("td", {}, fmtDate(u.createdAt))))));
  const nav = h("div", { class: "actions" },
    cursor ? h("a", { class: "button secondary", href: `#/admin/users${email ? `?email=${enc(email)}` : ""}` }, "First page") : null,
    page.nextCursor ? h("a", { class: "button secondary", href: `#/admin/users?${new URLSearchParams({ ...(email ? { email } : {}), cursor: page.nextCursor })}` }, "Next page") : null);
  root.append(card("Find users", search.el),
    card("Users", page.items.length ? h("div", { class: "table-wrap" }, table) : h("p", {}, "No users match."), nav));
}

export async function user(root, query, app) {
  const userId = query.get("id") || "";
  const perms = app.session.permissions;
  const u = await api.get(`/api/v1/users/${enc(userId)}`);
  const self = u.id === app.session.user.id;
  const reload = () => app.go(`/admin/user?id=${u.id}&t=${Date.now()}`);
  const facts = h("dl", { class: "facts" },
    h("dt", {}, "Email"), h("dd", {}, u.email),
    h("dt", {}, "Name"), h("dd", {}, u.displayName),
    h("dt", {}, "Status"), h("dd", {}, h("span", { class: `badge ${u.status === "active" ? "ok" : "warn"}` }, u.status)),
    h("dt", {}, "Roles"), h("dd", {}, u.roles.join(", ")),
    h("dt", {}, "Two-factor"), h("dd", {}, u.mfaEnabled ? "On" : "Off"),
    h("dt", {}, "Created"), h("dd", {}, fmtDate(u.createdAt)),
    h("dt", {}, "Id"), h("dd", {}, h("code", {}, u.id)));
  const actions = h("div", { class: "actions wrap" });
  if (perms.has("users:update")) {
    actions.append(
      u.status === "active"
        ? action("Disable", async () => { await api.patch(`/api/v1/users/${u.id}`, { status: "disabled" }); toast("User disabled; their sessions ended."); reload(); }, { danger: true, confirmText: `Disable ${u.email}? Their sessions end at once.` })
        : action("Enable", async () => { await api.patch(`/api/v1/users/${u.id}`, { status: "active" }); toast("User enabled."); reload(); }),
      action("End sessions", async () => { await api.del(`/api/v1/users/${u.id}/sessions`); toast("Every session of this user ended."); }, { danger: true }),
      action("Reset two-factor", async () => { await api.del(`/api/v1/users/${u.id}/mfa`); toast("Two-factor turned off; their sessions ended."); reload(); }, { danger: true, confirmText: `Turn off two-factor for ${u.email}?` }));
  }
  if (perms.has("users:delete")) {
    actions.append(action("Delete", async () => { await api.del(`/api/v1/users/${u.id}`); toast("User deleted."); app.go("/admin/users"); }, { danger: true, confirmText: `Delete ${u.email}? This cannot be undone.` }));
  }
  root.append(card(u.email, facts, actions.childElementCount ? actions : null));

  if (perms.has("roles:assign") && perms.has("roles:read")) {
    const { items: allRoles } = await api.get("/api/v1/rbac/roles");
    const boxes = allRoles.map((r) => {
      const boxId = id("role");
      const input = h("input", { type: "checkbox", id: boxId, value: r.name, disabled: self });
      input.checked = u.roles.includes(r.name);
      return { input, row: h("div", { class: "check" }, input, h("label", { for: boxId }, r.name, r.description ? h("span", { class: "meta" }, ` — ${r.description}`) : null)) };
    });
    const alert = h("p", { class: "alert", role: "alert", hidden: true });
    const save = action("Save roles", async () => {
      alert.hidden = true;
      try {
        await api.put(`/api/v1/users/${u.id}/roles`, { roles: boxes.filter((b) => b.input.checked).map((b) => b.input.value) });
        toast("Roles saved.");
      } catch (problem) {
        alert.textContent = message(problem);
        alert.hidden = false;
      }
    });
    root.append(card("Roles", self ? h("p", {}, "You cannot change your own roles.") : null,
      h("fieldset", {}, h("legend", {}, "Roles of this user"), ...boxes.map((b) => b.row)), alert, self ? null : save));
  }
}

export async function roles(root, _query, app) {
  const canWrite = app.session.permissions.has("roles:write");
  const [{ items }, { items: permissions }] = await Promise.all([
    api.get("/api/v1/rbac/roles"),
    api.get("/api/v1/rbac/permissions"),
  ]);
  const grantBoxes = (selected, disabled) => permissions.map((p) => {
    const boxId = id("perm");
    const input = h("input", { type: "checkbox", id: boxId, value: p.name, disabled });
    input.checked = selected.includes(p.name);
    return { input, row: h("div", { class: "check" }, input, h("label", { for: boxId }, h("code", {}, p.name), p.description ? h("span", { class: "meta" }, ` — ${p.description}`) : null)) };
  });
  for (const role of items) {
    const editable = canWrite && !role.builtIn;
    const boxes = grantBoxes(role.permissions, !editable);
    const alert = h("p", { class: "alert", role: "alert", hidden: true });
    const controls = editable ? h("div", { class: "actions" },
      action("Save grants", async () => {
        alert.hidden = true;
        try {
          await api.patch(`/api/v1/rbac/roles/${role.id}`, { permissions: boxes.filter((b) => b.input.checked).map((b) => b.input.value) });
          toast(`Grants of ${role.name} saved.`);
        } catch (problem) {
          alert.textContent = message(problem);
          alert.hidden = false;
        }
      }),
      action("Delete role", async () => {
        await api.del(`/api/v1/rbac/roles/${role.id}`);
        toast(`Role ${role.name} deleted.`);
        app.go(`/admin/roles?t=${Date.now()}`);
      }, { danger: true, confirmText: `Delete the role ${role.name}?` })) : null;
    const details = h("details", {},
      h("summary", {}, h("strong", {}, role.name), role.builtIn ? h("span", { class: "badge" }, "built in") : null,
        h("span", { class: "meta" }, ` ${role.permissions.length} permission(s)${role.description ? ` — ${role.description}` : ""}`)),
      h("fieldset", {}, h("legend", {}, `Grants of ${role.name}`), ...boxes.map((b) => b.row)), alert, controls);
    root.append(h("div", { class: "card role" }, details));
  }
  if (canWrite) {
    const boxes = grantBoxes([], false);
    const create = form({
      fields: [
        { name: "name", label: "Name", hint: "Lower case letters, digits, - and _, starting with a letter.", maxlength: 50 },
        { name: "description", label: "Description", required: false, maxlength: 200 },
      ],
      extra: h("fieldset", {}, h("legend", {}, "Permissions"), ...boxes.map((b) => b.row)),
      submit: "Create role",
      onsubmit: async (v) => {
        await api.post("/api/v1/rbac/roles", { name: v.name, description: v.description, permissions: boxes.filter((b) => b.input.checked).map((b) => b.input.value) });
        toast(`Role ${v.name} created.`);
        app.go(`/admin/roles?t=${Date.now()}`);
      },
    });
    root.append(card("New role", create.el));
  }
}

const FILTERS = ["action", "actorId", "targetId", "from", "to"];

export async function audit(root, query, app) {
  const chain = h("p", { role: "status", class: "chain" }, "Checking the chain…");
  const filters = form({
    fields: [
      { name: "action", label: "Action", required: false, value: query.get("action") || "", hint: "Exact, e.g. auth.login_failed" },
      { name: "actorId", label: "Actor id", required: false, value: query.get("actorId") || "" },
      { name: "targetId", label: "Target id", required: false, value: query.get("targetId") || "" },
      { name: "from", label: "From", type: "datetime-local", required: false, value: toLocalInput(query.get("from")) },
      { name: "to", label: "To", type: "datetime-local", required: false, value: toLocalInput(query.get("to")) },
    ],
    submit: "Filter",
    onsubmit: async (v) => {
      const p = new URLSearchParams();
      for (const k of FILTERS) {
        if (!v[k]) continue;
        p.set(k, k === "from" || k === "to" ? new Date(v[k]).toISOString() : v[k]);
      }
      app.go(`/admin/audit${p.toString() ? `?${p}` : ""}`);
    },
  });
  filters.el.classList.add("grid");
  const list = h("div");
  root.append(card("Integrity", chain), card("Filters", filters.el), card("Events, newest first", list));

  api.get("/api/v1/audit/verify").then((state) => {
    if (state.intact) {
      chain.className = "chain success";
      chain.textContent = `The hash chain is intact: ${state.count} record(s) verified.`;
    } else {
      chain.className = "chain alert";
      chain.textContent = `The hash chain is BROKEN at record ${state.brokenAt.seq} (${state.brokenAt.id}): ${state.brokenAt.reason}. ${state.count} record(s) before it verified.`;
    }
  }).catch((problem) => { chain.textContent = message(problem); });

  const params = new URLSearchParams({ limit: "50" });
  for (const k of [...FILTERS, "cursor"]) if (query.get(k)) params.set(k, query.get(k));
  let page;
  try {
    page = await api.get(`/api/v1/audit/events?${params}`);
  } catch (problem) {
    list.replaceChildren(h("p", { class: "alert", role: "alert" }, message(problem)));
    if (problem.errors) for (const e of problem.errors) list.append(h("p", { class: "field-error" }, `${e.field}: ${e.issue}`));
    return;
  }
  const table = h("table", {},
    h("caption", { class: "sr-only" }, "Audit events"),
    h("thead", {}, h("tr", {}, ...["When", "Action", "Outcome", "Actor", "Target", "Address", "Details"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, ...page.items.map((e) => h("tr", {},
      h("td", {}, fmtDate(e.at)),
      h("td", {}, h("code", {}, e.action)),
      h("td", {}, h("span", { class: `badge ${e.outcome === "success" ? "ok" : "warn"}` }, e.outcome)),
      h("td", {}, e.actorId ? h("a", { href: `#/admin/audit?actorId=${e.actorId}`, title: e.actorId }, short(e.actorId)) : "—"),
      h("td", {}, e.targetId ? h("span", { title: e.targetId }, `${e.targetType || ""} ${short(e.targetId)}`) : "—"),
      h("td", {}, e.ipAddress || "—"),
      h("td", {}, h("code", { class: "details" }, e.details && Object.keys(e.details).length ? JSON.stringify(e.details) : ""))))));
  const next = new URLSearchParams();
  for (const k of FILTERS) if (query.get(k)) next.set(k, query.get(k));
  if (page.nextCursor) next.set("cursor", page.nextCursor);
  list.replaceChildren(...[
    page.items.length ? h("div", { class: "table-wrap" }, table) : h("p", {}, "No events match."),
    page.nextCursor ? h("div", { class: "actions" }, h("a", { class: "button secondary", href: `#/admin/audit?${next}` }, "Older events")) : null,
  ].filter(Boolean));
}

function short(value) {
  // UUIDv7s share their leading (time) digits; the tail tells them apart.
  return String(value).length > 13 ? `…${String(value).slice(-8)}` : String(value);
}

function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
