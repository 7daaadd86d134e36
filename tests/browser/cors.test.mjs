// CORS per route in a real Chromium: a page on a second origin calls an
// API behind the gateway with a Bearer token. The browser sends a preflight
// (the Authorization header is not a simple one), the gateway answers it,
// and the page reads the upstream's answer, and the gateway's own 401. A
// page on an origin that `[route.cors]` does not list cannot read anything
// (its preflight is refused), and its call never reaches the upstream.
//
// Environment: AUTHGATE_BIN, CHROMIUM_BIN (as admin-page.test.mjs).

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.resolve(here, process.env.AUTHGATE_BIN ?? "../../target/debug/authgate");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const STARTUP_TIMEOUT_MS = 90_000;

/** A server on 127.0.0.1: `handler`, its base URL. */
function listen(handler) {
  const server = http.createServer(handler);
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      resolve({ server, url: `http://127.0.0.1:${server.address().port}` });
    });
  });
}

/** The API behind the gateway: records what reaches it. */
function startUpstream() {
  const seen = [];
  return listen((req, res) => {
    seen.push({ method: req.method, url: req.url, headers: { ...req.headers } });
    req.resume();
    req.on("end", () => {
      // An upstream's own permissive CORS header: the route's policy
      // replaces it.
      res.writeHead(200, {
        "Content-Type": "application/json",
        "Access-Control-Allow-Origin": "*",
      });
      res.end(JSON.stringify({ upstream: true, user: req.headers["x-auth-user"] ?? null }));
    });
  }).then((up) => ({ ...up, seen }));
}

/** A page origin: serves one empty HTML page. */
function startPageOrigin() {
  return listen((req, res) => {
    res.writeHead(200, { "Content-Type": "text/html" });
    res.end("<!doctype html><title>app</title><p>app</p>");
  });
}

function cli(config, args, input) {
  const run = spawnSync(BIN, ["--config", config, ...args], {
    input,
    encoding: "utf8",
    timeout: 60_000,
  });
  if (run.status !== 0) {
    throw new Error(`authgate ${args.join(" ")} failed (${run.status}): ${run.stderr}`);
  }
  return run.stdout;
}

function startGateway(config) {
  const child = spawn(BIN, ["serve", "--config", config], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, AUTHGATE_LOG: "info" },
  });
  let logs = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`gateway did not start in time; logs:\n${logs}`));
    }, STARTUP_TIMEOUT_MS);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      logs += chunk;
      const port = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(logs)?.[1];
      if (port) {
        clearTimeout(timer);
        resolve({ child, base: `http://127.0.0.1:${port}`, logs: () => logs });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited (${code}) before listening; logs:\n${logs}`));
    });
  });
}

let dir;
let upstream;
let allowedPage;
let otherPage;
let gateway;
let browser;
let token;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "authgate-cors-"));
  upstream = await startUpstream();
  allowedPage = await startPageOrigin();
  otherPage = await startPageOrigin();
  const secret = path.join(dir, "jwt.secret");
  writeFileSync(secret, `${randomBytes(48).toString("hex")}\n`, { mode: 0o600 });
  const config = path.join(dir, "authgate.toml");
  writeFileSync(
    config,
    `[server]
listen = "127.0.0.1:0"
shutdown_grace = 1

[store]
url = "sqlite://${path.join(dir, "authgate.db")}"

[jwt]
secret_file = "${secret}"

[[route]]
path_prefix = "/api"
upstream = "${upstream.url}"
methods = ["GET", "POST"]

[route.cors]
allow_origins = ["${allowedPage.url}"]
allow_methods = ["GET", "POST"]
allow_headers = ["Authorization", "Content-Type"]
allow_credentials = true
max_age = 600
`,
  );
  cli(config, ["user", "add", "carol", "--password-stdin"], "cors-password-1234\n");
  token = cli(config, ["token", "issue", "--user", "carol"]).trim();
  gateway = await startGateway(config);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
});

after(async () => {
  await browser?.close();
  gateway?.child.kill("SIGTERM");
  for (const s of [upstream, allowedPage, otherPage]) {
    s?.server.close();
  }
  if (dir) {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Opens `origin`'s page and runs a fetch to the gateway from it. */
async function fetchFrom(origin, apiPath, bearer, method = "GET") {
  const page = await browser.newPage();
  try {
    await page.goto(`${origin}/`);
    return await page.evaluate(
      async ({ url, bearer, method }) => {
        try {
          const response = await fetch(url, {
            method,
            credentials: "include",
            headers: {
              Authorization: `Bearer ${bearer}`,
              "Content-Type": "application/json",
            },
            body: method === "POST" ? "{}" : undefined,
          });
          return { status: response.status, body: await response.json() };
        } catch (err) {
          return { error: String(err) };
        }
      },
      { url: `${gateway.base}${apiPath}`, bearer, method },
    );
  } finally {
    await page.close();
  }
}

test("the allowed origin calls the API with a Bearer token", async () => {
  const result = await fetchFrom(allowedPage.url, "/api/orders", token);
  assert.equal(result.error, undefined, JSON.stringify(result));
  assert.equal(result.status, 200);
  assert.deepEqual(result.body, { upstream: true, user: "carol" });
  const preflights = upstream.seen.filter((r) => r.method === "OPTIONS");
  assert.equal(preflights.length, 0, "the gateway answers preflights itself");
  const post = await fetchFrom(allowedPage.url, "/api/orders", token, "POST");
  assert.equal(post.status, 200, JSON.stringify(post));
});

test("the allowed origin reads the gateway's own 401", async () => {
  const result = await fetchFrom(allowedPage.url, "/api/orders", "not-a-token");
  assert.equal(result.status, 401, JSON.stringify(result));
  assert.equal(result.body.error.reason, "INVALID_CREDENTIALS");
});

test("another origin cannot call the API", async () => {
  const before = upstream.seen.length;
  const result = await fetchFrom(otherPage.url, "/api/orders", token);
  assert.match(result.error ?? "", /Failed to fetch/, JSON.stringify(result));
  assert.equal(upstream.seen.length, before, "the refused call reached the upstream");
  // The refusal was the gateway's: its preflight got 403 (the access line
  // may follow the answer by a moment).
  for (let i = 0; i < 50 && !/CORS_ORIGIN_NOT_ALLOWED/.test(gateway.logs()); i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.match(gateway.logs(), /http\.method=OPTIONS[^\n]*http\.status=403[^\n]*CORS_ORIGIN_NOT_ALLOWED/);
});
