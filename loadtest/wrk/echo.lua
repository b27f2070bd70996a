-- POST /echo with bodies of 64 B, 1 KiB and 4 KiB in turn (Content-Length framing); the
-- server must read each body and send it back. Usage:
--   wrk -t1 -c100 -d8s --latency -s echo.lua http://127.0.0.1:PORT/echo
local requests, n = {}, 0

init = function(args)
  local sizes = {64, 1024, 4096}
  for i, size in ipairs(sizes) do
    local body = string.rep("0123456789abcdef", size / 16)
    requests[i] = wrk.format("POST", "/echo",
      {["Content-Type"] = "application/octet-stream"}, body)
  end
end

request = function()
  n = n % #requests + 1
  return requests[n]
end
