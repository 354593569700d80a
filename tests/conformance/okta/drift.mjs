// Drift made with Okta's official SDK, as an administrator's script would make it: shortens the
// grace period of Coder's app, removes its refresh_token grant, and changes the refresh-token
// lifetime of the rule that applies to it. tests/provider_okta.rs then checks that the operator
// restores exactly these settings and nothing else.
//
// Environment: ORG_URL, API_TOKEN, APP_ID, SERVER_ID, POLICY_ID, RULE_ID.
// Run: node drift.mjs

import okta from "@okta/okta-sdk-nodejs";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const client = new okta.Client({ orgUrl: env("ORG_URL"), token: env("API_TOKEN"), cacheMiddleware: null });
const apps = client.applicationApi;
const appId = env("APP_ID");

const app = await apps.getApplication({ appId });
app.settings.oauthClient.refresh_token = { ...app.settings.oauthClient.refresh_token, leeway: 5 };
await apps.replaceApplication({ appId, application: app });

const again = await apps.getApplication({ appId });
again.settings.oauthClient.grant_types = again.settings.oauthClient.grant_types.filter((g) => g !== "refresh_token");
await apps.replaceApplication({ appId, application: again });

const ids = { authServerId: env("SERVER_ID"), policyId: env("POLICY_ID"), ruleId: env("RULE_ID") };
const rule = await client.authorizationServerApi.getAuthorizationServerPolicyRule(ids);
rule.actions.token.refreshTokenLifetimeMinutes = 10080;
await client.authorizationServerApi.replaceAuthorizationServerPolicyRule({ ...ids, policyRule: rule });
console.log("drifted");
