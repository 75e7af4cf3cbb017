-- wrk script: POST bench/contact.json as application/json and count responses.
--
-- Usage: wrk -t2 -c64 -d10s --latency -s bench/post.lua URL -- bench/contact.json
--
-- Each wrk thread has its own Lua state, so the counters below are per thread.
-- setup(thread) runs in the main state and keeps a handle on every thread;
-- done() (also in the main state) sums them with thread:get().  It prints one
-- line that bench/run.py parses:
--   BENCH_COUNTS responses=<n> acked_2xx=<n> non_2xx=<n>

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   responses = 0
   acked_2xx = 0
   local path = args[1] or "bench/contact.json"
   local f = assert(io.open(path, "rb"), "cannot open body file " .. path)
   local body = f:read("*a")
   f:close()
   wrk.method = "POST"
   wrk.body = body
   wrk.headers["Content-Type"] = "application/json"
end

function response(status, headers, body)
   responses = responses + 1
   if status >= 200 and status < 300 then
      acked_2xx = acked_2xx + 1
   end
end

function done(summary, latency, requests)
   local total, acked = 0, 0
   for _, t in ipairs(threads) do
      total = total + (t:get("responses") or 0)
      acked = acked + (t:get("acked_2xx") or 0)
   end
   io.write(string.format("BENCH_COUNTS responses=%d acked_2xx=%d non_2xx=%d\n",
                          total, acked, total - acked))
end
