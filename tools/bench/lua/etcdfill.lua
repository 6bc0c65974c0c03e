-- W7 load for etcd v2: creates N keys /mem/p<j>/n<i> (1,000 per directory, 100-byte
-- values) and stops when all N are acknowledged.
--   wrk -t1 -c64 -d3600s -s etcdfill.lua http://127.0.0.1:PORT -- N
-- One wrk thread only (the counter is per thread). After the N-th create the
-- connections send cheap GETs until the last create is answered.
local n, issued, created, failed = 0, 0, 0, 0
local body = "value=" .. string.rep("v", 100)
local form = {["Content-Type"] = "application/x-www-form-urlencoded"}

init = function(args) n = tonumber(args[1]) end

request = function()
  if issued < n then
    local i = issued
    issued = issued + 1
    return wrk.format("PUT", string.format("/v2/keys/mem/p%d/n%d?prevExist=false",
                      math.floor(i / 1000), i % 1000), form, body)
  end
  return wrk.format("GET", "/v2/keys/mem/p0/n0")
end

response = function(status, headers, body)
  if status == 201 then created = created + 1
  elseif status >= 300 then failed = failed + 1 end
  if created + failed >= n then
    io.write(string.format("RESULT created=%d failed=%d\n", created, failed))
    wrk.thread:stop()
  end
end
