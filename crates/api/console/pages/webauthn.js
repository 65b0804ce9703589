// Passkeys (contract §10) through the browser's WebAuthn API, using the JSON forms of
// WebAuthn Level 3 with a fallback for browsers without them.

import * as api from "../api.js";

export function passkeysSupported() {
  return typeof window.PublicKeyCredential === "function" && !!navigator.credentials;
}

const b64uToBuf = (s) => {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(s.length / 4) * 4, "=");
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer;
};
const bufToB64u = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
  .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

function creationOptions(json) {
  if (PublicKeyCredential.parseCreationOptionsFromJSON) return PublicKeyCredential.parseCreationOptionsFromJSON(json);
  return {
    ...json,
    challenge: b64uToBuf(json.challenge),
    user: { ...json.user, id: b64uToBuf(json.user.id) },
    excludeCredentials: (json.excludeCredentials || []).map((c) => ({ ...c, id: b64uToBuf(c.id) })),
  };
}

function requestOptions(json) {
  if (PublicKeyCredential.parseRequestOptionsFromJSON) return PublicKeyCredential.parseRequestOptionsFromJSON(json);
  return {
    ...json,
    challenge: b64uToBuf(json.challenge),
    allowCredentials: (json.allowCredentials || []).map((c) => ({ ...c, id: b64uToBuf(c.id) })),
  };
}

function toJSON(credential) {
  if (typeof credential.toJSON === "function") return credential.toJSON();
  const r = credential.response;
  const response = { clientDataJSON: bufToB64u(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = bufToB64u(r.attestationObject);
    response.transports = r.getTransports ? r.getTransports() : [];
  } else {
    response.authenticatorData = bufToB64u(r.authenticatorData);
    response.signature = bufToB64u(r.signature);
    response.userHandle = r.userHandle ? bufToB64u(r.userHandle) : null;
  }
  return {
    id: credential.id,
    rawId: bufToB64u(credential.rawId),
    type: credential.type,
    response,
    authenticatorAttachment: credential.authenticatorAttachment || null,
    clientExtensionResults: credential.getClientExtensionResults(),
  };
}

export async function passkeyLogin() {
  const start = await api.post("/api/v1/auth/passkeys/login/start", {}, { auth: false });
  const credential = await navigator.credentials.get({ publicKey: requestOptions(start.publicKey) });
  return api.login("/api/v1/auth/passkeys/login/finish", {
    challengeId: start.challengeId,
    credential: toJSON(credential),
  });
}

export async function passkeyRegister(password, name) {
  const start = await api.post("/api/v1/auth/passkeys/register/start", { password });
  const credential = await navigator.credentials.create({ publicKey: creationOptions(start.publicKey) });
  return api.post("/api/v1/auth/passkeys/register/finish", {
    challengeId: start.challengeId,
    name,
    credential: toJSON(credential),
  });
}
