#!/usr/bin/env python3
"""Runs the shell examples of README.md and docs/*.md against the demo, the
way doc tests keep Rust examples honest.

Every ```sh block is run, in the order of its page, one bash process per page
(so a page's set-up block serves the blocks after it), under
`set -euo pipefail`: a command that fails, or a variable a block uses but
never sets, fails the run. A block is left out when the line right before
its fence is

    <!-- doc-examples: skip: <why> -->

(a block that needs a real identity provider, Kubernetes, pebble, or a
config the demo does not have); the skipped blocks are counted and listed.
Transcripts (prompts and output) are fenced as ```console, not ```sh.

The demo (scripts/demo.sh) is started first, on a fresh store, and stopped
at the end. Blocks call the binary as ./target/release/authgate, as a
reader who ran the demo would; that path is replaced by the binary the demo
runs (with AUTHGATE_DEMO_PROFILE=debug, the debug one, which is what CI uses
after `cargo test` has built it).

    python3 scripts/doc_examples.py            # release build, like the demo
    AUTHGATE_DEMO_PROFILE=debug python3 scripts/doc_examples.py

Needs the demo's ports (127.0.0.1:8080 and :9000) free and no demo store
(data/authgate.db) yet: the examples create users and keys in it.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
SKIP = re.compile(r"^<!-- doc-examples: skip: (.+?) -->$")
GATEWAY = ("127.0.0.1", 8080)
UPSTREAM = ("127.0.0.1", 9000)
STARTUP_TIMEOUT = 30 * 60  # the demo builds first
BLOCK_TIMEOUT = 300  # one page's blocks


def blocks(page):
    """(line, text, skip reason or None) of each ```sh block of `page`."""
    lines = page.read_text().split("\n")
    found = []
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if fence.startswith("```"):
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if fence == "```sh":
                skip = SKIP.match(lines[i - 1].strip()) if i > 0 else None
                text = "\n".join(lines[i + 1 : end])
                found.append((i + 1, text, skip.group(1) if skip else None))
            i = end + 1
        else:
            if SKIP.match(lines[i].strip()) and not (
                i + 1 < len(lines) and lines[i + 1].strip() == "```sh"
            ):
                sys.exit(f"{page.relative_to(ROOT)}:{i + 1}: a skip marker not right before a ```sh fence")
            i += 1
    return found


def port_open(addr):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(addr) == 0


def healthy():
    try:
        with urllib.request.urlopen("http://%s:%d/healthz" % GATEWAY, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def main():
    os.chdir(ROOT)
    profile = os.environ.get("AUTHGATE_DEMO_PROFILE", "release")
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = target / ("release" if profile == "release" else "debug") / "authgate"

    pages = [(page, blocks(page)) for page in PAGES]
    to_run = sum(1 for _, found in pages for _, _, skip in found if skip is None)
    skipped = [(page, line, skip) for page, found in pages for line, _, skip in found if skip]

    for addr in (GATEWAY, UPSTREAM):
        if port_open(addr):
            sys.exit("doc_examples: %s:%d is in use (a demo running?)" % addr)
    if (ROOT / "data" / "authgate.db").exists():
        sys.exit(
            "doc_examples: data/authgate.db exists; the examples need a fresh demo store "
            "(move data/ away; the demo makes a new one)"
        )

    log = tempfile.NamedTemporaryFile(prefix="authgate-demo-", suffix=".log", delete=False)
    print(f"doc_examples: starting the demo ({profile}); its output: {log.name}", flush=True)
    demo = subprocess.Popen(
        ["bash", "scripts/demo.sh"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    failed = None
    ran = 0
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not healthy():
            if demo.poll() is not None or time.monotonic() > deadline:
                log.flush()
                sys.stdout.write(Path(log.name).read_text()[-4000:])
                sys.exit("doc_examples: the demo did not start")
            time.sleep(0.5)

        for page, found in pages:
            runnable = [(line, text) for line, text, skip in found if skip is None]
            if not runnable:
                continue
            name = page.relative_to(ROOT)
            script = ["set -euo pipefail"]
            for line, text in runnable:
                text = text.replace("./target/release/authgate", '"$DOC_EXAMPLES_AUTHGATE"')
                script.append(f"printf '\\n--- %s:%d\\n' {str(name)!r} {line}")
                script.append(text)
            env = dict(os.environ, DOC_EXAMPLES_AUTHGATE=str(binary))
            started = time.monotonic()
            result = subprocess.run(
                ["bash", "-c", "\n".join(script)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=BLOCK_TIMEOUT,
            )
            took = time.monotonic() - started
            if result.returncode != 0:
                sys.stdout.write(result.stdout)
                last = re.findall(r"^--- (.+:\d+)$", result.stdout, re.M)
                failed = f"{name}: exit status {result.returncode} in the block at {last[-1] if last else '?'}"
                break
            ran += len(runnable)
            print(f"doc_examples: {name}: {len(runnable)} blocks ok ({took:.1f} s)", flush=True)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)
            try:
                demo.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()

    for page, line, why in skipped:
        print(f"doc_examples: skipped {page.relative_to(ROOT)}:{line}: {why}")
    if failed:
        sys.exit(f"doc_examples: FAILED: {failed}")
    print(f"doc_examples: {ran} of {to_run} runnable blocks passed, {len(skipped)} skipped")


if __name__ == "__main__":
    main()
