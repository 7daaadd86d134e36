// End-to-end sign-in through an external OpenID Provider in a real
// Chromium: the admin page offers "Sign in with corp", the browser signs in
// at the real oidc-provider (tests/oidc/provider.mjs, installed by
// tests/upstreams/setup.sh), lands back on the admin page as that user and
// creates an access key, which then works from a plain HTTP client.
//
// Environment: AUTHGATE_BIN, CHROMIUM_BIN (as admin-page.test.mjs),
// AUTHGATE_UPSTREAMS (default ../../target/upstreams).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const BIN = path.resolve(here, process.env.AUTHGATE_BIN ?? "../../target/debug/authgate");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const UPSTREAMS = process.env.AUTHGATE_UPSTREAMS ?? path.join(root, "target/upstreams");
const STARTUP_TIMEOUT_MS = 90_000;
const STEP_TIMEOUT_MS = 15_000;
const CLIENT_SECRET = "browser-client-secret-0123456789abcdef";

function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Runs `command args`, resolving with {child, match} once stdout or stderr matches `pattern`. */
function startProcess(command, args, pattern) {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  let logs = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${command} did not start; logs:\n${logs}`));
    }, STARTUP_TIMEOUT_MS);
    const onData = (chunk) => {
      logs += chunk;
      const match = pattern.exec(logs);
      if (match) {
        clearTimeout(timer);
        resolve({ child, match, logs: () => logs });
      }
    };
    child.stdout.setEncoding("utf8").on("data", onData);
    child.stderr.setEncoding("utf8").on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${command} exited (${code}); logs:\n${logs}`));
    });
  });
}

function httpGet(url) {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode));
      })
      .on("error", reject);
  });
}

let dir;
let upstream;
let seen = [];
let provider;
let gateway;
let browser;
let base;

before(async () => {
  const install = path.join(UPSTREAMS, "oidc");
  assert.ok(
    existsSync(path.join(install, "node_modules/oidc-provider")),
    `oidc-provider is not installed in ${install}: run bash tests/upstreams/setup.sh`,
  );
  dir = mkdtempSync(path.join(tmpdir(), "authgate-oidc-browser-"));
  upstream = http.createServer((req, res) => {
    seen.push({ url: req.url, headers: { ...req.headers } });
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end("upstream");
  });
  await new Promise((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  const upstreamUrl = `http://127.0.0.1:${upstream.address().port}`;

  const gatewayPort = await freePort();
  const script = path.join(install, "provider.mjs");
  const staging = path.join(install, `provider.browser-${process.pid}.tmp`);
  copyFileSync(path.join(root, "tests/oidc/provider.mjs"), staging);
  renameSync(staging, script);
  writeFileSync(path.join(dir, "accounts.json"), JSON.stringify({ erin: { groups: ["dev"] } }));
  writeFileSync(
    path.join(dir, "provider.json"),
    JSON.stringify({
      port: 0,
      kid: "browser-key",
      accounts_file: path.join(dir, "accounts.json"),
      clients: [
        {
          client_id: "authgate",
          client_secret: CLIENT_SECRET,
          redirect_uris: [`http://127.0.0.1:${gatewayPort}/auth/oidc/corp/callback`],
          response_types: ["code"],
          grant_types: ["authorization_code"],
        },
      ],
    }),
  );
  provider = await startProcess("node", [script, path.join(dir, "provider.json")], /PORT (\d+)/);
  const issuer = `http://127.0.0.1:${provider.match[1]}`;

  writeFileSync(path.join(dir, "jwt.secret"), `${randomBytes(48).toString("hex")}\n`);
  writeFileSync(path.join(dir, "client.secret"), `${CLIENT_SECRET}\n`);
  const config = path.join(dir, "authgate.toml");
  writeFileSync(
    config,
    `[server]
listen = "127.0.0.1:${gatewayPort}"
shutdown_grace = 5

[store]
url = "sqlite://${path.join(dir, "authgate.db")}"

[jwt]
secret_file = "${path.join(dir, "jwt.secret")}"
ttl = 3600

[[route]]
path_prefix = "/"
upstream = "${upstreamUrl}"
login = "corp"

[[oidc]]
name = "corp"
issuer = "${issuer}"
client_id = "authgate"
client_secret_file = "${path.join(dir, "client.secret")}"
redirect_url = "http://127.0.0.1:${gatewayPort}/auth/oidc/corp/callback"
roles_claim = "groups"
`,
  );
  gateway = await startProcess(BIN, ["serve", "--config", config], /listening on http:\/\/127\.0\.0\.1:(\d+)/);
  base = `http://127.0.0.1:${gatewayPort}`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  });
});

after(async () => {
  await browser?.close();
  for (const proc of [gateway, provider]) {
    proc?.child.kill("SIGTERM");
  }
  upstream?.close();
  if (dir) {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("sign in at the provider, land on the admin page, create a key", async () => {
  const context = await browser.newContext({ locale: "en-US", timezoneId: "UTC" });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));

  await page.goto(`${base}/_authgate/`);
  const signInWith = page.getByRole("link", { name: "Sign in with corp" });
  await signInWith.waitFor({ state: "visible", timeout: STEP_TIMEOUT_MS });
  await signInWith.click();

  // The provider's own sign-in form.
  await page.waitForURL(/\/interaction\//, { timeout: STEP_TIMEOUT_MS });
  await page.getByLabel("User").fill("erin");
  await page.getByRole("button", { name: "Sign in" }).click();

  // Back on the admin page, signed in as erin.
  await page.waitForURL(`${base}/_authgate/`, { timeout: STEP_TIMEOUT_MS });
  await page
    .getByRole("heading", { name: "Access keys" })
    .waitFor({ state: "visible", timeout: STEP_TIMEOUT_MS });
  assert.equal(await page.locator("#account-name").textContent(), "erin");

  await page.getByRole("button", { name: "Create key" }).click();
  const dialog = page.locator("#create-dialog");
  await dialog.waitFor({ state: "visible", timeout: STEP_TIMEOUT_MS });
  await dialog.getByLabel("Name").fill("erin's script");
  await dialog.getByRole("button", { name: "Create key" }).click();
  const shown = dialog.getByLabel(/Access key for/);
  await shown.waitFor({ state: "visible", timeout: STEP_TIMEOUT_MS });
  const key = await shown.inputValue();
  assert.match(key, /^ag_[A-Za-z0-9_-]{32,}$/);

  // The key works for a script, as erin with the provider's roles.
  assert.equal(await httpGet(`${base}/api/x?accesskey=${key}`), 200);
  const last = seen.filter((request) => request.url.startsWith("/api/x")).at(-1);
  assert.equal(last.headers["x-auth-user"], "erin");
  assert.equal(last.headers["x-auth-roles"], "dev");

  // A page of the route (login = "corp") opens in the signed-in browser.
  const response = await page.goto(`${base}/app/page`);
  assert.equal(response.status(), 200);
  assert.deepEqual(problems, []);
  await context.close();
});

test("a browser sent from a route with login comes back to the page it asked for", async () => {
  const context = await browser.newContext({ locale: "en-US", timezoneId: "UTC" });
  const page = await context.newPage();
  await page.goto(`${base}/app/deep?x=1`);
  await page.waitForURL(/\/interaction\//, { timeout: STEP_TIMEOUT_MS });
  await page.getByLabel("User").fill("erin");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${base}/app/deep?x=1`, { timeout: STEP_TIMEOUT_MS });
  assert.equal(await page.locator("body").textContent(), "upstream");
  // Chromium sends the SameSite=Strict token cookie on the landing request
  // after the provider's redirect chain (the gateway answered it, not the
  // provider again).
  const landed = seen.filter((request) => request.url === "/app/deep?x=1");
  assert.equal(landed.length, 1);
  assert.equal(landed[0].headers["x-auth-user"], "erin");
  await context.close();
});
