-- Argo CD health of Ferry's kinds (BlobCopy, ContainerCopyJob, InAccountRestore, DatabaseAccount), for
-- argocd-cm's resource.customizations.health.ferry.dev_<Kind>. It reads the conditions kstatus reads:
-- Stalled is Degraded, Ready is Healthy, a job paused by its spec is Suspended, anything else Progressing.
local hs = { status = "Progressing", message = "waiting for the Ferry operator" }
local status = obj.status
if status == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "the Ferry operator has not acted on the latest spec yet"
  return hs
end
local conditions = {}
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    conditions[c.type] = c
  end
end
local function said(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end
local function is(type, value)
  return conditions[type] ~= nil and conditions[type].status == value
end
-- Failed jobs, refused keys; an account's backup with gaps, or instances that cannot start.
for _, type in ipairs({ "Stalled", "BackupHealthy", "InstancesReady" }) do
  if is(type, type == "Stalled" and "True" or "False") then
    hs.status = "Degraded"
    hs.message = said(conditions[type])
    return hs
  end
end
if status.phase == "Paused" or status.phase == "Pausing" then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true"
  return hs
end
if is("Ready", "True") then
  hs.status = "Healthy"
  hs.message = said(conditions.Ready)
  return hs
end
if conditions.Ready ~= nil then
  hs.message = said(conditions.Ready)
end
return hs
