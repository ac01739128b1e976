-- bench/http.sh: a wrk script that checks every response and sums the run
-- up.  Alone it sends wrk's default request (GET of the URL); token.lua
-- loads it and sends the token request instead.
--
--   wrk --latency -t2 -c16 -d30s -s bench/http/status.lua URL
--
-- Counts, per thread, the responses whose status is not 200 (wrk's own
-- "Non-2xx or 3xx" line counts only statuses >= 400) and keeps the first
-- such status and body; at the end prints one line that bench/http.sh
-- reads:
--
--   result requests=N seconds=S rps=R p50_ms=A p99_ms=B non200=N
--          socket_errors=N first_bad=<status>
--
-- Defining response() makes wrk hand every response to Lua, which costs
-- wrk a little CPU per response, the same on every run.

local threads = {}

function setup(thread)
	table.insert(threads, thread)
end

-- per thread: each has its own Lua state
non200 = 0
first_bad = ""

function response(status, headers, body)
	if status ~= 200 then
		if non200 == 0 then
			first_bad = status .. " " .. string.sub(body or "", 1, 200)
		end
		non200 = non200 + 1
	end
end

function done(summary, latency, requests)
	local bad, first = 0, ""
	for _, thread in ipairs(threads) do
		local n = thread:get("non200")
		if n > 0 and first == "" then
			first = thread:get("first_bad")
		end
		bad = bad + n
	end
	local e = summary.errors
	local seconds = summary.duration / 1e6
	io.write(string.format(
		"result requests=%d seconds=%.2f rps=%.1f p50_ms=%.3f p99_ms=%.3f non200=%d socket_errors=%d\n",
		summary.requests, seconds, summary.requests / seconds,
		latency:percentile(50) / 1000, latency:percentile(99) / 1000, bad,
		e.connect + e.read + e.write + e.timeout))
	if first ~= "" then
		io.write("first non-200 response: " .. string.gsub(first, "[\r\n]+", " ") .. "\n")
	end
end
