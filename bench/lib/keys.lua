-- wrk script: one GET per access key, read from BENCH_KEYS_FILE (one key a line).
--   BENCH_KEYS_MODE=seq     walk the keys in order (first pass: every key is a cache miss);
--                           the thread stops once it has had as many answers as keys
--   BENCH_KEYS_MODE=random  pick keys at random (they are cached by then)
--   BENCH_KEYS_LIMIT=N      use only the first N keys of the file
--   BENCH_KEYS_PATH=/bench  request path
local keys, n = {}, 0
local limit = tonumber(os.getenv("BENCH_KEYS_LIMIT") or "0") or 0
for line in io.lines(os.getenv("BENCH_KEYS_FILE")) do
  n = n + 1
  keys[n] = line
  if limit > 0 and n >= limit then break end
end
local mode = os.getenv("BENCH_KEYS_MODE") or "seq"
local path = (os.getenv("BENCH_KEYS_PATH") or "/bench") .. "?accesskey="
local i, answered = 0, 0

function request()
  local k
  if mode == "seq" then
    i = i + 1
    if i > n then i = 1 end
    k = keys[i]
  else
    k = keys[math.random(n)]
  end
  return wrk.format("GET", path .. k)
end

if mode == "seq" then
  function response(status, headers, body)
    answered = answered + 1
    if answered >= n then wrk.thread:stop() end
  end
end
