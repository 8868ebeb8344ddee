-- wrk script: GET paths picked at random from a list, optionally with a Range header.
--
--   wrk ... -s paths.lua -- <paths file> <mode>
--
-- paths file: one "<path> <size> [<range>]" per line.  mode: "full" (plain GET) or "range":
-- the line's own range ("bytes=a-b", e.g. an EXT-X-BYTERANGE sub-range), else 4 random single
-- ranges inside the file.  done() prints one JSON line
-- starting with "WRKJSON " so the caller does not parse wrk's human-readable text.

local requests = {}

function init(args)
  local file, mode = args[1], args[2] or "full"
  -- per-thread seed: threads must not walk the same sequence
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "1", 16) % 100000)
  for line in io.lines(file) do
    local path, size, rng = line:match("^(%S+)%s+(%d+)%s*(%S*)")
    if path then
      size = tonumber(size)
      if mode == "range" and rng ~= "" then
        requests[#requests + 1] = wrk.format("GET", path, { ["Range"] = rng })
      elseif mode == "range" and size > 1 then
        for _ = 1, 4 do
          local a = math.random(0, size - 1)
          local b = math.min(size - 1, a + math.random(0, 65535))
          requests[#requests + 1] = wrk.format("GET", path, { ["Range"] = "bytes=" .. a .. "-" .. b })
        end
      else
        requests[#requests + 1] = wrk.format("GET", path)
      end
    end
  end
  if #requests == 0 then
    error("no paths in " .. file)
  end
end

function request()
  return requests[math.random(1, #requests)]
end

function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
