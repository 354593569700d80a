// Shared by the conformance suite and the drift script: tokens from the simulated STS and
// Skoruba's published ClientsClient authenticated with them.
// The package ships CommonJS as its main entry: import it whole.
import skoruba from "@skoruba/duende.identityserver.admin.api.client";

const { ClientsClient } = skoruba.client;

export const URL_ = process.env.DUENDE_URL;
export const API_SCOPE = "skoruba_identity_admin_api";

/** A client-credentials token (HTTP Basic, form-urlencoded credentials as RFC 6749 says). */
export async function token(id, secret, scope = API_SCOPE) {
  const basic = Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString("base64");
  const res = await fetch(`${URL_}/connect/token`, {
    method: "POST",
    headers: { authorization: `Basic ${basic}`, "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "client_credentials", scope }).toString(),
  });
  return { status: res.status, body: await res.json() };
}

/** The published ClientsClient, sending `Authorization: Bearer <accessToken>` when given. */
export function clients(accessToken) {
  const http = {
    fetch: (url, init) => {
      const headers = new Headers(init.headers);
      if (accessToken) headers.set("authorization", `Bearer ${accessToken}`);
      return fetch(url, { ...init, headers });
    },
  };
  return new ClientsClient(URL_, http);
}

/** Finds a client's integer id by search, then exact ClientId match, page by page. */
export async function findId(api, clientId) {
  for (let page = 1; page < 100; page++) {
    const res = await api.get(clientId, page, 10);
    const hit = res.clients.find((c) => c.clientId === clientId);
    if (hit) return hit.id;
    if (res.clients.length === 0 || page * 10 >= res.totalCount) break;
  }
  throw new Error(`no client ${clientId}`);
}
