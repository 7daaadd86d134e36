-- wrk script: POST /auth/login with a JSON body (BENCH_LOGIN_USER / BENCH_LOGIN_PASSWORD).
local user = os.getenv("BENCH_LOGIN_USER") or "bench"
local password = os.getenv("BENCH_LOGIN_PASSWORD") or ""
wrk.method = "POST"
wrk.path = "/auth/login"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"username":"%s","password":"%s"}', user, password)
