// The console's one API client. Every call to the server goes through `call`.
//
// The access token lives in this module's memory only (never localStorage or
// sessionStorage); the session continues through the HttpOnly refresh cookie, which the
// browser sends to /api/v1/auth only. A 401 on an authenticated call refreshes once and
// retries; a failed refresh signs the console out.

let accessToken = null;
let refreshing = null;
const listeners = new Set();

/** A problem document (contract §1) as an Error. */
export class ApiProblem extends Error {
  constructor(status, body, retryAfter) {
    super((body && body.detail) || `Request failed (${status})`);
    this.status = status;
    this.code = (body && body.code) || "internal_error";
    this.errors = (body && Array.isArray(body.errors)) ? body.errors : [];
    this.requestId = body && body.requestId;
    this.retryAfter = retryAfter;
  }
}

/** Subscribe to sign-out events (the session ended on the server). */
export function onSignedOut(fn) {
  listeners.add(fn);
}

export function signedIn() {
  return accessToken !== null;
}

export function setSession(loginResponse) {
  accessToken = loginResponse.accessToken;
}

export function clearSession() {
  accessToken = null;
}

function endSession() {
  const had = accessToken !== null;
  accessToken = null;
  if (had) listeners.forEach((fn) => fn());
}

async function send(method, path, body, withToken) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (withToken && accessToken) headers.Authorization = `Bearer ${accessToken}`;
  return fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
}

async function parse(response) {
  if (response.status === 204 || response.status === 202) return null;
  const text = await response.text();
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    throw new ApiProblem(response.status, body, Number.isFinite(retry) ? retry : null);
  }
  return body;
}

/** Trade the refresh cookie for a new access token; one refresh at a time. */
export function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      try {
        const response = await send("POST", "/api/v1/auth/refresh", undefined, false);
        const body = await parse(response);
        accessToken = body.accessToken;
        return true;
      } catch {
        endSession();
        return false;
      } finally {
        refreshing = null;
      }
    })();
  }
  return refreshing;
}

/**
 * Calls the API. `auth` (default true) sends the access token and, on 401, refreshes
 * once and retries. Resolves to the JSON body (null for 202/204); rejects with ApiProblem.
 */
export async function call(method, path, body, { auth = true } = {}) {
  let response = await send(method, path, body, auth);
  if (auth && response.status === 401 && accessToken !== null) {
    if (await refresh()) {
      response = await send(method, path, body, auth);
      if (response.status === 401) endSession();
    }
  } else if (auth && response.status === 401) {
    endSession();
  }
  return parse(response);
}

export const get = (path) => call("GET", path);
export const post = (path, body, opts) => call("POST", path, body, opts);
export const patch = (path, body) => call("PATCH", path, body);
export const put = (path, body) => call("PUT", path, body);
export const del = (path) => call("DELETE", path);

/** The login responses of §4 and §10: store the token, or hand back the MFA step. */
export async function login(path, body) {
  const result = await call("POST", path, body, { auth: false });
  if (result && result.accessToken) accessToken = result.accessToken;
  return result;
}

export async function logout() {
  try {
    await call("POST", "/api/v1/auth/logout", undefined, { auth: accessToken !== null });
  } finally {
    accessToken = null;
  }
}
