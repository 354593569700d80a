// Conformance suite: drives an Okta org (the simulator in crates/sim-okta) with Okta's official
// Node.js management SDK through every call the operator makes, and asserts what Okta answers.
// Where the SDK and the server disagree, the server is wrong.
//
// Environment (seeded by crates/sim-okta/tests/conformance.rs):
//   ORG_URL       the org
//   API_TOKEN     an SSWS API token
//   APP_ID        an OIDC web app (client id CLIENT_ID) without refresh tokens; 5 more OIDC apps
//   SERVER_ID     a custom authorization server with policies "Conformance" (priority 1, for
//                 CLIENT_ID) holding rule RULE_ID, and "Shared" (priority 2, ALL_CLIENTS)
//   SVC_CLIENT    an API service app with the public key of fixtures/service-app-test-key.pem,
//                 DPoP not required; DPOP_CLIENT the same key, DPoP required
//   RATE_ORG_URL  a second org whose rate limit is 2 requests per second
//
// Run: node --test suite.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import okta from "@okta/okta-sdk-nodejs";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const orgUrl = env("ORG_URL");
const token = env("API_TOKEN");
const APP_ID = env("APP_ID");
const CLIENT_ID = env("CLIENT_ID");
const SERVER_ID = env("SERVER_ID");
const RULE_ID = env("RULE_ID");
const privateKey = readFileSync(new URL("./fixtures/service-app-test-key.pem", import.meta.url), "utf8");
const SCOPES = ["okta.apps.read", "okta.apps.manage", "okta.authorizationServers.read", "okta.authorizationServers.manage"];

const client = (url = orgUrl, t = token) => new okta.Client({ orgUrl: url, token: t, cacheMiddleware: null });

async function rejection(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail("the call succeeded");
}

async function all(collection) {
  const out = [];
  for await (const item of collection) out.push(item);
  return out;
}

test("an OIDC app reads as OpenIdConnectApplication, without refresh_token before the grant", async () => {
  const app = await client().applicationApi.getApplication({ appId: APP_ID });
  assert.equal(app.signOnMode, "OPENID_CONNECT");
  assert.equal(app.constructor.name, "OpenIdConnectApplication");
  assert.equal(app.credentials.oauthClient.client_id, CLIENT_ID);
  assert.deepEqual(app.settings.oauthClient.grant_types, ["authorization_code"]);
  assert.equal(app.settings.oauthClient.refresh_token, undefined);
  assert.equal(app.credentials.oauthClient.client_secret, undefined, "the secret is not shown on reads");
});

test("the app list pages through Link headers and rejects a filter on client_id", async () => {
  const apps = await all(await client().applicationApi.listApplications({ filter: 'name eq "oidc_client"', limit: 2 }));
  assert.ok(apps.length >= 6, `${apps.length} apps`);
  assert.ok(apps.some((a) => a.credentials.oauthClient.client_id === CLIENT_ID));
  const e = await rejection(
    all(await client().applicationApi.listApplications({ filter: `credentials.oauthClient.client_id eq "${CLIENT_ID}"` })),
  );
  assert.equal(e.status, 400);
  assert.equal(e.errorCode, "E0000001");
});

test("replaceApplication: the refresh grant brings defaults, an omitted refresh_token keeps its values, the secret survives", async () => {
  const api = client().applicationApi;
  const app = await api.getApplication({ appId: APP_ID });
  app.settings.oauthClient.grant_types = ["authorization_code", "refresh_token"];
  const put = await api.replaceApplication({ appId: APP_ID, application: app });
  assert.deepEqual(put.settings.oauthClient.grant_types, ["authorization_code", "refresh_token"]);
  assert.equal(put.settings.oauthClient.refresh_token.rotation_type, "STATIC");
  assert.equal(put.settings.oauthClient.refresh_token.leeway, 30);
  assert.ok(put.credentials.oauthClient.client_secret, "the secret is shown in the answer to an update");
  const again = await api.getApplication({ appId: APP_ID });
  again.settings.oauthClient.refresh_token = { rotation_type: "ROTATE", leeway: 20 };
  await api.replaceApplication({ appId: APP_ID, application: again });
  const third = await api.getApplication({ appId: APP_ID });
  delete third.settings.oauthClient.refresh_token;
  const kept = await api.replaceApplication({ appId: APP_ID, application: third });
  assert.equal(kept.settings.oauthClient.refresh_token.rotation_type, "ROTATE");
  assert.equal(kept.settings.oauthClient.refresh_token.leeway, 20);
  assert.deepEqual(kept.settings.oauthClient.redirect_uris, app.settings.oauthClient.redirect_uris);
});

test("an invalid leeway is E0000001 with causes", async () => {
  const api = client().applicationApi;
  const app = await api.getApplication({ appId: APP_ID });
  app.settings.oauthClient.refresh_token = { rotation_type: "ROTATE", leeway: 61 };
  const e = await rejection(api.replaceApplication({ appId: APP_ID, application: app }));
  assert.equal(e.status, 400);
  assert.equal(e.errorCode, "E0000001");
  assert.ok(e.errorCauses.length > 0);
  assert.match(JSON.stringify(e.errorCauses), /leeway/);
});

test("policies come in priority order and rules are replaced whole within Okta's ranges", async () => {
  const api = client().authorizationServerApi;
  const policies = await all(await api.listAuthorizationServerPolicies({ authServerId: SERVER_ID }));
  assert.deepEqual(policies.map((p) => p.name), ["Conformance", "Shared"]);
  const policyId = policies[0].id;
  const rules = await all(await api.listAuthorizationServerPolicyRules({ authServerId: SERVER_ID, policyId }));
  assert.equal(rules.length, 1);
  const rule = await api.getAuthorizationServerPolicyRule({ authServerId: SERVER_ID, policyId, ruleId: RULE_ID });
  assert.deepEqual(rule.conditions.grantTypes.include, ["authorization_code"]);
  rule.conditions.scopes.include = [...rule.conditions.scopes.include, "offline_access"];
  rule.actions.token.refreshTokenLifetimeMinutes = 129600;
  rule.actions.token.refreshTokenWindowMinutes = 43200;
  const put = await api.replaceAuthorizationServerPolicyRule({ authServerId: SERVER_ID, policyId, ruleId: RULE_ID, policyRule: rule });
  assert.equal(put.actions.token.refreshTokenLifetimeMinutes, 129600);
  assert.ok(put.conditions.scopes.include.includes("offline_access"));
  rule.actions.token.refreshTokenLifetimeMinutes = 30;
  const e = await rejection(
    api.replaceAuthorizationServerPolicyRule({ authServerId: SERVER_ID, policyId, ruleId: RULE_ID, policyRule: rule }),
  );
  assert.equal(e.status, 400);
  assert.equal(e.errorCode, "E0000001");
  assert.match(JSON.stringify(e.errorCauses), /refreshTokenLifetimeMinutes/);
});

test("a bad API token is 401 E0000011", async () => {
  const e = await rejection(client(orgUrl, "00bad").applicationApi.getApplication({ appId: APP_ID }));
  assert.equal(e.status, 401);
  assert.equal(e.errorCode, "E0000011");
  assert.equal(e.errorSummary, "Invalid token provided");
});

test("past the rate limit the SDK waits for X-Rate-Limit-Reset (against Date) and succeeds", async () => {
  const c = client(env("RATE_ORG_URL"));
  for (let i = 0; i < 3; i++) {
    const app = await c.applicationApi.getApplication({ appId: APP_ID });
    assert.equal(app.id, APP_ID);
  }
});

test("a private_key_jwt service app gets a token and calls the API", async () => {
  const c = new okta.Client({
    orgUrl,
    authorizationMode: "PrivateKey",
    clientId: env("SVC_CLIENT"),
    scopes: SCOPES,
    privateKey,
    keyId: "conformance-key",
    cacheMiddleware: null,
  });
  const app = await c.applicationApi.getApplication({ appId: APP_ID });
  assert.equal(app.id, APP_ID);
});

test("a DPoP-requiring service app: 400 use_dpop_nonce with a DPoP-Nonce header, then a DPoP-bound token", async () => {
  const c = new okta.Client({
    orgUrl,
    authorizationMode: "PrivateKey",
    clientId: env("DPOP_CLIENT"),
    scopes: SCOPES,
    privateKey,
    keyId: "conformance-key",
    cacheMiddleware: null,
  });
  const seen = [];
  c.requestExecutor.on("response", (r) => seen.push({ status: r.status, url: r.url, nonce: r.headers.get("dpop-nonce") }));
  const sent = [];
  c.requestExecutor.on("request", (r) => sent.push(r.headers));
  const app = await c.applicationApi.getApplication({ appId: APP_ID });
  assert.equal(app.id, APP_ID);
  assert.deepEqual(
    seen.map((r) => [r.status, new URL(r.url).pathname]),
    [[400, "/oauth2/v1/token"], [200, "/oauth2/v1/token"], [200, `/api/v1/apps/${APP_ID}`]],
  );
  assert.ok(seen[0].nonce, "the nonce comes with the 400");
  assert.match(sent[2].Authorization, /^DPoP /);
  assert.ok(sent[2].DPoP, "a proof on the API call");
});
