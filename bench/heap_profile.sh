#!/usr/bin/env bash
# Where the heap of idle connections goes: runs bench/idle_connections.sh
# against authgate under valgrind's massif and prints the allocation sites
# of the idle plateau (the last snapshot near the peak), with bytes per
# connection.
#
#   bash bench/heap_profile.sh                  # 1,000 idle HTTP/1 connections
#   HEAP_COUNT=500 HEAP_KIND=ws bash bench/heap_profile.sh
#   HEAP_BIN=path/to/authgate bash bench/heap_profile.sh   # a system-allocator build already made
#
# massif sees malloc, so the binary is built with the system allocator
# (`--features system-allocator`, in target/heap-profile so the release
# build is left alone). RSS figures come from bench/idle_connections.sh on
# the shipped (jemalloc) binary; this script says what the bytes are.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNT=${HEAP_COUNT:-1000}
KIND=${HEAP_KIND:-http}
TOP=${HEAP_TOP:-12}

command -v valgrind >/dev/null || { echo "missing valgrind (apt-get install -y valgrind)" >&2; exit 1; }
BIN=${HEAP_BIN:-}
if [ -z "$BIN" ]; then
    (cd "$ROOT" && CARGO_TARGET_DIR=$ROOT/target/heap-profile \
        cargo build --release --locked --features system-allocator --bin authgate >&2)
    BIN=$ROOT/target/heap-profile/release/authgate
fi

W=$(mktemp -d /tmp/authgate-heap.XXXXXX)
trap 'rm -rf "$W"' EXIT
# Only `serve` runs under massif; the CLI calls that set up users run plainly.
cat >"$W/authgate" <<WRAP
#!/bin/sh
if [ "\$1" = serve ]; then
    exec valgrind --tool=massif --depth=30 --threshold=0.5 --detailed-freq=1 --massif-out-file=$W/massif.out "$BIN" "\$@"
fi
exec "$BIN" "\$@"
WRAP
chmod +x "$W/authgate"

AUTHGATE_BIN=$W/authgate IDLE_COUNT=$COUNT IDLE_TARGETS=authgate IDLE_KINDS=$KIND IDLE_SETTLE=5 \
    bash "$ROOT/bench/idle_connections.sh" >&2

python3 - "$W/massif.out" "$COUNT" "$TOP" <<'PY'
import re, sys
path, count, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
text = open(path).read()
snapshots = text.split("snapshot=")[1:]
def heap_of(snapshot):
    return int(re.search(r"mem_heap_B=(\d+)", snapshot).group(1))
# The idle plateau, not the peak: the peak can fall while connections are
# still opening, with requests in flight. Take the last snapshot within 10%
# of the peak, just before the connections close.
top_heap = max(heap_of(s) for s in snapshots)
peak = [s for s in snapshots if heap_of(s) >= 0.9 * top_heap and "heap_tree=empty" not in s][-1]
heap = heap_of(peak)
print(f"heap {heap / 1024 / 1024:.1f} MiB with {count} idle connections (peak {top_heap / 1024 / 1024:.1f} MiB)")
# The heap tree: "<indent>n<K>: <bytes> <address>: <function>". For each
# direct child of the root, name the first frame that is not an allocator
# or a container growing (the code that asked for the bytes).
lines = [l for l in peak.splitlines() if re.match(r"^ *n\d+: \d+ ", l)]
GENERIC = re.compile(r"alloc::|raw_vec|bytes_mut|__rust|malloc|calloc|realloc|::reserve|try_grow|finish_grow")
sites = []
for i, line in enumerate(lines):
    if not line.startswith(" n"):
        continue
    size = int(re.match(r"^ *n\d+: (\d+)", line).group(1))
    depth, frames, j = 1, [], i
    while j < len(lines):
        l = lines[j]
        d = len(l) - len(l.lstrip(" "))
        if j > i and d <= 1:
            break
        if d == depth:
            frames.append(re.sub(r"^ *n\d+: \d+ (0x[0-9A-F]+: )?", "", l))
            depth += 1
        j += 1
    named = [f for f in frames if not GENERIC.search(f)] or frames or [line]
    sites.append((size, named[0]))
sites.sort(reverse=True)
print(f"{'bytes':>12}  {'per conn':>9}  allocated by")
for size, site in sites[:top]:
    print(f"{size:>12,}  {size / count:>9,.0f}  {site[:120]}")
PY
