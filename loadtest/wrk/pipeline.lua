-- Pipelined GETs, TechEmpower's plaintext shape: each write carries DEPTH requests back to
-- back (default 16), and wrk counts every response. Usage:
--   wrk -t1 -c100 -d8s --latency -s pipeline.lua http://127.0.0.1:PORT/plaintext -- 16
local batch

init = function(args)
  local depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do r[i] = wrk.format(nil, nil, {["Accept"] = "text/plain"}) end
  batch = table.concat(r)
end

request = function() return batch end
