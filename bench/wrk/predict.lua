-- wrk script for `make bench`: POST a body (a PNG to /predict, or a v2
-- inference request to /v2/models/NAME/infer), and one JSON line of the
-- results at the end (latencies in microseconds).
--
--   PNG_BODY=/tmp/d.png wrk -t2 -c64 -d10s -s bench/wrk/predict.lua http://127.0.0.1:8080/predict
--   PNG_BODY=/tmp/v2.json wrk ... http://127.0.0.1:8080/v2/models/lenet/infer
--
-- A file whose name ends in .json is sent as application/json.
--
-- The body is read once here: every request carries the same bytes, so the
-- figures measure the server, not the client.
local path = os.getenv("PNG_BODY")
if not path then
   io.stderr:write("predict.lua: set PNG_BODY to the file to post\n")
   os.exit(2)
end
local f = io.open(path, "rb")
if not f then
   io.stderr:write("predict.lua: cannot open " .. path .. "\n")
   os.exit(2)
end
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
if path:sub(-5) == ".json" then
   wrk.headers["Content-Type"] = "application/json"
else
   wrk.headers["Content-Type"] = "image/png"
end

function done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      '{"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_us":%d,"p90_us":%d,' ..
      '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"errors_connect":%d,' ..
      '"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d}\n',
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
