-- wrk workloads for corral, chosen by the first script argument:
--   wrk -t2 -c32 -d10s -s workload.lua http://127.0.0.1:8181 -- get|set|create
-- get:    read /bench/k0 (100-byte value)
-- set:    set a 100-byte value on /bench/k<0..999>, chosen at random
-- create: sequential creates under /bench/seq (ZooKeeper's queue pattern)
-- The nodes must exist first (tools/loadrun.sh creates them). Answers other than 2xx
-- are counted and printed, so a run that fails cannot pass for a fast one.
local mode = "get"
local value = string.rep("v", 100)
local set_body = '{"data":"' .. value .. '"}'
local create_body = '{"sequential":true,"data":"' .. value .. '"}'
local json = {["Content-Type"] = "application/json"}
local threads = {}

setup = function(thread) table.insert(threads, thread) end

init = function(args)
  mode = args[1] or "get"
  bad = 0
end

request = function()
  if mode == "set" then
    return wrk.format("PUT", "/v1/znodes/bench/k" .. math.random(0, 999), json, set_body)
  elseif mode == "create" then
    return wrk.format("POST", "/v1/znodes/bench/seq/item-", json, create_body)
  end
  return wrk.format("GET", "/v1/znodes/bench/k0")
end

response = function(status, headers, body)
  if status >= 300 then bad = bad + 1 end
end

done = function(summary, latency, requests)
  local failures = 0
  for _, t in ipairs(threads) do failures = failures + (t:get("bad") or 0) end
  io.write(string.format("RESULT requests_per_s=%.0f p50_ms=%.3f p99_ms=%.3f non2xx=%d\n",
                         summary.requests / (summary.duration / 1e6),
                         latency:percentile(50) / 1000, latency:percentile(99) / 1000,
                         failures))
end
