// Small DOM helpers: elements without innerHTML, forms whose problems (contract §1) show
// next to their fields, and a countdown for Retry-After.

import { ApiProblem } from "./api.js";

let uid = 0;

/** h("p", {class: "x"}, "text", child…): an element; strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function id(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

const CODE_MESSAGES = {
  invalid_credentials: "The email or password is not right.",
  unauthenticated: "Your session has ended. Please sign in again.",
  forbidden: "You are not allowed to do that.",
  reauthentication_failed: "That password or code is not right.",
  not_found: "It no longer exists.",
  conflict: "That conflicts with what already exists.",
  rate_limited: "Too many attempts.",
  email_unverified: "Please verify your email address first: open the link we sent you.",
  unavailable: "The service is busy. Please try again in a moment.",
  internal_error: "Something went wrong on our side. Please try again.",
  payload_too_large: "That is too large.",
};

/** A sentence a person understands for a problem. */
export function message(problem) {
  if (!(problem instanceof ApiProblem)) return "The server could not be reached. Check your connection and try again.";
  if (problem.code === "validation_failed") {
    return problem.errors.length ? "Please correct the highlighted fields." : problem.message;
  }
  return CODE_MESSAGES[problem.code] || problem.message;
}

/**
 * A form: fields [{name, label, type, autocomplete, required, value, hint, minlength}],
 * a submit label, and `onsubmit(values)` returning a promise. Problems are shown on the
 * fields they name and in an alert above the button.
 */
export function form({ fields, submit, onsubmit, extra, danger = false }) {
  const alert = h("div", { class: "alert", role: "alert", hidden: true });
  const inputs = {};
  const errorsOf = {};
  const rows = fields.map((f) => {
    const inputId = id(f.name);
    const errId = `${inputId}-error`;
    const hintId = f.hint ? `${inputId}-hint` : null;
    const input = h(f.type === "textarea" ? "textarea" : f.type === "select" ? "select" : "input", {
      id: inputId,
      name: f.name,
      type: f.type === "textarea" || f.type === "select" ? undefined : (f.type || "text"),
      autocomplete: f.autocomplete || "off",
      required: f.required !== false,
      minlength: f.minlength,
      maxlength: f.maxlength,
      inputmode: f.inputmode,
      pattern: f.pattern,
      spellcheck: f.type === "email" || f.type === "password" ? "false" : undefined,
      "aria-describedby": [hintId, errId].filter(Boolean).join(" "),
    });
    if (f.type === "select") {
      for (const opt of f.options || []) input.append(h("option", { value: opt.value }, opt.label));
    }
    if (f.value !== undefined) input.value = f.value;
    inputs[f.name] = input;
    const error = h("p", { class: "field-error", id: errId, hidden: true });
    errorsOf[f.name] = error;
    return h("div", { class: "field" },
      h("label", { for: inputId }, f.label),
      hintId ? h("p", { class: "hint", id: hintId }, f.hint) : null,
      input, error);
  });
  const button = h("button", { type: "submit", class: danger ? "danger" : "primary" }, submit);
  const el = h("form", { novalidate: true }, alert, ...rows, extra || null, h("div", { class: "actions" }, button));

  const clear = () => {
    alert.hidden = true;
    alert.textContent = "";
    for (const [name, err] of Object.entries(errorsOf)) {
      err.hidden = true;
      err.textContent = "";
      inputs[name].removeAttribute("aria-invalid");
    }
  };

  el.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear();
    const missing = fields.filter((f) => f.required !== false && !inputs[f.name].value.trim());
    if (missing.length) {
      for (const f of missing) showFieldError(f.name, "This field is required.");
      inputs[missing[0].name].focus();
      return;
    }
    const values = {};
    for (const f of fields) values[f.name] = f.type === "password" ? inputs[f.name].value : inputs[f.name].value.trim();
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      await onsubmit(values, el);
    } catch (problem) {
      showProblem(problem);
    } finally {
      button.removeAttribute("aria-busy");
      if (!button.dataset.waiting) button.disabled = false;
    }
  });

  function showFieldError(name, text) {
    const err = errorsOf[name];
    if (!err) return false;
    err.textContent = text;
    err.hidden = false;
    inputs[name].setAttribute("aria-invalid", "true");
    return true;
  }

  function showProblem(problem) {
    let first = null;
    if (problem instanceof ApiProblem) {
      for (const e of problem.errors) {
        const field = String(e.field || "").split(".").pop();
        if (showFieldError(field, sentence(e.issue))) first = first || field;
      }
    }
    alert.textContent = message(problem);
    alert.hidden = false;
    if (problem instanceof ApiProblem && problem.retryAfter) {
      countdown(alert, button, problem.retryAfter);
    }
    if (first) inputs[first].focus();
  }

  return { el, inputs, showProblem, clear };
}

function sentence(issue) {
  const text = String(issue || "is invalid");
  return text.charAt(0).toUpperCase() + text.slice(1) + (text.endsWith(".") ? "" : ".");
}

/** "Too many attempts. Try again in 42 s." counting down; the button waits with it. */
export function countdown(alert, button, seconds) {
  let left = seconds;
  const base = alert.textContent;
  button.disabled = true;
  button.dataset.waiting = "1";
  const tick = () => {
    if (left <= 0) {
      alert.textContent = `${base} You can try again now.`;
      button.disabled = false;
      delete button.dataset.waiting;
      return;
    }
    const m = Math.floor(left / 60);
    const s = left % 60;
    alert.textContent = `${base} Try again in ${m ? `${m} min ` : ""}${s} s.`;
    left -= 1;
    setTimeout(tick, 1000);
  };
  tick();
}

/** A transient status message, announced to screen readers. */
export function toast(text) {
  const region = document.getElementById("toast");
  if (!region) return;
  region.textContent = text;
  region.hidden = false;
  clearTimeout(region._timer);
  region._timer = setTimeout(() => { region.hidden = true; }, 5000);
}

export function fmtDate(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** A section with a heading. */
export function card(title, ...children) {
  const headingId = id("card");
  return h("section", { class: "card", "aria-labelledby": headingId },
    h("h2", { id: headingId }, title), ...children);
}

/** Runs `action` on a button click, showing a problem in `alertEl`. */
export function action(label, fn, { danger = false, confirmText = null, cls = "" } = {}) {
  const button = h("button", { type: "button", class: `${danger ? "danger" : "secondary"} ${cls}`.trim() }, label);
  button.addEventListener("click", async () => {
    if (confirmText && !window.confirm(confirmText)) return;
    button.disabled = true;
    try {
      await fn();
    } catch (problem) {
      toast(message(problem));
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** Reads `?token=` from the route's query and removes it from the address bar. */
export function takeToken(query) {
  const token = query.get("token");
  if (token) {
    const page = location.hash.split("?")[0] || "#/";
    history.replaceState(null, "", `${location.pathname}${page}`);
  }
  return token;
}
