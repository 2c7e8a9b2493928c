-- The application mix of the benchmark, in a fixed interleaved order of 20 requests:
--   8 x /master (40%), 6 x /replica with min_lsn and lag limits (30%), 2 x /sync_by_time (10%),
--   2 x /most_sync_by_bytes (10%), 1 x /sync_by_time_and_bytes (5%), 1 x /hosts (5%).
-- Usage: wrk ... -s mix.lua http://127.0.0.1:PORT -- MIN_LSN
local requests = {}
local i = 0

function init(args)
  local lsn = args[1] or "0/0"
  local replica = "/replica?min_lsn=" .. lsn .. "&lag_ms=1000&lag_bytes=1000000"
  local order = {
    "/master", replica, "/master", "/sync_by_time", replica,
    "/master", "/most_sync_by_bytes", "/master", replica, "/sync_by_time_and_bytes",
    "/master", replica, "/master", "/sync_by_time", "/master",
    replica, "/most_sync_by_bytes", "/master", replica, "/hosts",
  }
  for k, path in ipairs(order) do
    requests[k] = wrk.format("GET", path)
  end
end

function request()
  i = i % #requests + 1
  return requests[i]
end
