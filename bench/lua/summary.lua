-- wrk script for bench/run: prints one line "BENCH-SUMMARY {json}" at the end
-- with the totals, the socket errors and the latency percentiles (microseconds).
-- It defines no request() or response(), so wrk runs at full speed.

-- timeline.lua prints the same line: it loads this file and calls bench_summary.
function bench_summary(summary, latency)
  local e = summary.errors
  io.write(string.format(
    'BENCH-SUMMARY {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"non2xx":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end

function done(summary, latency, requests)
  bench_summary(summary, latency)
end
