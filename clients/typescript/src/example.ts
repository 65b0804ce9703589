// What an integrator writes against the client generated from Rampart's OpenAPI document
// (`src/rampart.d.ts`, made by scripts/check-openapi-client.sh). `tsc --noEmit` checks this
// file against the document: a route, a request field or a response field that changes
// or disappears from the document breaks the type-check, as it would break their code.
import createClient from "openapi-fetch";
import type { components, paths } from "./rampart";

type Schemas = components["schemas"];
export type User = Schemas["UserResponse"];
export type Note = Schemas["NoteResponse"];
export type Problem = Schemas["Problem"];

export function rampart(baseUrl: string) {
  return createClient<paths>({ baseUrl, credentials: "include" });
}

type Client = ReturnType<typeof rampart>;

/** Logs in; `null` when the account needs a second factor first. */
export async function login(
  client: Client,
  email: string,
  password: string,
): Promise<{ accessToken: string; user: User } | { mfaToken: string } | Problem> {
  const { data, error } = await client.POST("/api/v1/auth/login", {
    body: { email, password },
  });
  if (error !== undefined) {
    return error;
  }
  if ("mfaToken" in data) {
    return { mfaToken: data.mfaToken };
  }
  const tokenType: "Bearer" | string = data.tokenType;
  void tokenType;
  return { accessToken: data.accessToken, user: data.user };
}

export async function completeMfa(client: Client, mfaToken: string, code: string) {
  const { data, error } = await client.POST("/api/v1/auth/mfa/verify", {
    body: { mfaToken, code },
  });
  return error ?? data.accessToken;
}

export async function me(client: Client, accessToken: string): Promise<User | Problem> {
  const { data, error } = await client.GET("/api/v1/users/me", {
    headers: { Authorization: `Bearer ${accessToken}` },
  });
  return error ?? data;
}

export async function writeNote(
  client: Client,
  accessToken: string,
  title: string,
  body: string,
): Promise<Note | Problem> {
  const auth = { Authorization: `Bearer ${accessToken}` };
  const created = await client.POST("/api/v1/notes", {
    headers: auth,
    body: { title, body },
  });
  if (created.error !== undefined) {
    return created.error;
  }
  const id: string = created.data.id;
  const page = await client.GET("/api/v1/notes", {
    headers: auth,
    params: { query: { limit: 10 } },
  });
  const first: Note | undefined = page.data?.items[0];
  void first;
  const updated = await client.PATCH("/api/v1/notes/{id}", {
    headers: auth,
    params: { path: { id } },
    body: { title: `${title} (edited)` },
  });
  return updated.error ?? updated.data;
}

/** A problem document's machine-readable code and request id, as §1 of the contract names them. */
export function describe(problem: Problem): string {
  return `${problem.status} ${problem.code} (request ${problem.requestId})`;
}
