-- wrk script: POST /api/notifications with a fresh Idempotency-Key per request.
-- Reads HERALD_TOKEN from the environment (empty for the baselines, which take no token).
local counter = 0
-- LuaJIT's math.random starts from the same seed in every run: without this, each run (a warm-up, then
-- each connection count) would send the same recipients and codes as the one before it.
math.randomseed(os.time() * 1000 + math.floor(os.clock() * 1e6))
local prefix = tostring(os.time()) .. "-" .. tostring(math.random(1, 1e9))
local token = os.getenv("HERALD_TOKEN") or ""
-- A recipient and a code of its own per request, in this run alone: the same code to the same address
-- again within 30 s would end deduplicated (dedupe.auth.window_seconds) instead of being sent.
local function body(n)
  return '{"channel":"email","template_id":"otp_login:v3","locale":"en-GB",' ..
         '"to":{"email":"user' .. prefix .. "-" .. (id or "0") .. "-" .. n .. '@example.com"},' ..
         '"variables":{"code":"' .. string.format("%06d", n % 1000000) .. '","ttl":5},"priority":"high"}'
end

function setup(thread)
  thread:set("id", tostring(math.random(1, 1e9)))
end

request = function()
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. "-" .. (id or "0") .. "-" .. counter,
  }
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("POST", "/api/notifications", headers, body(counter))
end

local statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
  io.write(string.format("P1JSON {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d,\"errors\":%d,",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status))
  io.write("\"non2xx\":" .. tostring(summary.errors.status) .. "}\n")
end
