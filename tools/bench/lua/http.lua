-- wrk workloads for corral and etcd v2, the same requests in each system's API
-- (grown from tools/load/workload.lua):
--   wrk -t1 -c64 -d10s -s http.lua http://127.0.0.1:PORT -- SYSTEM MODE [READ_PCT]
--   wrk -t1 -c64 -d10s -s http.lua http://127.0.0.1:PORT/PATH -- SYSTEM get
-- SYSTEM: corral | etcd
-- MODE:
--   get     read one node, /bench/k0 (100-byte value)                      (W1, W4 read)
--           (with /PATH in the URL: the same GET of PATH every time, see below)
--   set     set a 100-byte value on /bench/k<0..999>, chosen at random      (W2, W4 write)
--   create  sequential create: corral POST /bench/seq/item- sequential,
--           etcd POST /v2/keys/queue (in-order key)                          (W3)
--   mix     READ_PCT% (90) reads of /bench/k<rand>, the rest sets of one     (W5)
-- The nodes must exist first (tools/bench/bench.py creates them). wrk counts answers
-- of status 400 and up (summary.errors.status) and the result line prints them with the
-- socket errors, so a run that fails cannot pass for a fast one. No response() callback:
-- defining one makes wrk hand every answer's headers and body to Lua.
local system, mode, read_pct = "corral", "get", 90
local value = string.rep("v", 100)
local corral_json = {["Content-Type"] = "application/json"}
local form = {["Content-Type"] = "application/x-www-form-urlencoded"}
local corral_set = '{"data":"' .. value .. '"}'
local corral_create = '{"sequential":true,"data":"' .. value .. '"}'
local etcd_set = "value=" .. value

init = function(args)
  system = args[1] or "corral"
  mode = args[2] or "get"
  read_pct = tonumber(args[3] or "90")
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

local function varied_request()
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

-- A URL with a path (bench.py gives one for reads) means: GET that path, the same request
-- every time. Then the script defines no request(), and wrk formats the request once and
-- sends the same bytes on every connection (its "static" request) instead of calling into
-- Lua for each one. Measured: with a Lua call per request and a response() callback, wrk
-- used its whole core at 53-63k reads/s at 64 connections while corral's core was 73-83 %
-- busy (tools/bench/results/2026-12-07-am3), so W1 measured the load generator.
if wrk.path == "/" then request = varied_request end

done = function(summary, latency, requests)
  io.write(string.format(
    "RESULT ops=%d ops_per_s=%.0f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f errors=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout))
end
