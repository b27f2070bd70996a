-- A mix that shows parking: of every 8 requests, 5 /plaintext, 2 /json and 1 /sleep?ms=10.
-- A sleeping request parks its green thread (or goroutine) on a timer while the same cores
-- serve the others; a thread-per-request server would need a thread per sleeper. Usage:
--   wrk -t1 -c100 -d8s --latency -s mix.lua http://127.0.0.1:PORT/ -- 10
local requests, n = {}, 0

init = function(args)
  local sleep_ms = tonumber(args[1]) or 10
  local paths = {"/plaintext", "/json", "/plaintext", "/plaintext", "/json", "/plaintext",
                 "/plaintext", "/sleep?ms=" .. sleep_ms}
  for i, p in ipairs(paths) do requests[i] = wrk.format("GET", p) end
end

request = function()
  n = n % #requests + 1
  return requests[n]
end
