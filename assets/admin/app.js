// The access-key page: sign-in, the keys table, and the create, rename,
// reroll and revoke dialogs, and enabling or disabling a key. Everything is rendered with textContent, never innerHTML,
// so a key's name cannot inject markup.

import * as api from "./api.js";
import {
  daysToSeconds,
  fullDate,
  parseTime,
  relativeTime,
  shortDate,
} from "./format.js";

/** Keys per page; `?page_size=N` on the page's URL overrides (1 to 100). */
const PAGE_SIZE = (() => {
  const asked = Number.parseInt(
    new URLSearchParams(location.search).get("page_size") ?? "",
    10,
  );
  return asked >= 1 && asked <= 100 ? asked : 20;
})();
/** Longest validity the gateway accepts, in days (ten years). */
const MAX_DAYS = 3660;
/** Keys expiring within this many seconds are flagged. */
const SOON = 3 * 86_400;

const $ = (id) => {
  const element = document.getElementById(id);
  if (!element) {
    throw new Error(`missing #${id}`);
  }
  return element;
};

const state = {
  /** {username, admin} of the signed-in user, or null. */
  user: null,
  /** Page tokens of the pages visited so far; "" is the first page. */
  pageTokens: [""],
  page: 0,
  nextToken: "",
  /** The key a dialog is acting on. */
  current: null,
};

// ---------------------------------------------------------------------------
// Small helpers

function showError(element, error) {
  const text = typeof error === "string" ? error : error.message;
  element.textContent = text;
  if (error instanceof api.ApiError && error.requestId) {
    const ref = document.createElement("span");
    ref.className = "ref";
    ref.textContent = ` (reference ${error.requestId})`;
    element.append(ref);
  }
  element.hidden = false;
}

function clearError(element) {
  element.textContent = "";
  element.hidden = true;
}

/** Marks a submit button busy while `work` runs. */
async function busy(button, label, work) {
  const idle = button.textContent;
  button.disabled = true;
  button.textContent = label;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.textContent = idle;
    button.removeAttribute("aria-busy");
  }
}

function el(tag, className, text) {
  const element = document.createElement(tag);
  if (className) {
    element.className = className;
  }
  if (text !== undefined) {
    element.textContent = text;
  }
  return element;
}

function timeElement(text) {
  const date = parseTime(text);
  const element = el("time");
  if (!date) {
    element.textContent = "—";
    return { element, date };
  }
  element.dateTime = text;
  element.title = fullDate(date);
  element.textContent = shortDate(date);
  return { element, date };
}

function announce(text) {
  const status = $("keys-status");
  status.textContent = text;
}

/** Handles a failed call: a 401 goes back to sign-in, anything else is shown. */
function failed(error, where, dialog) {
  if (error instanceof api.ApiError && error.unauthenticated) {
    dialog?.close();
    showSignIn("Your session has ended. Please sign in again.");
    return;
  }
  showError(where, error);
}

// ---------------------------------------------------------------------------
// Views

function showSignIn(notice) {
  state.user = null;
  for (const dialog of document.querySelectorAll("dialog[open]")) {
    dialog.close();
  }
  $("booting").hidden = true;
  $("keys-view").hidden = true;
  $("account").hidden = true;
  $("keys-body").replaceChildren();
  $("signin-view").hidden = false;
  $("signin-password").value = "";
  const error = $("signin-error");
  if (notice) {
    showError(error, notice);
  } else {
    clearError(error);
  }
  document.title = "Sign in · authgate";
  $("signin-username").focus();
}

async function showKeys(user) {
  state.user = user;
  state.pageTokens = [""];
  state.page = 0;
  $("booting").hidden = true;
  $("signin-view").hidden = true;
  $("account-name").textContent = user.username;
  $("account-admin").hidden = !user.admin;
  clearError($("sign-out-error"));
  $("account").hidden = false;
  $("keys-admin-note").hidden = !user.admin;
  $("keys-view").hidden = false;
  document.title = "Access keys · authgate";
  await loadPage(0);
}

// ---------------------------------------------------------------------------
// The keys table

async function loadPage(page) {
  const error = $("keys-error");
  try {
    const answer = await api.listKeys(PAGE_SIZE, state.pageTokens[page]);
    const keys = answer.result ?? [];
    if (keys.length === 0 && page > 0) {
      // The last key of a later page was revoked: step back.
      return loadPage(page - 1);
    }
    state.page = page;
    state.nextToken = answer.next_page_token ?? "";
    state.pageTokens.length = page + 1;
    clearError(error);
    render(keys);
  } catch (err) {
    failed(err, error);
  }
}

function render(keys) {
  const me = state.user?.username;
  const showOwner = Boolean(state.user?.admin) || keys.some((key) => key.user !== me);
  for (const cell of document.querySelectorAll(".col-owner")) {
    cell.hidden = !showOwner;
  }
  $("keys-caption").textContent = state.user?.admin
    ? "Access keys of every user"
    : "Your access keys";

  const now = new Date();
  const rows = keys.map((key) => row(key, showOwner, now));
  $("keys-body").replaceChildren(...rows);
  $("keys-table").hidden = keys.length === 0;
  $("keys-empty").hidden = keys.length !== 0;

  $("page-prev").disabled = state.page === 0;
  $("page-next").disabled = !state.nextToken;
  $("page-label").textContent = `Page ${state.page + 1}`;
  $("keys-view").querySelector(".pager").hidden = state.page === 0 && !state.nextToken;
}

/** Appends a cell whose content sits in one wrapper, so the narrow layout
 * can put the column's label beside it. */
function addCell(tr, label, className, ...content) {
  const td = el("td", className);
  td.dataset.label = label;
  const value = el("div", "value");
  value.append(...content);
  td.append(value);
  tr.append(td);
  return td;
}

function row(key, showOwner, now) {
  const tr = el("tr");
  tr.dataset.id = key.id;

  const name = el("th", "key-name");
  name.scope = "row";
  name.append(key.name ? el("span", "key-label", key.name) : el("span", "key-label muted", "Unnamed"));
  if (key.enabled === false) {
    tr.classList.add("disabled");
    name.append(" ", el("span", "badge badge-disabled", "Disabled"));
  }
  tr.append(name);

  addCell(tr, "Detail", "key-detail", key.detail ? key.detail : el("span", "muted", "—"));
  addCell(tr, "Key", "key-prefix", el("code", "", `${key.token_prefix}…`));
  if (showOwner) {
    addCell(tr, "Owner", "key-owner col-owner", key.user);
  }
  addCell(tr, "Created", "key-created", timeElement(key.tm_create).element);

  const { element, date } = timeElement(key.tm_expire);
  const expires = addCell(tr, "Expires", "key-expires", element);
  if (date) {
    const value = expires.firstChild;
    const left = (date.getTime() - now.getTime()) / 1000;
    const when = el("span", "relative", relativeTime(date, now));
    if (left <= 0) {
      tr.classList.add("expired");
      value.append(" ", el("span", "badge badge-expired", "Expired"));
      when.textContent = `expired ${relativeTime(date, now)}`;
    } else if (left < SOON) {
      value.append(" ", el("span", "badge badge-soon", "Soon"));
    }
    value.append(when);
  }

  addCell(tr, "Limits", "key-scope", ...scopeLines(key), rateLine(key));
  const uses = Number(key.uses ?? 0);
  addCell(
    tr,
    "Use",
    "key-last-used",
    key.tm_last_used ? timeElement(key.tm_last_used).element : el("span", "muted", "Never"),
    el("span", "uses", `${uses.toLocaleString("en-US")} ${uses === 1 ? "use" : "uses"}`),
  );

  const label = key.name || key.token_prefix;
  const action = (text, className, handler) => {
    const button = el("button", `button button-small ${className}`, text);
    button.type = "button";
    button.setAttribute("aria-label", `${text} key ${label}`);
    button.addEventListener("click", () => handler(key, button));
    return button;
  };
  addCell(
    tr,
    "Actions",
    "key-actions",
    action("Rename", "", openEdit),
    action(key.enabled === false ? "Enable" : "Disable", "", toggleEnabled),
    action("Reroll", "", openReroll),
    action("Revoke", "button-danger-quiet", openRevoke),
  );
  return tr;
}

/** The key's own rate limit, one line. */
function rateLine(key) {
  const limit = key.rate_limit;
  if (!limit) {
    return el("span", "scope-line muted", "No rate limit");
  }
  return el("span", "scope-line", `Rate: ${limit.rate}/s, burst ${limit.burst}`);
}

/** The key's scope, one line per limit; "Full access" when it has none. */
function scopeLines(key) {
  const lines = [];
  if (Array.isArray(key.roles)) {
    lines.push(el("span", "scope-line", `Roles: ${key.roles.length ? key.roles.join(", ") : "none"}`));
  }
  if (key.methods?.length) {
    lines.push(el("span", "scope-line", `Methods: ${key.methods.join(", ")}`));
  }
  if (key.path_prefixes?.length) {
    lines.push(el("span", "scope-line", `Paths: ${key.path_prefixes.join(", ")}`));
  }
  return lines.length ? lines : [el("span", "muted", "Full access")];
}

/** The scope fields of the create form, as the API takes them. */
function scopeInput() {
  const list = (text, separator) =>
    text
      .split(separator)
      .map((item) => item.trim())
      .filter(Boolean);
  const scope = {};
  const roles = list($("create-roles").value, ",");
  if (roles.length) scope.roles = roles;
  const methods = list($("create-methods").value, /[\s,]+/).map((m) => m.toUpperCase());
  if (methods.length) scope.methods = methods;
  const paths = list($("create-paths").value, /\n/);
  if (paths.length) scope.path_prefixes = paths;
  return scope;
}

/** The rate-limit fields of the create form: null when both are empty,
 * {rate, burst} when both are numbers, else a message. */
function rateLimitInput() {
  const rateText = $("create-rate").value.trim();
  const burstText = $("create-burst").value.trim();
  if (!rateText && !burstText) {
    return null;
  }
  const rate = Number(rateText);
  const burst = Number(burstText);
  if (!rateText || !Number.isFinite(rate) || rate <= 0) {
    return "Enter a rate above 0 requests per second, or leave both rate fields empty.";
  }
  if (!/^\d+$/.test(burstText) || burst < 1) {
    return "Enter a burst of 1 or more whole requests.";
  }
  return { rate, burst };
}

// ---------------------------------------------------------------------------
// Create

function validityDays() {
  const choice = document.querySelector('input[name="validity"]:checked')?.value;
  if (choice !== "custom") {
    return Number(choice);
  }
  const text = $("create-days").value.trim();
  const days = Number(text);
  if (!/^\d+$/.test(text) || days < 1 || days > MAX_DAYS) {
    return null;
  }
  return days;
}

function openCreate() {
  const form = $("create-form");
  form.reset();
  form.hidden = false;
  $("created").hidden = true;
  $("create-custom").hidden = true;
  clearError($("create-error"));
  $("create-dialog").showModal();
  $("create-name").focus();
}

async function submitCreate(event) {
  event.preventDefault();
  const error = $("create-error");
  clearError(error);
  const name = $("create-name").value.trim();
  const detail = $("create-detail").value.trim();
  const days = validityDays();
  if (!name) {
    showError(error, "Give the key a name.");
    $("create-name").focus();
    return;
  }
  if (days === null) {
    showError(error, `Enter a whole number of days from 1 to ${MAX_DAYS}.`);
    $("create-days").focus();
    return;
  }
  const rateLimit = rateLimitInput();
  if (typeof rateLimit === "string") {
    showError(error, rateLimit);
    $("create-rate").focus();
    return;
  }
  try {
    const key = await busy($("create-submit"), "Creating…", () =>
      api.createKey(name, detail, daysToSeconds(days), scopeInput(), rateLimit),
    );
    showCreated(key);
    announce(`Key “${key.name}” created.`);
    await loadPage(0);
  } catch (err) {
    failed(err, error, $("create-dialog"));
  }
}

function showCreated(key) {
  $("create-form").hidden = true;
  $("created").hidden = false;
  $("created-name").textContent = key.name || key.token_prefix;
  $("created-status").textContent = "";
  const input = $("created-key");
  input.value = key.token;
  input.focus();
  input.select();
}

/** Copies the key shown in `inputId`, reporting in `statusId`. */
async function copyKey(inputId, statusId) {
  const input = $(inputId);
  const status = $(statusId);
  try {
    await navigator.clipboard.writeText(input.value);
    status.textContent = "Copied to the clipboard.";
  } catch {
    // No clipboard API outside secure contexts: fall back to the selection.
    input.focus();
    input.select();
    const copied = document.execCommand?.("copy");
    status.textContent = copied
      ? "Copied to the clipboard."
      : "Could not copy. The key is selected: press Ctrl+C (⌘C on a Mac).";
  }
}

// ---------------------------------------------------------------------------
// Rename

function openEdit(key) {
  state.current = key;
  $("edit-name").value = key.name;
  $("edit-detail").value = key.detail;
  clearError($("edit-error"));
  $("edit-dialog").showModal();
  $("edit-name").select();
}

async function submitEdit(event) {
  event.preventDefault();
  const error = $("edit-error");
  clearError(error);
  const key = state.current;
  const name = $("edit-name").value.trim();
  const detail = $("edit-detail").value.trim();
  if (!name) {
    showError(error, "Give the key a name.");
    $("edit-name").focus();
    return;
  }
  try {
    const updated = await busy($("edit-submit"), "Saving…", () =>
      api.updateKey(key.id, name, detail),
    );
    $("edit-dialog").close();
    announce(`Key “${updated.name}” saved.`);
    await loadPage(state.page);
    focusRow(key.id, "Rename");
  } catch (err) {
    failed(err, error, $("edit-dialog"));
  }
}

function focusRow(id, action) {
  const button = [...document.querySelectorAll("#keys-body tr")]
    .find((tr) => tr.dataset.id === id)
    ?.querySelector(`button[aria-label^="${action}"]`);
  (button ?? $("create-open")).focus();
}

// ---------------------------------------------------------------------------
// Enable and disable

async function toggleEnabled(key, button) {
  const error = $("keys-error");
  clearError(error);
  const enable = key.enabled === false;
  const label = key.name || key.token_prefix;
  try {
    await busy(button, enable ? "Enabling…" : "Disabling…", () =>
      api.setKeyEnabled(key.id, enable),
    );
    announce(`Key “${label}” ${enable ? "enabled" : "disabled"}.`);
    await loadPage(state.page);
    focusRow(key.id, enable ? "Disable" : "Enable");
  } catch (err) {
    failed(err, error);
  }
}

// ---------------------------------------------------------------------------
// Reroll

/** Opens the `which` ("reroll", "revoke") dialog about `key`, with the
 * safe choice focused. */
function openKeyDialog(which, key) {
  state.current = key;
  $(`${which}-name`).textContent = key.name || "this key";
  $(`${which}-prefix`).textContent = key.token_prefix;
  clearError($(`${which}-error`));
  $(`${which}-dialog`).showModal();
  $(`${which}-cancel`).focus();
}

function openReroll(key) {
  const form = $("reroll-form");
  form.reset();
  form.hidden = false;
  $("rerolled").hidden = true;
  openKeyDialog("reroll", key);
}

async function submitReroll(event) {
  event.preventDefault();
  const error = $("reroll-error");
  clearError(error);
  const key = state.current;
  const grace = Number(document.querySelector('input[name="grace"]:checked')?.value ?? 0);
  try {
    const rerolled = await busy($("reroll-submit"), "Rerolling…", () =>
      api.rerollKey(key.id, grace),
    );
    $("reroll-form").hidden = true;
    $("rerolled").hidden = false;
    $("rerolled-name").textContent = rerolled.name || rerolled.token_prefix;
    $("rerolled-status").textContent = "";
    if (grace > 0) {
      const until = new Date(Date.now() + grace * 1000);
      $("rerolled-grace").textContent =
        `The old secret keeps working until ${fullDate(until)} (${relativeTime(until)}).`;
    } else {
      $("rerolled-grace").textContent = "The old secret has stopped working.";
    }
    const input = $("rerolled-key");
    input.value = rerolled.token;
    input.focus();
    input.select();
    announce(`Key “${rerolled.name || rerolled.token_prefix}” rerolled.`);
    await loadPage(state.page);
  } catch (err) {
    failed(err, error, $("reroll-dialog"));
  }
}

// ---------------------------------------------------------------------------
// Revoke

function openRevoke(key) {
  openKeyDialog("revoke", key);
}

async function submitRevoke(event) {
  event.preventDefault();
  const error = $("revoke-error");
  clearError(error);
  const key = state.current;
  try {
    await busy($("revoke-submit"), "Revoking…", () => api.revokeKey(key.id));
    $("revoke-dialog").close();
    announce(`Key “${key.name || key.token_prefix}” revoked.`);
    await loadPage(state.page);
    $("create-open").focus();
  } catch (err) {
    failed(err, error, $("revoke-dialog"));
  }
}

// ---------------------------------------------------------------------------
// Sign-in and sign-out

async function submitSignIn(event) {
  event.preventDefault();
  const error = $("signin-error");
  clearError(error);
  const username = $("signin-username").value.trim();
  const password = $("signin-password").value;
  if (!username || !password) {
    showError(error, "Enter your username and password.");
    (username ? $("signin-password") : $("signin-username")).focus();
    return;
  }
  try {
    const user = await busy($("signin-submit"), "Signing in…", async () => {
      await api.signIn(username, password);
      return api.session();
    });
    $("signin-password").value = "";
    await showKeys(user);
    $("main").focus();
  } catch (err) {
    showError(error, err);
    $("signin-password").select();
  }
}

async function signOut() {
  const error = $("sign-out-error");
  clearError(error);
  try {
    await busy($("sign-out"), "Signing out…", () => api.signOut());
  } catch (err) {
    if (!(err instanceof api.ApiError && err.unauthenticated)) {
      showError(error, err);
      return;
    }
  }
  showSignIn();
  announce("");
}

// ---------------------------------------------------------------------------
// Wiring

function wire() {
  $("signin-form").addEventListener("submit", submitSignIn);
  $("sign-out").addEventListener("click", signOut);
  $("create-open").addEventListener("click", openCreate);
  $("create-form").addEventListener("submit", submitCreate);
  $("created-copy").addEventListener("click", () => copyKey("created-key", "created-status"));
  $("rerolled-copy").addEventListener("click", () => copyKey("rerolled-key", "rerolled-status"));
  $("reroll-form").addEventListener("submit", submitReroll);
  $("edit-form").addEventListener("submit", submitEdit);
  $("revoke-form").addEventListener("submit", submitRevoke);
  $("page-prev").addEventListener("click", () => loadPage(Math.max(0, state.page - 1)));
  $("page-next").addEventListener("click", () => {
    if (state.nextToken) {
      state.pageTokens[state.page + 1] = state.nextToken;
      loadPage(state.page + 1);
    }
  });
  for (const radio of document.querySelectorAll('input[name="validity"]')) {
    radio.addEventListener("change", () => {
      const custom = radio.value === "custom" && radio.checked;
      $("create-custom").hidden = !custom;
      if (custom) {
        $("create-days").focus();
      }
    });
  }
  for (const button of document.querySelectorAll("[data-close]")) {
    button.addEventListener("click", () => button.closest("dialog")?.close());
  }
  // The new key leaves the page when its dialog closes, however it closes.
  $("create-dialog").addEventListener("close", () => {
    $("created-key").value = "";
    if (!$("keys-view").hidden) {
      $("create-open").focus();
    }
  });
  $("reroll-dialog").addEventListener("close", () => {
    $("rerolled-key").value = "";
    if (!$("keys-view").hidden && state.current) {
      focusRow(state.current.id, "Reroll");
    }
  });
}

/** One "Sign in with <name>" link per external identity provider. */
async function showProviders() {
  let answer;
  try {
    answer = await api.providers();
  } catch {
    return;
  }
  const list = $("signin-provider-list");
  list.replaceChildren(
    ...answer.providers.map((provider) => {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.className = "button provider-link";
      link.href = provider.login;
      link.textContent = `Sign in with ${provider.name}`;
      item.append(link);
      return item;
    }),
  );
  $("signin-providers").hidden = answer.providers.length === 0;
}

async function boot() {
  wire();
  showProviders();
  try {
    await showKeys(await api.session());
  } catch (err) {
    if (err instanceof api.ApiError && err.unauthenticated) {
      showSignIn();
    } else {
      showSignIn(err);
    }
  }
}

boot();
