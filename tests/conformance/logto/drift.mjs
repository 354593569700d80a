// Changes an application's customClientMetadata through Logto's official Management API client,
// as an administrator's script would: reads the app, merges the given keys into the object and
// sends the whole object back (Logto's PATCH replaces it wholesale). The body is checked with the
// official guard first. Prints the stored customClientMetadata as JSON on the last line.
//
// Environment: LOGTO_URL, LOGTO_CLIENT_ID, LOGTO_CLIENT_SECRET (a machine-to-machine app with the
// Management API permission `all`), LOGTO_TENANT (default `default`).
// Run: node drift.mjs <application id> '<JSON object of customClientMetadata keys to set>'

import { createManagementApi, getManagementApiIndicator } from "@logto/api/management";
import { applicationPatchGuard } from "@logto/schemas";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const [appId, changesJson] = process.argv.slice(2);
if (!appId || !changesJson) {
  throw new Error("usage: node drift.mjs <application id> '<JSON object>'");
}
const changes = JSON.parse(changesJson);
const tenant = process.env.LOGTO_TENANT || "default";
const { apiClient } = createManagementApi(tenant, {
  clientId: env("LOGTO_CLIENT_ID"),
  clientSecret: env("LOGTO_CLIENT_SECRET"),
  baseUrl: env("LOGTO_URL"),
  apiIndicator: getManagementApiIndicator(tenant),
});
const path = { params: { path: { id: appId } } };

const read = await apiClient.GET("/api/applications/{id}", path);
if (!read.data) {
  throw new Error(`GET application ${appId}: ${read.response.status} ${JSON.stringify(read.error)}`);
}
const body = { customClientMetadata: { ...read.data.customClientMetadata, ...changes } };
const checked = applicationPatchGuard.safeParse(body);
if (!checked.success) {
  throw new Error(`the official guard refuses the body: ${checked.error}`);
}
const written = await apiClient.PATCH("/api/applications/{id}", { ...path, body });
if (!written.data) {
  throw new Error(`PATCH application ${appId}: ${written.response.status} ${JSON.stringify(written.error)}`);
}
console.log(JSON.stringify(written.data.customClientMetadata));
