#!/usr/bin/env python3
"""Open N keep-alive connections to a server, send one request on each, keep
them all open and idle, and report the server's resident memory (VmRSS, summed
over the given process ids and their children) before and after.

usage: idle_conns.py --port P --path /x [--header 'Name: value']... --count 10000
                     --pid PID [--pid PID]... [--settle 3] [--close-settle S]
                     [--websocket]
With --websocket each connection sends a WebSocket handshake instead, expects
101 and then stays open (an idle upgraded connection through the proxy).
Prints one JSON object.
"""
import argparse
import asyncio
import json
import os
import resource
import sys
import time


def children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def rss_kib(pids: list[int]) -> int:
    total, seen, todo = 0, set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
        todo += children(pid)
    return total


async def open_one(args, request: bytes, sem: asyncio.Semaphore, conns: list, failures: list):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", args.port), timeout=30
            )
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            status = int(head.split(b" ", 2)[1])
            if args.websocket:
                if status != 101:
                    failures.append(f"HTTP {status}")
                else:
                    conns.append((reader, writer))
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await asyncio.wait_for(reader.readexactly(length), timeout=30)
            if not 200 <= status < 300:
                failures.append(f"HTTP {status}")
            conns.append((reader, writer))
        except Exception as err:  # noqa: BLE001 - counted and reported
            failures.append(type(err).__name__)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--pid", type=int, action="append", required=True)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--parallel", type=int, default=256)
    parser.add_argument("--close-settle", type=float, default=None,
                        help="seconds to wait after closing (default: --settle)")
    parser.add_argument("--websocket", action="store_true")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    headers = "".join(f"{h}\r\n" for h in args.header)
    if args.websocket:
        headers += (
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        )
    else:
        headers += "Connection: keep-alive\r\n"
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n{headers}\r\n"
    ).encode()

    before = rss_kib(args.pid)
    conns: list = []
    failures: list = []
    sem = asyncio.Semaphore(args.parallel)
    started = time.monotonic()
    await asyncio.gather(
        *(open_one(args, request, sem, conns, failures) for _ in range(args.count))
    )
    opened_in = time.monotonic() - started
    await asyncio.sleep(args.settle)
    # Still open? A closed connection reads EOF at once.
    alive = sum(1 for reader, _ in conns if not reader.at_eof())
    during = rss_kib(args.pid)
    for _, writer in conns:
        writer.close()
    await asyncio.sleep(args.settle if args.close_settle is None else args.close_settle)
    after = rss_kib(args.pid)
    reasons: dict = {}
    for failure in failures:
        reasons[failure] = reasons.get(failure, 0) + 1
    print(
        json.dumps(
            {
                "connections": args.count,
                "ok": len(conns),
                "alive_after_settle": alive,
                "failures": reasons,
                "open_seconds": round(opened_in, 2),
                "rss_before_kib": before,
                "rss_idle_kib": during,
                "rss_after_close_kib": after,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
