-- wrk workloads for corral and etcd v2, the same requests in each system's API
-- (grown from tools/load/workload.lua):
--   wrk -t1 -c64 -d10s -s http.lua http://127.0.0.1:PORT -- SYSTEM MODE [READ_PCT]
-- SYSTEM: corral | etcd
-- MODE:
--   get     read one node, /bench/k0 (100-byte value)                      (W1, W4 read)
--   set     set a 100-byte value on /bench/k<0..999>, chosen at random      (W2, W4 write)
--   create  sequential create: corral POST /bench/seq/item- sequential,
--           etcd POST /v2/keys/queue (in-order key)                          (W3)
--   mix     READ_PCT% (90) reads of /bench/k<rand>, the rest sets of one     (W5)
-- The nodes must exist first (tools/bench/bench.py creates them). Answers other than
-- 2xx are counted and printed, so a run that fails cannot pass for a fast one.
local system, mode, read_pct = "corral", "get", 90
local value = string.rep("v", 100)
local corral_json = {["Content-Type"] = "application/json"}
local form = {["Content-Type"] = "application/x-www-form-urlencoded"}
local corral_set = '{"data":"' .. value .. '"}'
local corral_create = '{"sequential":true,"data":"' .. value .. '"}'
local etcd_set = "value=" .. value
local threads = {}

setup = function(thread) table.insert(threads, thread) end

init = function(args)
  system = args[1] or "corral"
  mode = args[2] or "get"
  read_pct = tonumber(args[3] or "90")
  bad = 0
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

local function get(k)
  if system == "etcd" then return wrk.format("GET", "/v2/keys/bench/k" .. k) end
  return wrk.format("GET", "/v1/znodes/bench/k" .. k)
end

local function set(k)
  if system == "etcd" then return wrk.format("PUT", "/v2/keys/bench/k" .. k, form, etcd_set) end
  return wrk.format("PUT", "/v1/znodes/bench/k" .. k, corral_json, corral_set)
end

request = function()
  if mode == "set" then
    return set(math.random(0, 999))
  elseif mode == "create" then
    if system == "etcd" then return wrk.format("POST", "/v2/keys/queue", form, etcd_set) end
    return wrk.format("POST", "/v1/znodes/bench/seq/item-", corral_json, corral_create)
  elseif mode == "mix" then
    if math.random(1, 100) <= read_pct then return get(math.random(0, 999)) end
    return set(math.random(0, 999))
  end
  return get(0)
end

response = function(status, headers, body)
  if status >= 300 then bad = bad + 1 end
end

done = function(summary, latency, requests)
  local failures = 0
  for _, t in ipairs(threads) do failures = failures + (t:get("bad") or 0) end
  io.write(string.format(
    "RESULT ops=%d ops_per_s=%.0f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f errors=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000,
    failures + summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout))
end
