-- W7 load for etcd v2: creates N keys /mem/p<j>/n<i> (1,000 per directory, 100-byte
-- values; a few indexes may be skipped) and stops when N creates are acknowledged.
--   wrk -t1 -c64 -d3600s -s etcdfill.lua http://127.0.0.1:PORT -- N
-- One wrk thread only (the counter is per thread). After the N-th create the
-- connections send cheap GETs until the last create is answered; then wrk exits.
local n, issued, created, failed = 0, 0, 0, 0
local body = "value=" .. string.rep("v", 100)
local form = {["Content-Type"] = "application/x-www-form-urlencoded"}

init = function(args) n = tonumber(args[1]) end

request = function()
  -- wrk drops a few generated requests unsent (one per connection at start), so keep
  -- issuing new keys until n creates have been acknowledged
  if issued < n + 1000 and created < n then
    local i = issued
    issued = issued + 1
    return wrk.format("PUT", string.format("/v2/keys/mem/p%d/n%d?prevExist=false",
                      math.floor(i / 1000), i % 1000), form, body)
  end
  return wrk.format("GET", "/v2/stats/self")
end

response = function(status, headers, body)
  if status == 201 then created = created + 1
  elseif status >= 300 then
    failed = failed + 1
    if failed <= 3 then io.stderr:write("etcdfill: ", status, " ", body, "\n") end
  end
  if created >= n or failed > 100 then
    io.write(string.format("RESULT created=%d failed=%d\n", created, failed))
    io.flush()
    -- wrk's main thread sleeps for the whole -d duration whatever the threads do: leave now
    os.exit(0)
  end
end
