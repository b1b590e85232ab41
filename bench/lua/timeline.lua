-- wrk script for bench/run: the summary of summary.lua, plus a timeline: for
-- each tenth of a second of CLOCK_MONOTONIC (the clock Python's
-- time.monotonic() reads), how many answers arrived and a histogram of their
-- latencies (buckets 10% wide), and how many were not 2xx/3xx.
--
-- Run it with as many threads as connections (-tN -cN): each wrk thread then
-- has one connection, so request() and response() alternate and the time
-- between them is the latency of one request.

-- bench_summary() and the done() this file replaces, from beside this file.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "summary.lua")

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

local prepared, started
local log_step = math.log(1.1)
latencies = {} -- slot * 1000 + bucket -> answers (a slot: a tenth of a second)
bad = {}       -- slot -> answers that were not 2xx/3xx

function init(args) prepared = wrk.format() end

function request()
  started = now()
  return prepared
end

function response(status, headers, body)
  local t = now()
  local us = (t - started) * 1e6
  if us < 1 then us = 1 end
  local slot = math.floor(t * 10)
  local key = slot * 1000 + math.floor(math.log(us) / log_step)
  latencies[key] = (latencies[key] or 0) + 1
  if status > 399 then
    local s = slot
    bad[s] = (bad[s] or 0) + 1
  end
end

function done(summary, latency, requests)
  local merged, merged_bad = {}, {}
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("latencies") or {}) do merged[k] = (merged[k] or 0) + v end
    for k, v in pairs(thread:get("bad") or {}) do merged_bad[k] = (merged_bad[k] or 0) + v end
  end
  for k, v in pairs(merged) do
    io.write(string.format("BENCH-TL %d %d %d\n", math.floor(k / 1000), k % 1000, v))
  end
  for k, v in pairs(merged_bad) do io.write(string.format("BENCH-BAD %d %d\n", k, v)) end
  bench_summary(summary, latency)
end
