-- wrk script for bench/bench_peers.py: POSTs pre-made request bodies read at init.
--
-- Arguments (after wrk's `--`): <body file> <mode> <content type> <api key or -> <run number>.
-- The body file holds one request body with one or more 16-byte markers (STAMP_MARKER) inside
-- JPEG comment segments. Mode "distinct" writes a stamp unique to this run, thread, request
-- and image over each marker, so every request carries new bytes (same pixels) and no cache can
-- answer; mode "repeat" writes one fixed stamp, so every request is the same body (cache hits).
-- done() prints one JSON line the driver reads: counts, latency percentiles (microseconds),
-- errors, and how many responses said X-Cache: hit or miss.

local MARKER = "@@DUPIFYSTAMP@@@"
local counter = 0
local thread_number = 0
local threads = {}
local pieces = {}
local mode = "distinct"
local run = 0
local headers = {}
hits = 0
misses = 0

function setup(thread)
   thread:set("number", thread_number)
   thread_number = thread_number + 1
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local body = file:read("*a")
   file:close()
   mode = args[2]
   run = tonumber(args[5] or "0")
   headers["Content-Type"] = args[3]
   if args[4] ~= "-" then
      headers["Authorization"] = "Bearer " .. args[4]
   end
   local start = 1
   while true do
      local at = string.find(body, MARKER, start, true)
      if at == nil then break end
      table.insert(pieces, string.sub(body, start, at - 1))
      start = at + #MARKER
   end
   table.insert(pieces, string.sub(body, start))
   wrk.method = "POST"
   if mode == "repeat" then  -- one fixed body: made once
      local parts = {}
      for i = 1, #pieces - 1 do
         table.insert(parts, pieces[i])
         table.insert(parts, string.format("r%015d", i))
      end
      table.insert(parts, pieces[#pieces])
      fixed = wrk.format("POST", nil, headers, table.concat(parts))
   end
end

function request()
   if fixed ~= nil then return fixed end
   counter = counter + 1
   local parts = {}
   for i = 1, #pieces - 1 do
      table.insert(parts, pieces[i])
      -- 16 characters: run, thread, image, request.
      table.insert(parts, string.format("%03d%02d%02d%09d", run, number % 100, i % 100, counter))
   end
   table.insert(parts, pieces[#pieces])
   return wrk.format("POST", nil, headers, table.concat(parts))
end

function response(status, response_headers, body)
   local cache = response_headers["X-Cache"] or response_headers["x-cache"]
   if cache == "hit" then hits = hits + 1 elseif cache ~= nil then misses = misses + 1 end
end

function done(summary, latency, requests)
   local total_hits, total_misses = 0, 0
   for _, thread in ipairs(threads) do
      total_hits = total_hits + thread:get("hits")
      total_misses = total_misses + thread:get("misses")
   end
   local errors = summary.errors
   io.write(string.format(
      '\nWRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
      '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
      '"hits": %d, "misses": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      total_hits, total_misses))
end
