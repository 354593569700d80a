-- Argo CD health check for oidcrefresh.dev/OidcRefreshPolicy (argocd-cm key
-- resource.customizations.health.oidcrefresh.dev_OidcRefreshPolicy).
--   Progressing: no status yet, status.observedGeneration < metadata.generation, Reconciling=True,
--                or Ready=False for a transient reason (the operator retries by itself).
--   Degraded:    Stalled=True, Ready=False for a reason only the user can fix, or an Observe-mode
--                policy with pending changes (status.pendingChanges > 0: its dry run found work).
--   Healthy:     Ready=True and nothing pending.
-- The message is the Ready condition's.
local hs = {}

-- Ready=False reasons that need the user (README "Troubleshooting by reason"). Unreachable,
-- Throttled, ProviderError, RolloutInProgress and WaitingForIdentityProvider are transient.
local terminal = {
  SecretNotFound = true,
  InvalidSecret = true,
  AuthenticationFailed = true,
  Forbidden = true,
  ClientNotFound = true,
  Unsupported = true,
  Rejected = true,
  ReplicationPending = true,
  ManagedByKeycloakConfigCli = true,
  ManagedByBicep = true,
  ManagedByKeycloakOperator = true,
  ManagedByAzureServiceOperator = true,
  Drifted = true,
  DeploymentNotFound = true,
  ContainerNotFound = true,
  EnvFromReference = true,
  DuplicateEnvEntry = true,
  InvalidEnvValue = true,
  FieldConflict = true,
  DuplicatePolicy = true,
  RolloutFailed = true,
  DeploymentPaused = true,
  CoderFlagOverride = true,
  CoderConfigFile = true,
  ConflictingAuthURLParams = true,
  InvalidSpec = true,
}

local function condition(conditions, type)
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function messageOf(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.status == nil or obj.status.conditions == nil or #obj.status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the policy"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local ready = condition(conditions, "Ready")
local stalled = condition(conditions, "Stalled")
local reconciling = condition(conditions, "Reconciling")

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = messageOf(ready, messageOf(stalled, "Stalled"))
  return hs
end

if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = messageOf(ready, messageOf(reconciling, "Reconciling"))
  return hs
end

local pending = obj.status.pendingChanges
local mode = nil
if obj.spec ~= nil then
  mode = obj.spec.managementPolicy
end
if mode == "Observe" and type(pending) == "number" and pending > 0 then
  hs.status = "Degraded"
  hs.message = "Observe mode: " .. tostring(pending) .. " pending change(s) listed in status.plan; set spec.managementPolicy to Enforce to make them"
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = messageOf(ready, "Ready")
  return hs
end

if ready ~= nil and ready.status == "False" and terminal[ready.reason] then
  hs.status = "Degraded"
  hs.message = messageOf(ready, ready.reason)
  return hs
end

hs.status = "Progressing"
hs.message = messageOf(ready, "Waiting for the Ready condition")
return hs
