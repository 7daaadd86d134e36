// End-to-end test of the /_authgate/ admin page in a real Chromium.
//
// Starts the real gateway (AUTHGATE_BIN, a debug build by default) in front
// of a recording upstream, drives the page with playwright-core and the
// system Chromium, and checks what the upstream sees when a key made on the
// page is used by an ordinary HTTP client.
//
// Environment:
//   AUTHGATE_BIN         gateway binary (default ../../target/debug/authgate)
//   CHROMIUM_BIN         browser (default /usr/bin/chromium)
//   AUTHGATE_SCREENSHOT  where the keys page screenshot goes (default
//                        artifacts/admin-keys.png, git-ignored: a test run
//                        leaves the work tree clean; `run.sh
//                        --refresh-screenshot` points it at the committed
//                        docs/admin-keys.png on purpose)

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.resolve(here, process.env.AUTHGATE_BIN ?? "../../target/debug/authgate");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const SCREENSHOT = path.resolve(
  here,
  process.env.AUTHGATE_SCREENSHOT ?? "artifacts/admin-keys.png",
);
const ARTIFACTS = path.join(here, "artifacts");
/** Debug builds run migrations and hash passwords slowly. */
const STARTUP_TIMEOUT_MS = 90_000;
/** How long the page may take to show what a step expects. */
const STEP_TIMEOUT_MS = 15_000;
const DESKTOP = { width: 1280, height: 760 };
const NARROW = { width: 400, height: 800 };

// ---------------------------------------------------------------------------
// Recording upstream

function startUpstream() {
  const seen = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method, url: req.url, headers: { ...req.headers } });
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ upstream: true, path: req.url }));
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      resolve({ server, seen, url: `http://127.0.0.1:${server.address().port}` });
    });
  });
}

// ---------------------------------------------------------------------------
// The gateway

function writeConfig(dir, upstreamUrl) {
  const secret = path.join(dir, "jwt.secret");
  writeFileSync(secret, `${randomBytes(48).toString("hex")}\n`, { mode: 0o600 });
  const config = path.join(dir, "authgate.toml");
  writeFileSync(
    config,
    `[server]
listen = "127.0.0.1:0"
shutdown_grace = 5

[store]
url = "sqlite://${path.join(dir, "authgate.db")}"

[jwt]
issuer = "authgate"
ttl = 3600
leeway = 30
secret_file = "${secret}"

[onetimekey]
realm = "voximplant.com"
ttl = 300

[upstream]
connect_timeout = 5
timeout = 30

[[route]]
path_prefix = "/"
upstream = "${upstreamUrl}"
auth = "required"
roles = []
`,
  );
  return config;
}

/** Runs a CLI command against the test's config; returns stdout. */
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

function addUser(config, name, password, roles = []) {
  cli(
    config,
    ["user", "add", name, "--password-stdin", ...roles.flatMap((r) => ["--role", r])],
    `${password}\n`,
  );
}

/** `key create` through the CLI: {id, key}. */
function createKeyCli(config, user, name, expireSecs) {
  const out = cli(config, [
    "key",
    "create",
    "--user",
    user,
    "--name",
    name,
    "--expire",
    String(expireSecs),
  ]);
  const id = /^id: (\S+)$/m.exec(out)?.[1];
  const key = /^key: (ag_\S+)$/m.exec(out)?.[1];
  assert.ok(id && key, `key create printed: ${out}`);
  return { id, key };
}

/** Set once the test stops the gateway on purpose. */
let stopping = false;

function startGateway(config) {
  const child = spawn(BIN, ["serve", "--config", config], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, AUTHGATE_LOG: process.env.AUTHGATE_LOG ?? "info" },
  });
  let logs = "";
  let started = false;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`gateway did not start in time; logs:\n${logs}`));
    }, STARTUP_TIMEOUT_MS);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      logs += chunk;
      const port = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(logs)?.[1];
      if (port && !started) {
        started = true;
        clearTimeout(timer);
        child.on("exit", (code, signal) => {
          if (!stopping) {
            process.stderr.write(
              `gateway exited unexpectedly (${code ?? signal}); logs:\n${logs}\n`,
            );
          }
        });
        resolve({
          child,
          base: `http://127.0.0.1:${port}`,
          logs: () => logs,
        });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      if (!started) {
        reject(new Error(`gateway exited (${code}) before listening; logs:\n${logs}`));
      }
    });
  });
}

async function stopGateway(gateway) {
  if (!gateway || gateway.child.exitCode !== null) {
    return;
  }
  stopping = true;
  const exited = new Promise((resolve) => gateway.child.once("exit", resolve));
  gateway.child.kill("SIGTERM");
  const timer = setTimeout(() => gateway.child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

/** A plain Node HTTP GET: {status, body}. */
function httpGet(url, headers = {}) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => {
          body += chunk;
        });
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body }));
      })
      .on("error", reject);
  });
}

// ---------------------------------------------------------------------------
// Page helpers

/** Waits until `locator`'s text matches `pattern`. */
async function expectText(locator, pattern, timeout = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  let text = "";
  while (Date.now() < deadline) {
    text = (await locator.textContent({ timeout }).catch(() => "")) ?? "";
    if (pattern.test(text)) {
      return text;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`expected text matching ${pattern}, got ${JSON.stringify(text)}`);
}

const visible = (locator) => locator.waitFor({ state: "visible", timeout: STEP_TIMEOUT_MS });
const gone = (locator) => locator.waitFor({ state: "hidden", timeout: STEP_TIMEOUT_MS });
const detached = (locator) => locator.waitFor({ state: "detached", timeout: STEP_TIMEOUT_MS });

/** The table row of the key named `name`. */
const keyRow = (page, name) =>
  page.locator("#keys-body tr").filter({
    has: page.locator("th.key-name .key-label", { hasText: new RegExp(`^${escape(name)}$`) }),
  });

function escape(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Signs in through the form, with the keyboard only. */
async function signIn(page, username, password) {
  const user = page.getByLabel("Username");
  await visible(user);
  await user.fill("");
  await user.focus();
  await page.keyboard.type(username);
  await page.keyboard.press("Tab");
  await page.keyboard.type(password);
  await page.keyboard.press("Enter");
  await visible(page.getByRole("heading", { name: "Access keys" }));
  await expectText(page.locator("#account-name"), new RegExp(`^${escape(username)}$`));
}

/** A page whose console errors (CSP violations above all) fail the test. */
async function openPage(browser, base, viewport = DESKTOP) {
  const context = await browser.newContext({
    viewport,
    locale: "en-US",
    timezoneId: "UTC",
    colorScheme: "light",
  });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    // A 401 from the API is logged by the browser as a failed load; that is
    // the page working as intended.
    if (msg.type() === "error" && !/Failed to load resource/.test(msg.text())) {
      problems.push(`console: ${msg.text()}`);
    }
  });
  page.on("requestfailed", (req) =>
    problems.push(`request failed: ${req.url()}: ${req.failure()?.errorText}`),
  );
  await page.goto(`${base}/_authgate/`);
  return { context, page, problems };
}

function pageIsClean(problems) {
  assert.deepEqual(problems, [], "the page logged errors");
}

// ---------------------------------------------------------------------------

describe("the /_authgate/ admin page", () => {
  let dir;
  let upstream;
  let gateway;
  let config;
  let browser;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "authgate-browser-"));
    mkdirSync(ARTIFACTS, { recursive: true });
    upstream = await startUpstream();
    config = writeConfig(dir, upstream.url);
    addUser(config, "alice", "alice-password-1");
    addUser(config, "bob", "bob-password-1");
    addUser(config, "dave", "dave-password-1");
    addUser(config, "carol", "carol-password-1", ["admin"]);
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
    await stopGateway(gateway);
    upstream?.server.close();
    if (dir) {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("serves the page with a strict policy", async () => {
    const redirect = await httpGet(`${gateway.base}/_authgate`);
    assert.equal(redirect.status, 308);
    assert.equal(redirect.headers.location, "/_authgate/");
    const page = await httpGet(`${gateway.base}/_authgate/`);
    assert.equal(page.status, 200);
    assert.match(page.headers["content-type"], /^text\/html/);
    assert.match(page.headers["content-security-policy"], /frame-ancestors 'none'/);
    assert.match(page.headers["content-security-policy"], /script-src 'self';/);
    const script = await httpGet(`${gateway.base}/_authgate/app.js`);
    assert.match(script.headers["content-type"], /^text\/javascript/);
    const missing = await httpGet(`${gateway.base}/_authgate/nope`);
    assert.equal(missing.status, 404);
    assert.equal(JSON.parse(missing.body).error.status, "NOT_FOUND");
  });

  test("sign in, create a key, use it, rename it, revoke it", async (t) => {
    // Keys made elsewhere, so the table has something to show: one that
    // lives long and one that has already expired.
    createKeyCli(config, "alice", "Nightly backup", 90 * 86_400);
    createKeyCli(config, "alice", "Old laptop", 1);
    const goner = createKeyCli(config, "alice", "Staging smoke test", 7 * 86_400);

    const { context, page, problems } = await openPage(browser, gateway.base);
    await context.grantPermissions(["clipboard-read", "clipboard-write"]);

    await visible(page.getByLabel("Username"));
    await page.screenshot({ path: path.join(ARTIFACTS, "signin.png") });

    await t.test("a wrong password is reported next to the form", async () => {
      await page.getByLabel("Username").fill("alice");
      await page.getByLabel("Password").fill("not-the-password");
      await page.getByRole("button", { name: "Sign in" }).click();
      await expectText(page.locator("#signin-error"), /wrong username or password/i);
      await assert.doesNotReject(visible(page.getByLabel("Password")));
    });

    await t.test("signing in uses only the HttpOnly cookie", async () => {
      await page.getByLabel("Password").fill("");
      await signIn(page, "alice", "alice-password-1");
      const cookies = await context.cookies();
      const token = cookies.find((c) => c.name === "token");
      assert.ok(token, "the login sets the token cookie");
      assert.equal(token.httpOnly, true);
      assert.equal(token.sameSite, "Strict");
      const storage = await page.evaluate(() => ({
        local: localStorage.length,
        session: sessionStorage.length,
        cookie: document.cookie,
      }));
      assert.deepEqual(storage, { local: 0, session: 0, cookie: "" });
      // A non-admin sees no owner column.
      assert.equal(await page.locator("th.col-owner").isVisible(), false);
      await expectText(keyRow(page, "Old laptop").locator(".key-expires"), /Expired/);
    });

    let key;
    let keyId;
    await t.test("a new key is shown once, with a warning and a copy button", async () => {
      await page.getByRole("button", { name: "Create key" }).click();
      const dialog = page.locator("#create-dialog");
      await visible(dialog);
      await dialog.getByLabel("Name").fill("CI deploy");
      await dialog.getByLabel("Detail").fill("Used by the release pipeline");
      await dialog.getByLabel("1 day").check();
      await dialog.getByRole("button", { name: "Create key" }).click();

      const shown = dialog.getByLabel(/Access key for/);
      await visible(shown);
      key = await shown.inputValue();
      assert.match(key, /^ag_[A-Za-z0-9_-]{32,}$/);
      await expectText(dialog.locator("#created-warning"), /will not be shown again/);
      await dialog.getByRole("button", { name: "Copy" }).click();
      await expectText(dialog.locator("#created-status"), /Copied/);
      assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key);
      await page.screenshot({ path: path.join(ARTIFACTS, "new-key.png") });

      await dialog.getByRole("button", { name: "Done" }).click();
      await gone(dialog);
      // Gone from the page once the dialog is closed.
      await page.waitForFunction(() => document.getElementById("created-key").value === "", null, {
        timeout: STEP_TIMEOUT_MS,
      });
      const row = keyRow(page, "CI deploy");
      await visible(row);
      keyId = await row.getAttribute("data-id");
      await expectText(row.locator(".key-prefix"), new RegExp(`^${escape(key.slice(0, 11))}…$`));
      await expectText(row.locator(".key-detail"), /^Used by the release pipeline$/);
      await expectText(row.locator(".key-expires"), /in 1 day/);
      assert.equal(await page.getByText(key).count(), 0, "the key is not in the table");
    });

    await t.test("the key works on a proxied route", async () => {
      const before = upstream.seen.length;
      const answer = await httpGet(`${gateway.base}/api/things?accesskey=${key}&page=2`);
      assert.equal(answer.status, 200, answer.body);
      const seen = upstream.seen.slice(before);
      assert.equal(seen.length, 1);
      assert.equal(seen[0].url, "/api/things?page=2");
      assert.equal(seen[0].headers["x-auth-method"], "accesskey");
      assert.equal(seen[0].headers["x-auth-user"], "alice");
      assert.equal(seen[0].headers["x-auth-key-id"], keyId);
    });

    await t.test("a scoped key lists its scope and is refused outside it", async () => {
      await page.getByRole("button", { name: "Create key" }).click();
      const dialog = page.locator("#create-dialog");
      await visible(dialog);
      await dialog.getByLabel("Name").fill("Reports reader");
      await dialog.getByLabel("Methods").fill("get, head");
      await dialog.getByLabel("Path prefixes").fill("/api/reports\n/api/exports/");
      await dialog.getByRole("button", { name: "Create key" }).click();
      const shown = dialog.getByLabel(/Access key for/);
      await visible(shown);
      const scoped = await shown.inputValue();
      await dialog.getByRole("button", { name: "Done" }).click();
      await gone(dialog);
      const row = keyRow(page, "Reports reader");
      await visible(row);
      await expectText(row.locator(".key-scope"), /Methods: GET, HEAD/);
      await expectText(row.locator(".key-scope"), /Paths: \/api\/reports, \/api\/exports\//);
      await expectText(row.locator(".key-last-used"), /Never/);
      await expectText(keyRow(page, "CI deploy").locator(".key-scope"), /Full access/);

      const before = upstream.seen.length;
      const inside = await httpGet(`${gateway.base}/api/reports/2026?accesskey=${scoped}`);
      assert.equal(inside.status, 200, inside.body);
      const outside = await httpGet(`${gateway.base}/api/things?accesskey=${scoped}`);
      assert.equal(outside.status, 403, outside.body);
      assert.equal(JSON.parse(outside.body).error.reason, "OUT_OF_SCOPE");
      assert.equal(upstream.seen.length, before + 1, "only the request inside the scope went through");
      await expectText(row.locator(".key-last-used"), /0 uses/);
      // The uses show within seconds after a reload of the list, with the
      // last use: both requests authenticated (the one outside the scope
      // was refused after that, so it counts too).
      const deadline = Date.now() + STEP_TIMEOUT_MS;
      let text = "";
      while (Date.now() < deadline) {
        await page.reload();
        text = await keyRow(page, "Reports reader").locator(".key-last-used").innerText();
        if (!/Never/.test(text) && /\b2 uses\b/.test(text)) break;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      assert.doesNotMatch(text, /Never/, "last use shown");
      assert.match(text, /\b2 uses\b/, "uses shown");
    });

    await t.test("rename", async () => {
      await page.getByRole("button", { name: "Rename key CI deploy" }).click();
      const dialog = page.locator("#edit-dialog");
      await visible(dialog);
      await dialog.getByLabel("Name").fill("CI deploy (prod)");
      await dialog.getByLabel("Detail").fill("Release pipeline, production stage");
      await dialog.getByRole("button", { name: "Save" }).click();
      await gone(dialog);
      const row = keyRow(page, "CI deploy (prod)");
      await visible(row);
      await expectText(row.locator(".key-detail"), /^Release pipeline, production stage$/);
      await expectText(page.locator("#keys-status"), /saved/);
      // Focus goes back to where it was.
      assert.equal(
        await page.evaluate(() => document.activeElement?.getAttribute("aria-label")),
        "Rename key CI deploy (prod)",
      );
    });

    await t.test("a key with its own rate limit shows it and is held to it", async () => {
      await page.getByRole("button", { name: "Create key" }).click();
      const dialog = page.locator("#create-dialog");
      await visible(dialog);
      await dialog.getByLabel("Name").fill("Partner feed");
      await dialog.getByLabel("Requests per second").fill("0");
      await dialog.getByLabel("Burst").fill("2");
      await dialog.getByRole("button", { name: "Create key" }).click();
      await expectText(dialog.locator("#create-error"), /rate above 0/);
      await dialog.getByLabel("Requests per second").fill("0.01");
      await dialog.getByRole("button", { name: "Create key" }).click();
      const shown = dialog.getByLabel(/Access key for/);
      await visible(shown);
      const limited = await shown.inputValue();
      await dialog.getByRole("button", { name: "Done" }).click();
      await gone(dialog);
      await expectText(keyRow(page, "Partner feed").locator(".key-scope"), /Rate: 0\.01\/s, burst 2/);
      await expectText(keyRow(page, "CI deploy (prod)").locator(".key-scope"), /No rate limit/);

      const use = () => httpGet(`${gateway.base}/api/feed`, { "X-API-Key": limited });
      assert.equal((await use()).status, 200);
      assert.equal((await use()).status, 200);
      const refused = await use();
      assert.equal(refused.status, 429, refused.body);
      assert.equal(JSON.parse(refused.body).error.details.limited_by, "key");
      assert.ok(refused.headers["retry-after"], "Retry-After");
      assert.match(refused.headers["ratelimit-policy"], /^"key";q=2;w=200$/);
    });

    await t.test("disable, then enable", async () => {
      const row = keyRow(page, "CI deploy (prod)");
      await page.getByRole("button", { name: "Disable key CI deploy (prod)" }).click();
      await expectText(row.locator("th.key-name"), /Disabled/);
      await expectText(page.locator("#keys-status"), /disabled/);
      assert.equal(
        await page.evaluate(() => document.activeElement?.getAttribute("aria-label")),
        "Enable key CI deploy (prod)",
        "focus stays on the row's toggle",
      );
      const refused = await httpGet(`${gateway.base}/api/things`, { Authorization: `Bearer ${key}` });
      assert.equal(refused.status, 401, refused.body);

      await page.getByRole("button", { name: "Enable key CI deploy (prod)" }).click();
      await visible(page.getByRole("button", { name: "Disable key CI deploy (prod)" }));
      assert.doesNotMatch(await row.locator("th.key-name").innerText(), /Disabled/);
      const back = await httpGet(`${gateway.base}/api/things`, { Authorization: `Bearer ${key}` });
      assert.equal(back.status, 200, back.body);
    });

    await t.test("reroll shows the new key once, with the grace chosen", async () => {
      await page.getByRole("button", { name: "Reroll key CI deploy (prod)" }).click();
      const dialog = page.locator("#reroll-dialog");
      await visible(dialog);
      assert.equal(await page.evaluate(() => document.activeElement?.id), "reroll-cancel");
      await dialog.getByLabel("Works 1 more hour").check();
      await dialog.getByRole("button", { name: "Reroll key" }).click();
      const shown = dialog.getByLabel(/New access key for/);
      await visible(shown);
      const fresh = await shown.inputValue();
      assert.match(fresh, /^ag_[A-Za-z0-9_-]{49}$/);
      assert.notEqual(fresh, key);
      await expectText(dialog.locator("#rerolled-grace"), /keeps working until .* \(in 1 hour\)/);
      await dialog.getByRole("button", { name: "Copy" }).click();
      await expectText(dialog.locator("#rerolled-status"), /Copied/);
      assert.equal(await page.evaluate(() => navigator.clipboard.readText()), fresh);
      await page.screenshot({ path: path.join(ARTIFACTS, "rerolled-key.png") });
      await dialog.getByRole("button", { name: "Done" }).click();
      await gone(dialog);
      await page.waitForFunction(() => document.getElementById("rerolled-key").value === "", null, {
        timeout: STEP_TIMEOUT_MS,
      });
      assert.equal(await page.getByText(fresh).count(), 0, "the new key is not in the table");
      await expectText(
        keyRow(page, "CI deploy (prod)").locator(".key-prefix"),
        new RegExp(`^${escape(fresh.slice(0, 11))}…$`),
      );
      // Both work through the grace: the old one until it ends.
      for (const secret of [fresh, key]) {
        const answer = await httpGet(`${gateway.base}/api/things?accesskey=${secret}`);
        assert.equal(answer.status, 200, answer.body);
      }

      // Without a grace the old secret stops at once.
      await page.getByRole("button", { name: "Reroll key Partner feed" }).click();
      await visible(dialog);
      await dialog.getByRole("button", { name: "Reroll key" }).click();
      await expectText(dialog.locator("#rerolled-grace"), /stopped working/);
      await page.keyboard.press("Escape");
      await gone(dialog);
      await expectText(keyRow(page, "Partner feed").locator(".key-scope"), /Rate: 0\.01\/s, burst 2/);
    });

    await t.test("nothing is cut off at 1280 px", async () => {
      await page.mouse.move(0, 0);
      const clipped = await page.evaluate(() => {
        const wrap = document.querySelector(".table-wrap").getBoundingClientRect();
        const width = document.documentElement.clientWidth;
        return [...document.querySelectorAll("#keys-table th, #keys-table td, #keys-table button")]
          .filter((element) => {
            const box = element.getBoundingClientRect();
            return box.width > 0 && (box.right > Math.min(wrap.right, width) + 0.5 || box.left < wrap.left - 0.5);
          })
          .map((element) => element.getAttribute("aria-label") ?? element.className);
      });
      assert.deepEqual(clipped, [], "cells or buttons outside the table's box");
      for (const action of ["Rename", "Disable", "Reroll", "Revoke"]) {
        await visible(page.getByRole("button", { name: `${action} key Nightly backup` }));
      }
    });

    await t.test("screenshots", async () => {
      await page.mouse.move(0, 0);
      await page.evaluate(() => document.activeElement?.blur());
      mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      // The page down to the end of its content, for the README.
      const bottom = await page.evaluate(() =>
        Math.ceil(document.querySelector(".table-wrap").getBoundingClientRect().bottom + 40),
      );
      await page.screenshot({
        path: SCREENSHOT,
        clip: { x: 0, y: 0, width: DESKTOP.width, height: Math.min(bottom, DESKTOP.height) },
      });

      await page.setViewportSize(NARROW);
      const overflow = await page.evaluate(
        () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
      );
      assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px at 400px`);
      await visible(page.getByRole("button", { name: "Revoke key CI deploy (prod)" }));
      await page.screenshot({ path: path.join(ARTIFACTS, "admin-keys-400.png"), fullPage: true });
      await page.setViewportSize(DESKTOP);
    });

    await t.test("an API error is shown in the dialog that caused it", async () => {
      // Revoked elsewhere while the page still lists it.
      cli(config, ["key", "revoke", goner.id]);
      await page.getByRole("button", { name: "Revoke key Staging smoke test" }).click();
      const dialog = page.locator("#revoke-dialog");
      await visible(dialog);
      await dialog.getByRole("button", { name: "Revoke key" }).click();
      await expectText(dialog.locator("#revoke-error"), /no longer exists/);
      await page.keyboard.press("Escape");
      await gone(dialog);
    });

    await t.test("revoke asks first, then takes effect at once", async () => {
      await page.getByRole("button", { name: "Revoke key CI deploy (prod)" }).click();
      const dialog = page.locator("#revoke-dialog");
      await visible(dialog);
      await expectText(dialog, /will be refused at once/);
      assert.equal(
        await page.evaluate(() => document.activeElement?.id),
        "revoke-cancel",
        "the safe choice has the focus",
      );
      await dialog.getByRole("button", { name: "Cancel" }).click();
      await gone(dialog);
      await visible(keyRow(page, "CI deploy (prod)"));
      assert.equal((await httpGet(`${gateway.base}/api/things?accesskey=${key}`)).status, 200);

      await page.getByRole("button", { name: "Revoke key CI deploy (prod)" }).click();
      await visible(dialog);
      await dialog.getByRole("button", { name: "Revoke key" }).click();
      await gone(dialog);
      await detached(keyRow(page, "CI deploy (prod)"));
      await expectText(page.locator("#keys-status"), /revoked/);

      const before = upstream.seen.length;
      const refused = await httpGet(`${gateway.base}/api/things?accesskey=${key}&page=2`);
      assert.equal(refused.status, 401, refused.body);
      assert.equal(JSON.parse(refused.body).error.status, "UNAUTHENTICATED");
      assert.equal(upstream.seen.length, before, "the upstream saw nothing");
    });

    await t.test("a 401 returns to the sign-in form", async () => {
      await context.clearCookies();
      await page.getByRole("button", { name: "Create key" }).click();
      const dialog = page.locator("#create-dialog");
      await dialog.getByLabel("Name").fill("never made");
      await dialog.getByRole("button", { name: "Create key" }).click();
      await gone(dialog);
      await visible(page.getByRole("heading", { name: "Sign in" }));
      await expectText(page.locator("#signin-error"), /session has ended/);
    });

    await t.test("sign-out revokes the session", async () => {
      await signIn(page, "alice", "alice-password-1");
      const token = (await context.cookies()).find((c) => c.name === "token").value;
      const probe = () =>
        httpGet(`${gateway.base}/api/things`, { Authorization: `Bearer ${token}` });
      assert.equal((await probe()).status, 200);
      await page.getByRole("button", { name: "Sign out" }).click();
      await visible(page.getByRole("heading", { name: "Sign in" }));
      assert.equal((await context.cookies()).filter((c) => c.name === "token").length, 0);
      assert.equal((await probe()).status, 401);
      // A reload stays signed out.
      await page.reload();
      await visible(page.getByRole("heading", { name: "Sign in" }));
    });

    pageIsClean(problems);
    await context.close();
  });

  test("a non-admin sees only their keys; an admin sees everyone's", async (t) => {
    const daves = createKeyCli(config, "dave", "Dave's reporting job", 30 * 86_400);
    createKeyCli(config, "bob", "Bob's notebook", 365 * 86_400);

    const { context, page, problems } = await openPage(browser, gateway.base);

    await t.test("bob", async () => {
      await signIn(page, "bob", "bob-password-1");
      await visible(keyRow(page, "Bob's notebook"));
      // A key made on the page, with a custom validity.
      await page.getByRole("button", { name: "Create key" }).click();
      const dialog = page.locator("#create-dialog");
      await dialog.getByLabel("Name").fill("Bob's CLI");
      await dialog.getByLabel("Custom").check();
      await dialog.getByLabel("Number of days").fill("0");
      await dialog.getByRole("button", { name: "Create key" }).click();
      await expectText(dialog.locator("#create-error"), /whole number of days/);
      await dialog.getByLabel("Number of days").fill("45");
      await dialog.getByRole("button", { name: "Create key" }).click();
      await visible(dialog.getByLabel(/Access key for/));
      await page.keyboard.press("Escape");
      await gone(dialog);
      await expectText(keyRow(page, "Bob's CLI").locator(".key-expires"), /in 45 days/);

      const names = await page.locator("#keys-body th.key-name").allTextContents();
      assert.deepEqual(names, ["Bob's CLI", "Bob's notebook"]);
      assert.equal(await page.getByText("Dave's reporting job").count(), 0);
      assert.equal(await page.locator("th.col-owner").isVisible(), false);
      assert.equal(await page.locator("#account-admin").isVisible(), false);
      // Not by asking the API directly either.
      const status = await page.evaluate(
        async (id) => {
          const response = await fetch(`/v1.0/accesskeys/${id}`);
          await response.text();
          return response.status;
        },
        daves.id,
      );
      assert.equal(status, 404);
      await page.getByRole("button", { name: "Sign out" }).click();
      await visible(page.getByRole("heading", { name: "Sign in" }));
    });

    await t.test("carol, an admin", async () => {
      await signIn(page, "carol", "carol-password-1");
      await visible(page.locator("#account-admin"));
      await visible(page.locator("th.col-owner"));
      const dave = keyRow(page, "Dave's reporting job");
      await visible(dave);
      await expectText(dave.locator(".key-owner"), /^dave$/);
      await expectText(keyRow(page, "Bob's CLI").locator(".key-owner"), /^bob$/);
      await expectText(keyRow(page, "Nightly backup").locator(".key-owner"), /^alice$/);
      await page.screenshot({ path: path.join(ARTIFACTS, "admin.png"), fullPage: true });
    });

    await t.test("paging", async () => {
      await page.goto(`${gateway.base}/_authgate/?page_size=2`);
      await visible(page.getByRole("heading", { name: "Access keys" }));
      const names = () => page.locator("#keys-body th.key-name").allTextContents();
      await visible(page.locator("#keys-body tr").first());
      const first = await names();
      assert.equal(first.length, 2);
      const seen = new Set(first);
      const next = page.getByRole("button", { name: "Next" });
      while (await next.isEnabled()) {
        const label = await page.locator("#page-label").textContent();
        await next.click();
        await expectText(page.locator("#page-label"), new RegExp(`^(?!${escape(label)}$)`));
        for (const name of await names()) {
          assert.ok(!seen.has(name), `${name} shown twice`);
          seen.add(name);
        }
      }
      for (const name of ["Bob's CLI", "Dave's reporting job", "Nightly backup", "Old laptop"]) {
        assert.ok(seen.has(name), `${name} is on some page: ${[...seen]}`);
      }
      await page.getByRole("button", { name: "Previous" }).click();
      await expectText(page.locator("#page-label"), /^Page \d+$/);
    });

    pageIsClean(problems);
    await context.close();
  });
});
