-- Argo CD health of a Lockstep ExternalSecret, SecretStore or ClusterSecretStore, from its Ready
-- condition: Healthy when it is True for the current generation, Degraded when it is False (the
-- message says why), Progressing while the operator has not reported on this generation yet.
local hs = { status = "Progressing", message = "Waiting for the operator's first report" }
local generation = obj.metadata and obj.metadata.generation
local status = obj.status
if status == nil or status.conditions == nil then
  return hs
end
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "Waiting for the operator to report on generation " .. tostring(generation)
  return hs
end
for _, c in ipairs(status.conditions) do
  if c.type == "Ready" then
    if generation ~= nil and c.observedGeneration ~= nil and c.observedGeneration < generation then
      hs.message = "Waiting for the operator to report on generation " .. tostring(generation)
    elseif c.status == "True" then
      hs.status = "Healthy"
      hs.message = c.message or ""
    elseif c.status == "False" then
      hs.status = "Degraded"
      hs.message = (c.reason or "NotReady") .. ": " .. (c.message or "")
    end
    return hs
  end
end
return hs
