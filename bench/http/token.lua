-- bench/http.sh: a wrk script of the client-credentials grant,
-- client_secret_basic: POST grant_type=client_credentials to the URL with
-- the Authorization header taken from the environment (not the command
-- line, which other users can read), every response checked by status.lua.
--
--   BENCH_AUTHORIZATION="Basic <base64 of client_id:client_secret>" \
--   wrk --latency -t2 -c16 -d30s -s bench/http/token.lua URL

-- status.lua sits beside this file
local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(dir .. "status.lua")

function init(args)
	local authorization = os.getenv("BENCH_AUTHORIZATION")
	if authorization == nil or authorization == "" then
		io.stderr:write("token.lua: BENCH_AUTHORIZATION is not set\n")
		os.exit(2)
	end
	wrk.method = "POST"
	wrk.body = "grant_type=client_credentials"
	wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
	wrk.headers["Authorization"] = authorization
end
