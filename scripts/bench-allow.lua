-- wrk script for scripts/bench-server.sh: POST a small JSON body.
wrk.method = "POST"
wrk.body = '{"key":"k"}'
wrk.headers["Content-Type"] = "application/json"
