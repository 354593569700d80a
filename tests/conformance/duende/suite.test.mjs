// Skoruba's published admin API client (@skoruba/duende.identityserver.admin.api.client, pinned)
// drives the Duende simulator through every call the operator makes (token, search, get by id,
// full-replace PUT) and the errors around them, asserting what the Skoruba admin API answers.
//
// Fixtures (seeded by crates/sim-duende/tests/conformance.rs): the sandbox seed (clients
// "coder-staging", "coder", "not-coder"; STS client OP_ID/OP_SECRET with the admin scope and
// role), twelve more clients "coder-extra-N", and the STS client "no-role"/"no-role-secret" with
// the admin scope but no role claim. Env: DUENDE_URL, OP_ID, OP_SECRET.
import { test } from "node:test";
import assert from "node:assert/strict";
import skoruba from "@skoruba/duende.identityserver.admin.api.client";
import { URL_, API_SCOPE, token, clients, findId } from "./lib.mjs";

const { ClientApiDto, ClientsApiDto, SwaggerException } = skoruba.client;
const OP_ID = process.env.OP_ID;
const OP_SECRET = process.env.OP_SECRET;

async function api() {
  const t = await token(OP_ID, OP_SECRET);
  assert.equal(t.status, 200, JSON.stringify(t.body));
  return clients(t.body.access_token);
}

async function rejection(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail("expected a rejection");
}

/** toJSON of a client without the ids of child rows (re-created by every PUT). */
function comparable(c) {
  const j = JSON.parse(JSON.stringify(c.toJSON()));
  for (const k of ["claims", "properties"]) for (const x of j[k] ?? []) delete x.id;
  return j;
}

test("token endpoint: client credentials with the admin scope", async () => {
  const t = await token(OP_ID, OP_SECRET);
  assert.equal(t.status, 200);
  assert.equal(t.body.token_type, "Bearer");
  assert.equal(t.body.scope, API_SCOPE);
  assert.ok(t.body.expires_in > 0);
  const bad = await token(OP_ID, "wrong");
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error, "invalid_client");
  const scope = await token(OP_ID, OP_SECRET, "openid");
  assert.equal(scope.status, 400);
  assert.equal(scope.body.error, "invalid_scope");
});

test("search: contains on ClientId, paged, list items carry only properties", async () => {
  const c = await api();
  const page1 = await c.get("coder", 1, 10);
  assert.ok(page1 instanceof ClientsApiDto);
  assert.equal(page1.pageSize, 10);
  assert.equal(page1.totalCount, 15);
  assert.equal(page1.clients.length, 10);
  const page2 = await c.get("coder", 2, 10);
  assert.equal(page2.clients.length, 5);
  const coder = [...page1.clients, ...page2.clients].find((x) => x.clientId === "coder");
  assert.ok(coder, "the exact match is in the pages");
  assert.deepEqual(coder.allowedScopes, []);
  assert.deepEqual(coder.redirectUris, []);
  assert.deepEqual(coder.claims, []);
  assert.equal(coder.properties.length, 1);
  // Case matters (ordinal contains).
  assert.equal((await c.get("CODER", 1, 10)).totalCount, 0);
  // No search text: every client.
  assert.equal((await c.get(undefined, 1, 100)).totalCount, 15);
});

test("get by integer id: the whole client; unknown ids are 400, not 404", async () => {
  const c = await api();
  const id = await findId(c, "coder");
  const client = await c.get2(id);
  assert.ok(client instanceof ClientApiDto);
  assert.equal(client.clientId, "coder");
  assert.deepEqual(client.allowedScopes, ["openid", "profile", "email"]);
  assert.equal(client.claims[0].type, "team");
  assert.ok(client.updated instanceof Date);
  assert.equal(client.dPoPClockSkew, "00:05:00");
  const err = await rejection(c.get2(987654));
  assert.ok(err instanceof SwaggerException);
  assert.equal(err.status, 400);
  const body = JSON.parse(err.response);
  assert.deepEqual(body.errors.Error, ["Client with id 987654 doesn't exist"]);
  assert.match(err.headers["content-type"], /^application\/problem\+json/);
});

test("PUT: the whole client sent back changes only what changed", async () => {
  const c = await api();
  const id = await findId(c, "coder");
  const before = await c.get2(id);
  const changed = ClientApiDto.fromJS(before.toJSON());
  changed.slidingRefreshTokenLifetime = 4242;
  assert.equal(await c.put(changed), undefined);
  const after = await c.get2(id);
  assert.equal(after.slidingRefreshTokenLifetime, 4242);
  assert.notEqual(after.claims[0].id, before.claims[0].id, "child rows are re-inserted");
  const want = comparable(before);
  want.slidingRefreshTokenLifetime = 4242;
  assert.deepEqual(comparable(after), want);
  // Put it back.
  changed.slidingRefreshTokenLifetime = before.slidingRefreshTokenLifetime;
  await c.put(changed);
  assert.deepEqual(comparable(await c.get2(id)), comparable(before));
});

test("PUT is a destructive full replace: omitted fields take the DTO defaults", async () => {
  const c = await api();
  const created = await c.post(
    new ClientApiDto({
      clientId: "scratch",
      clientName: "Scratch",
      requireConsent: false,
      requirePkce: true,
      allowOfflineAccess: true,
      refreshTokenUsage: 0,
      allowedScopes: ["openid"],
      allowedGrantTypes: ["authorization_code"],
    }),
  );
  assert.ok(created.id > 0);
  const stored = await c.get2(created.id);
  assert.equal(stored.requirePkce, true);
  // Only the id and the required fields: everything else resets.
  await c.put(new ClientApiDto({ id: created.id, clientId: "scratch", clientName: "Scratch" }));
  const reset = await c.get2(created.id);
  assert.equal(reset.requireConsent, true);
  assert.equal(reset.requirePkce, false);
  assert.equal(reset.allowOfflineAccess, false);
  assert.equal(reset.refreshTokenUsage, 1);
  assert.equal(reset.refreshTokenExpiration, 1);
  assert.equal(reset.absoluteRefreshTokenLifetime, 2592000);
  assert.equal(reset.slidingRefreshTokenLifetime, 1296000);
  assert.deepEqual(reset.allowedScopes, []);
  assert.deepEqual(reset.allowedGrantTypes, []);
});

test("PUT errors are 400 problem details", async () => {
  const c = await api();
  const id = await findId(c, "coder-staging");
  const staging = await c.get2(id);
  const unknown = ClientApiDto.fromJS({ ...staging.toJSON(), id: 987654, clientId: "brand-new" });
  let err = await rejection(c.put(unknown));
  assert.equal(err.status, 400);
  assert.deepEqual(err.errors.Error, ["Client with id 987654 doesn't exist"]);
  assert.equal(err.title, "One or more model validation errors occurred.");
  assert.equal(err.instance, "/api/Clients");
  const dup = ClientApiDto.fromJS({ ...staging.toJSON(), clientId: "coder" });
  err = await rejection(c.put(dup));
  assert.equal(err.status, 400);
  assert.deepEqual(err.errors["Client already exists"], ["Client Id (coder) already exists"]);
  const missing = ClientApiDto.fromJS({ ...staging.toJSON(), clientName: "" });
  err = await rejection(c.put(missing));
  assert.equal(err.status, 400);
  assert.deepEqual(err.errors.ClientName, ["The ClientName field is required."]);
  // Nothing of it was stored.
  assert.deepEqual(comparable(await c.get2(id)), comparable(staging));
});

test("authentication and the administrator policy", async () => {
  let err = await rejection(clients(undefined).get("coder", 1, 10));
  assert.ok(err instanceof SwaggerException);
  assert.equal(err.status, 401);
  assert.equal(err.headers["www-authenticate"], "Bearer");
  assert.equal(err.response, "");
  const t = await token("no-role", "no-role-secret");
  assert.equal(t.status, 200);
  err = await rejection(clients(t.body.access_token).get("coder", 1, 10));
  assert.equal(err.status, 403);
  assert.equal(err.response, "");
  err = await rejection(clients("not-a-token").get2(1));
  assert.equal(err.status, 401);
  assert.equal(URL_.startsWith("http://127.0.0.1:"), true);
});
