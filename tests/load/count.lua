-- wrk script: sends the URL given on the command line, as a POST of the
-- file $BODY with Content-Type $CTYPE (default image/png) when BODY is
-- set, else as a GET, and counts answers outside 200..299 (wrk's own
-- counter lets 3xx pass). Prints "non2xx N" at the end.
local path = os.getenv("BODY")
if path and path ~= "" then
    local f = assert(io.open(path, "rb"))
    wrk.method = "POST"
    wrk.body = f:read("*a")
    f:close()
    wrk.headers["Content-Type"] = os.getenv("CTYPE") or "image/png"
end

local threads = {}
function setup(thread)
    table.insert(threads, thread)
end
function init(args)
    bad = 0
end
function response(status, headers, body)
    if status < 200 or status > 299 then
        bad = bad + 1
    end
end
function done(summary, latency, requests)
    local n = 0
    for _, t in ipairs(threads) do
        n = n + t:get("bad")
    end
    io.write(string.format("non2xx %d\n", n))
end
