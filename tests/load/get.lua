-- wrk script: GETs the URL and counts answers outside 200..299, printing
-- "non2xx N" at the end (see post.lua).
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
