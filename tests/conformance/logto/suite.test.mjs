// Conformance suite: drives a Logto server (the simulator in crates/sim-logto, or a real Logto
// seeded the same way) with Logto's official Management API client `@logto/api` through every
// call the operator makes (client-credentials token with the Management API resource, GET and
// PATCH /api/applications/{id}) and the calls around them, and checks what it answers against
// Logto's own zod guards from `@logto/schemas`: what a guard accepts or refuses, the server must
// accept or refuse the same way, with the same zod issues. Where they disagree, the server is wrong.
//
// Environment: LOGTO_URL (the Logto endpoint, e.g. http://127.0.0.1:3001; tenant `default`). The
// server must hold the fixtures that crates/sim-logto/tests/conformance.rs seeds (see `seed`
// there): machine-to-machine apps `operator-m2m` (secret `operator-secret`, a role with the
// Management API permission `all`) and `no-role-m2m` (`no-role-secret`, no role); Traditional apps
// `coder-app` (`coder-secret`; customClientMetadata corsAllowedOrigins, idTokenTtl 3600,
// rotateRefreshToken false, maxAllowedGrants 5; customData {team: "platform"}), `scratch-app`
// and `third-party-app` (isThirdParty); a SAML app `saml-app`; a Native device-flow app
// `device-app`; a Protected app `protected-app` (host docs.example.com, origin
// https://docs.internal.example.com, sessionDuration 3600, no page rules).
//
// Run: LOGTO_URL=... node --test suite.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { createManagementApi, getManagementApiIndicator } from "@logto/api/management";
import {
  applicationPatchGuard,
  applicationResponseGuard,
  customClientMetadataDefault,
  customClientMetadataGuard,
} from "@logto/schemas";
import resources from "@logto/phrases";
import { z } from "zod";

const baseUrl = process.env.LOGTO_URL;
if (!baseUrl) {
  throw new Error("LOGTO_URL is not set");
}
const TENANT = "default";
const INDICATOR = getManagementApiIndicator(TENANT);

/** The body guard of `PATCH /api/applications/:id` (packages/core application routes). */
const patchBodyGuard = applicationPatchGuard.merge(z.object({ isAdmin: z.boolean().optional() }));
/** What `GET /api/applications/:id` answers: the row, without a replaced legacy secret, plus isAdmin. */
const getAnswerGuard = applicationResponseGuard.merge(z.object({ isAdmin: z.boolean() })).strict();
/** What `PATCH` answers: the updated row, without isAdmin. */
const patchAnswerGuard = applicationResponseGuard.strict();

/** Logto's English message for an error code, interpolated as i18next does. */
function phrase(code, vars = {}) {
  const text = code.split(".").reduce((o, k) => o?.[k], resources.en.errors);
  assert.equal(typeof text, "string", `no phrase ${code}`);
  return text.replace(/{{(\w+)}}/g, (_, k) => String(vars[k]));
}

/** Asserts a Management API error body: Logto's code and its English message. */
function assertError(error, code, vars) {
  assert.equal(error.code, code, JSON.stringify(error));
  assert.equal(error.message, phrase(code, vars), code);
}

function management(clientId, clientSecret) {
  return createManagementApi(TENANT, {
    clientId,
    clientSecret,
    baseUrl,
    apiIndicator: INDICATOR,
  });
}

const operator = management("operator-m2m", "operator-secret").apiClient;

/** The operator's own way of getting a token: HTTP Basic with form-urlencoded credentials. */
function basic(id, secret) {
  const enc = (s) => encodeURIComponent(s).replace(/%20/g, "+");
  return `Basic ${Buffer.from(`${enc(id)}:${enc(secret)}`).toString("base64")}`;
}

async function tokenRequest(form, headers = {}) {
  const res = await fetch(`${baseUrl}/oidc/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
    body: new URLSearchParams(form),
  });
  return { status: res.status, body: await res.json().catch(() => null), headers: res.headers };
}

async function getApp(id, client = operator) {
  const { data, error, response } = await client.GET("/api/applications/{id}", {
    params: { path: { id } },
  });
  return { status: response.status, data, error };
}

async function patchApp(id, body, client = operator) {
  const { data, error, response } = await client.PATCH("/api/applications/{id}", {
    params: { path: { id } },
    body,
  });
  return { status: response.status, data, error };
}

/** GETs an app, checking the answer against the official response guard. */
async function readApp(id) {
  const r = await getApp(id);
  assert.equal(r.status, 200, JSON.stringify(r.error));
  const parsed = getAnswerGuard.safeParse(r.data);
  assert.ok(parsed.success, `GET answer fits applicationResponseGuard: ${parsed.error}`);
  return r.data;
}

/** PATCHes an app with a body the official guard accepts; checks the answer and what is stored. */
async function patchOk(id, body) {
  assert.ok(patchBodyGuard.safeParse(body).success, "the test sends a valid body");
  const r = await patchApp(id, body);
  assert.equal(r.status, 200, JSON.stringify(r.error));
  const parsed = patchAnswerGuard.safeParse(r.data);
  assert.ok(parsed.success, `PATCH answer fits applicationResponseGuard: ${parsed.error}`);
  assert.equal("isAdmin" in r.data, false, "the PATCH answer has no isAdmin");
  const { isAdmin, ...stored } = await readApp(id);
  assert.deepEqual(stored, r.data, "the PATCH answer is what is stored");
  return r.data;
}

/**
 * PATCHes a body the official guard refuses: the server answers 400 guard.invalid_input with the
 * guard's own ZodError (`data`) and Logto's rendering of its issues (`details`).
 */
async function patchRefused(id, body) {
  const expected = patchBodyGuard.safeParse(body);
  assert.equal(expected.success, false, "the guard refuses this body");
  const before = await readApp(id);
  const r = await patchApp(id, body);
  assert.equal(r.status, 400, JSON.stringify(r.error));
  assertError(r.error, "guard.invalid_input", { type: "body" });
  assert.deepEqual(r.error.data, JSON.parse(JSON.stringify(expected.error)));
  assert.equal(
    r.error.details,
    expected.error.issues
      .map((i) => `Error in key path "${i.path.map(String).join(".")}": (${i.code}) ${i.message}`)
      .join("\n"),
  );
  assert.deepEqual(await readApp(id), before, "nothing is stored");
  return r.error;
}

// --- Token endpoint -----------------------------------------------------------------------

test("the official client gets a Management API token with scope all (credentials in the body)", async () => {
  const { clientCredentials } = management("operator-m2m", "operator-secret");
  const token = await clientCredentials.getAccessToken();
  assert.equal(token.scope, "all");
  assert.ok(token.value.length > 0);
  assert.ok(token.expiresAt > Date.now() / 1000 + 60, "expires_in is a number of seconds");
  // Cached: the same token comes back until it nears expiry.
  assert.equal((await clientCredentials.getAccessToken()).value, token.value);
});

test("the operator's token request (HTTP Basic, resource, scope=all) answers a bearer token and no refresh token", async () => {
  const r = await tokenRequest(
    { grant_type: "client_credentials", resource: INDICATOR, scope: "all" },
    { authorization: basic("operator-m2m", "operator-secret") },
  );
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.token_type, "Bearer");
  assert.equal(r.body.scope, "all");
  assert.equal(typeof r.body.expires_in, "number");
  assert.equal(r.body.refresh_token, undefined, "client credentials never yield a refresh token");
  assert.equal(r.headers.get("cache-control"), "no-store");
  // The token works with the official client.
  const { createApiClient } = await import("@logto/api/management");
  const client = createApiClient({ baseUrl, getToken: async () => r.body.access_token });
  assert.equal((await getApp("coder-app", client)).status, 200);
});

test("credentials in both the header and the body are refused", async () => {
  const r = await tokenRequest(
    {
      grant_type: "client_credentials",
      resource: INDICATOR,
      scope: "all",
      client_id: "operator-m2m",
      client_secret: "operator-secret",
    },
    { authorization: basic("operator-m2m", "operator-secret") },
  );
  assert.equal(r.status, 400);
  assert.equal(r.body.error, "invalid_request");
});

test("a wrong secret or an unknown client fails the official client with 401", async () => {
  for (const [id, secret] of [
    ["operator-m2m", "wrong"],
    ["nobody", "operator-secret"],
  ]) {
    const { apiClient } = management(id, secret);
    await assert.rejects(getApp("coder-app", apiClient), {
      name: "ClientCredentialsError",
      message: /401/,
    });
    const r = await tokenRequest({
      grant_type: "client_credentials",
      resource: INDICATOR,
      scope: "all",
      client_id: id,
      client_secret: secret,
    });
    assert.equal(r.status, 401);
    assert.equal(r.body.error, "invalid_client");
  }
});

test("only machine-to-machine apps have the client-credentials grant", async () => {
  const r = await tokenRequest(
    { grant_type: "client_credentials", resource: INDICATOR, scope: "all" },
    { authorization: basic("coder-app", "coder-secret") },
  );
  assert.equal(r.status, 400);
  assert.equal(r.body.error, "unauthorized_client");
});

test("another tenant's Management API indicator is an invalid target", async () => {
  const { apiClient } = createManagementApi("acme", {
    clientId: "operator-m2m",
    clientSecret: "operator-secret",
    baseUrl,
  });
  await assert.rejects(getApp("coder-app", apiClient), { message: /400/ });
  const r = await tokenRequest(
    { grant_type: "client_credentials", resource: getManagementApiIndicator("acme"), scope: "all" },
    { authorization: basic("operator-m2m", "operator-secret") },
  );
  assert.equal(r.status, 400);
  assert.equal(r.body.error, "invalid_target");
});

// --- Management API authentication --------------------------------------------------------

test("an M2M app without the Management API permission gets a token without all, then 403", async () => {
  const { apiClient, clientCredentials } = management("no-role-m2m", "no-role-secret");
  const token = await clientCredentials.getAccessToken();
  assert.equal(token.scope, undefined);
  const warn = console.warn;
  console.warn = () => {}; // the client warns that the scope is not `all`
  try {
    const r = await getApp("coder-app", apiClient);
    assert.equal(r.status, 403);
    assertError(r.error, "auth.forbidden");
  } finally {
    console.warn = warn;
  }
});

test("requests without a usable bearer token are 401 with koa-auth's codes", async () => {
  const url = `${baseUrl}/api/applications/coder-app`;
  const cases = [
    [{}, "auth.authorization_header_missing"],
    [{ authorization: basic("operator-m2m", "operator-secret") }, "auth.authorization_token_type_not_supported"],
    [{ authorization: "Bearer not-a-token" }, "auth.unauthorized"],
  ];
  for (const [headers, code] of cases) {
    const res = await fetch(url, { headers });
    assert.equal(res.status, 401, code);
    assertError(await res.json(), code);
  }
  // A token without the Management API resource is opaque and refused.
  const r = await tokenRequest(
    { grant_type: "client_credentials", scope: "all" },
    { authorization: basic("operator-m2m", "operator-secret") },
  );
  assert.equal(r.status, 200);
  const res = await fetch(url, { headers: { authorization: `Bearer ${r.body.access_token}` } });
  assert.equal(res.status, 401);
  assertError(await res.json(), "auth.unauthorized");
});

// --- GET /api/applications/{id} -------------------------------------------------------------

test("GET answers the stored row with isAdmin, fitting the official guards", async () => {
  const app = await readApp("coder-app");
  assert.equal(app.id, "coder-app");
  assert.equal(app.type, "Traditional");
  assert.equal(app.isAdmin, false);
  assert.ok(customClientMetadataGuard.strict().safeParse(app.customClientMetadata).success);
  assert.deepEqual(app.customData, { team: "platform" });
  const m2m = await readApp("operator-m2m");
  assert.equal(m2m.type, "MachineToMachine");
  // Every seeded row is one Logto could hold.
  for (const id of ["no-role-m2m", "scratch-app", "saml-app", "third-party-app", "device-app", "protected-app"]) {
    await readApp(id);
  }
});

test("an app created without refresh settings shows {} and the defaults apply at runtime", async () => {
  const app = await readApp("scratch-app");
  assert.deepEqual(app.customClientMetadata, {});
  assert.equal(customClientMetadataDefault.refreshTokenTtlInDays, 14);
  assert.equal(customClientMetadataDefault.rotateRefreshToken, true);
});

test("an unknown application is 404 entity.not_exists_with_id", async () => {
  for (const r of [await getApp("no-such-app"), await patchApp("no-such-app", { name: "x" })]) {
    assert.equal(r.status, 404);
    assertError(r.error, "entity.not_exists_with_id", { name: "applications", id: "no-such-app" });
  }
});

// --- PATCH /api/applications/{id}: what the operator sends ----------------------------------

test("customClientMetadata is replaced whole: keys left out of the object are gone", async () => {
  const before = await readApp("coder-app");
  const stored = await patchOk("coder-app", {
    customClientMetadata: { refreshTokenTtlInDays: 90, rotateRefreshToken: true },
  });
  assert.deepEqual(stored.customClientMetadata, { refreshTokenTtlInDays: 90, rotateRefreshToken: true });
  // Top-level keys left out stay as they were.
  assert.deepEqual(stored.customData, before.customData);
  assert.deepEqual(stored.oidcClientMetadata, before.oidcClientMetadata);
  assert.equal(stored.name, before.name);
  // The operator's way: read, change only the owned keys, send the whole object back.
  const restored = await patchOk("coder-app", {
    customClientMetadata: { ...before.customClientMetadata, refreshTokenTtlInDays: 90, alwaysIssueRefreshToken: true },
  });
  assert.deepEqual(restored.customClientMetadata, {
    ...before.customClientMetadata,
    refreshTokenTtlInDays: 90,
    alwaysIssueRefreshToken: true,
  });
  await patchOk("coder-app", { customClientMetadata: before.customClientMetadata });
  assert.deepEqual(await readApp("coder-app"), before);
});

test("unknown and not-patchable keys are dropped silently, as the guard strips them", async () => {
  const before = await readApp("scratch-app");
  const body = {
    customClientMetadata: { refreshTokenTTLInDays: 5, rotateRefreshToken: false, notAKey: 1 },
    type: "MachineToMachine",
    isThirdParty: true,
    id: "another-id",
    unknownTopLevel: "x",
  };
  const parsed = patchBodyGuard.safeParse(body);
  assert.ok(parsed.success);
  const r = await patchApp("scratch-app", body);
  assert.equal(r.status, 200, JSON.stringify(r.error));
  const after = await readApp("scratch-app");
  assert.deepEqual(after.customClientMetadata, parsed.data.customClientMetadata);
  assert.deepEqual(after.customClientMetadata, { rotateRefreshToken: false });
  assert.equal(after.type, before.type);
  assert.equal(after.isThirdParty, before.isThirdParty);
  assert.equal(after.id, "scratch-app");
  assert.equal("unknownTopLevel" in after, false);
  await patchOk("scratch-app", { customClientMetadata: {} });
});

test("refreshTokenTtlInDays is an integer from 1 to 180", async () => {
  for (const days of [1, 14, 180]) {
    const app = await patchOk("scratch-app", { customClientMetadata: { refreshTokenTtlInDays: days } });
    assert.equal(app.customClientMetadata.refreshTokenTtlInDays, days);
  }
  for (const days of [0, -1, 0.5, 181, 365, 1.5, 180.5, "30", null, true]) {
    await patchRefused("scratch-app", { customClientMetadata: { refreshTokenTtlInDays: days } });
  }
  await patchOk("scratch-app", { customClientMetadata: {} });
});

test("the other customClientMetadata keys are typed and ranged by the guard", async () => {
  for (const customClientMetadata of [
    { rotateRefreshToken: "false" },
    { alwaysIssueRefreshToken: 1 },
    { idTokenTtl: "3600" },
    { maxAllowedGrants: 0 },
    { maxAllowedGrants: 2.5 },
    { corsAllowedOrigins: [""] },
    { corsAllowedOrigins: "https://coder.example.com" },
    { corsAllowedOrigins: ["https://a.example.com", 7] },
    { refreshTokenTtlInDays: 0, rotateRefreshToken: "no" },
  ]) {
    await patchRefused("scratch-app", { customClientMetadata });
  }
  for (const body of [
    { customClientMetadata: null },
    { customClientMetadata: [] },
    { name: "" },
    { name: 7 },
    { name: "x".repeat(257) },
    { description: 7 },
    { customData: [] },
    { customData: "team" },
    {
      oidcClientMetadata: {
        redirectUris: [],
        postLogoutRedirectUris: [],
        backchannelLogoutUri: "not-a-url",
      },
    },
    { oidcClientMetadata: { redirectUris: "https://coder.example.com/cb", postLogoutRedirectUris: [] } },
    { isAdmin: "yes" },
  ]) {
    await patchRefused("scratch-app", body);
  }
});

test("name, description and customData are set as sent", async () => {
  const before = await readApp("scratch-app");
  const stored = await patchOk("scratch-app", {
    name: "x".repeat(256),
    description: null,
    customData: { nested: { list: [1, "two", null] } },
  });
  assert.equal(stored.name.length, 256);
  assert.equal(stored.description, null);
  assert.deepEqual(stored.customData, { nested: { list: [1, "two", null] } });
  await patchOk("scratch-app", {
    name: before.name,
    description: before.description,
    customData: before.customData,
  });
  assert.deepEqual(await readApp("scratch-app"), before);
});

test("redirect URIs: web URLs, wildcards with a dotted host, and native app schemes", async () => {
  const before = await readApp("scratch-app");
  for (const uri of [
    "https://coder.example.com/api/v2/users/oidc/callback",
    "http://localhost:3000/callback",
    "https://*.example.com/callback",
    "com.example.app://callback",
    "io.logto:/callback",
  ]) {
    await patchOk("scratch-app", { oidcClientMetadata: { redirectUris: [uri], postLogoutRedirectUris: [uri] } });
  }
  for (const uri of [
    "coder.example.com/callback",
    "https://coder.example.com/a/../callback",
    "https://*/callback",
    "https://coder.example.com/cb?x=*",
    "",
  ]) {
    await patchRefused("scratch-app", { oidcClientMetadata: { redirectUris: [uri], postLogoutRedirectUris: [] } });
  }
  await patchOk("scratch-app", { oidcClientMetadata: before.oidcClientMetadata });
});

test("isAdmin switches the admin role of an M2M app; the PATCH answer never shows it", async () => {
  const on = await patchApp("no-role-m2m", { isAdmin: true });
  assert.equal(on.status, 200, JSON.stringify(on.error));
  assert.equal("isAdmin" in on.data, false);
  assert.equal((await readApp("no-role-m2m")).isAdmin, true);
  const off = await patchApp("no-role-m2m", { isAdmin: false });
  assert.equal(off.status, 200);
  assert.equal((await readApp("no-role-m2m")).isAdmin, false);
});

test("a refused body is refused before the application is looked up", async () => {
  const body = { customClientMetadata: { refreshTokenTtlInDays: 500 } };
  const r = await patchApp("no-such-app", body);
  assert.equal(r.status, 400);
  assertError(r.error, "guard.invalid_input", { type: "body" });
});

test("oidcClientMetadata is replaced whole and needs both URI lists", async () => {
  const before = await readApp("scratch-app");
  await patchRefused("scratch-app", {
    oidcClientMetadata: { redirectUris: ["https://coder.example.com/cb"] },
  });
  await patchRefused("scratch-app", {
    oidcClientMetadata: { redirectUris: ["not a url"], postLogoutRedirectUris: [] },
  });
  const stored = await patchOk("scratch-app", {
    oidcClientMetadata: { redirectUris: ["https://coder.example.com/cb"], postLogoutRedirectUris: [] },
  });
  assert.deepEqual(stored.oidcClientMetadata, {
    redirectUris: ["https://coder.example.com/cb"],
    postLogoutRedirectUris: [],
  });
  await patchOk("scratch-app", { oidcClientMetadata: before.oidcClientMetadata });
});

test("an empty body changes nothing and answers the application", async () => {
  const { isAdmin, ...before } = await readApp("coder-app");
  const r = await patchApp("coder-app", {});
  assert.equal(r.status, 200);
  assert.deepEqual(r.data, before);
});

// --- PATCH: what Logto refuses after the guard ----------------------------------------------

test("a SAML app is refused: its own API must be used", async () => {
  const r = await patchApp("saml-app", { customClientMetadata: { rotateRefreshToken: false } });
  assert.equal(r.status, 400);
  assertError(r.error, "application.saml.use_saml_app_api");
});

test("a third-party app cannot enable token exchange (422)", async () => {
  const r = await patchApp("third-party-app", { customClientMetadata: { allowTokenExchange: true } });
  assert.equal(r.status, 422);
  assertError(r.error, "application.third_party_application_cannot_enable_token_exchange");
  await patchOk("third-party-app", { customClientMetadata: { allowTokenExchange: false } });
});

test("isDeviceFlow cannot be changed after creation (422)", async () => {
  const r = await patchApp("device-app", { customClientMetadata: { isDeviceFlow: false } });
  assert.equal(r.status, 422);
  assertError(r.error, "application.device_flow_not_changeable");
  await patchOk("device-app", { customClientMetadata: { isDeviceFlow: true, refreshTokenTtlInDays: 30 } });
});

test("protectedAppMetadata is only for Protected apps and is never stored as sent", async () => {
  const before = await readApp("scratch-app");
  const metadata = {
    host: "coder.example.com",
    origin: "https://coder.example.com",
    sessionDuration: 3600,
    pageRules: [],
  };
  const r = await patchApp("scratch-app", { protectedAppMetadata: metadata });
  assert.equal(r.status, 400);
  assertError(r.error, "application.protected_application_only");
  assert.deepEqual(await readApp("scratch-app"), before);
  // A Protected app's object takes the keys sent and keeps the others.
  const partial = await patchApp("protected-app", { protectedAppMetadata: { sessionDuration: 7200 } });
  assert.equal(partial.status, 200, JSON.stringify(partial.error));
  assert.deepEqual((await readApp("protected-app")).protectedAppMetadata, {
    host: "docs.example.com",
    origin: "https://docs.internal.example.com",
    sessionDuration: 7200,
    pageRules: [],
  });
  // null is no update (the route only acts on a value), and nothing else is sent: the app as it is.
  const nothing = await patchApp("scratch-app", { protectedAppMetadata: null });
  assert.equal(nothing.status, 200, JSON.stringify(nothing.error));
  assert.deepEqual(await readApp("scratch-app"), before);
});

test("an M2M app accepts refresh-token settings (they have no effect: it never gets refresh tokens)", async () => {
  const stored = await patchOk("no-role-m2m", {
    customClientMetadata: { alwaysIssueRefreshToken: true, refreshTokenTtlInDays: 30 },
  });
  assert.equal(stored.customClientMetadata.alwaysIssueRefreshToken, true);
  const r = await tokenRequest(
    { grant_type: "client_credentials", resource: INDICATOR, scope: "all" },
    { authorization: basic("no-role-m2m", "no-role-secret") },
  );
  assert.equal(r.status, 200);
  assert.equal(r.body.refresh_token, undefined);
});
