-- static-304 (issue 16): counts the status of every response with wrk's response() hook, so
-- the report can tell 304s from 200s (wrk itself counts only statuses above 399). The
-- If-None-Match header comes from the command line (-H), one per server. report.lua adds
-- the counts to its LOADTEST line as "statuses". The hook costs wrk about 15% of its
-- requests/s, so compare.py runs it in the (unmeasured) warm-up only.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function loadtest_extra()
  local total, parts = {}, {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses") or {}) do
      total[s] = (total[s] or 0) + n
    end
  end
  for s, n in pairs(total) do
    parts[#parts + 1] = string.format('"%d":%d', s, n)
  end
  return ',"statuses":{' .. table.concat(parts, ",") .. '}'
end
