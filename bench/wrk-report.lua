-- bench/run's wrk reporter. At saturation there are no per-request hooks, so
-- wrk keeps its static request fast path; at the end, one JSON line with the
-- exact counts and latency percentiles (microseconds).
--
-- Paced load: with WRK_DELAY_MS set, each connection waits that long after
-- each answer before sending its next request (wrk's delay() hook: one Lua
-- call per request, which is fine below saturation).
local pace = tonumber(os.getenv("WRK_DELAY_MS") or "")
if pace then
  delay = function()
    return pace
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"lat_mean_us":%.1f,"lat_max_us":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"p999_us":%d,"delay_ms":%s}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), pace and tostring(pace) or "null"))
end
