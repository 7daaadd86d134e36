// The gateway's JSON API, as the page uses it.
//
// The session is the HttpOnly `token` cookie that POST /auth/login sets: the
// page never sees it again and keeps nothing in browser storage. Every call
// is same-origin JSON, so a cross-site form cannot drive it.

/** An API failure, with a sentence fit to show to a person. */
export class ApiError extends Error {
  constructor(message, { httpStatus = 0, reason = "", requestId = "" } = {}) {
    super(message);
    this.name = "ApiError";
    this.httpStatus = httpStatus;
    this.reason = reason;
    this.requestId = requestId;
  }

  /** The caller is not signed in (any more). */
  get unauthenticated() {
    return this.httpStatus === 401;
  }
}

/** Plain words for the reasons a person can act on. */
function explain(httpStatus, reason, message, retryAfter) {
  switch (reason) {
    case "TOO_MANY_ATTEMPTS": {
      const secs = Number.parseInt(retryAfter ?? "", 10);
      const wait = Number.isFinite(secs)
        ? `in ${Math.ceil(secs / 60)} minute${secs > 60 ? "s" : ""}`
        : "later";
      return `Too many failed attempts. Try again ${wait}.`;
    }
    case "ACCESSKEY_NOT_ALLOWED":
      return "You are signed in with an access key, which cannot manage keys. Sign out and sign in with your password.";
    case "RESOURCE_NOT_FOUND":
      return "This key no longer exists. It may have been revoked already.";
    case "BODY_TOO_LARGE":
      return "The name or detail is too long.";
    default:
      break;
  }
  if (httpStatus >= 500) {
    return "The gateway could not complete the request. Try again in a moment.";
  }
  if (message) {
    // The gateway's messages are sentences already; make them read as one.
    const text = message.charAt(0).toUpperCase() + message.slice(1);
    return /[.!?]$/.test(text) ? text : `${text}.`;
  }
  return `The request failed (HTTP ${httpStatus}).`;
}

/**
 * Calls the gateway. Resolves with the parsed JSON body; rejects with an
 * ApiError whose message can be shown as it is.
 */
export async function call(method, path, body) {
  const init = {
    method,
    credentials: "same-origin",
    cache: "no-store",
    headers: { Accept: "application/json" },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(
      "Could not reach the gateway. Check your connection and try again.",
    );
  }
  let payload = null;
  const type = response.headers.get("Content-Type") ?? "";
  if (type.includes("json")) {
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
  }
  if (response.ok) {
    return payload ?? {};
  }
  const error = payload?.error ?? {};
  throw new ApiError(
    explain(response.status, error.reason, error.message, response.headers.get("Retry-After")),
    {
      httpStatus: response.status,
      reason: error.reason ?? "",
      requestId: error.request_id ?? response.headers.get("X-Request-Id") ?? "",
    },
  );
}

/** Who the session cookie belongs to: {username, roles, admin, method}. */
export const session = () => call("GET", "/_authgate/session");

/** The external identity providers: {providers: [{name, login}]}. */
export const providers = () => call("GET", "/_authgate/providers");

/** Signs in; the gateway sets the session cookie. Resolves with the username. */
export async function signIn(username, password) {
  const answer = await call("POST", "/auth/login", { username, password });
  // The answer also carries the token; it is dropped here on purpose, the
  // HttpOnly cookie is the only copy the browser keeps.
  return answer.username;
}

/** Revokes the session's token and clears the cookie. */
export const signOut = () => call("POST", "/auth/logout");

/** One page of keys, newest first: {result, next_page_token}. */
export function listKeys(pageSize, pageToken) {
  const query = new URLSearchParams({ page_size: String(pageSize) });
  if (pageToken) {
    query.set("page_token", pageToken);
  }
  return call("GET", `/v1.0/accesskeys?${query}`);
}

/** Creates a key valid for `expire` seconds, narrowed by `scope` and, when
 * `rateLimit` ({rate, burst}) is given, with a budget of its own; the
 * answer's `token` is the key. */
export const createKey = (name, detail, expire, scope = {}, rateLimit = null) =>
  call("POST", "/v1.0/accesskeys", {
    name,
    detail,
    expire,
    ...scope,
    ...(rateLimit ? { rate_limit: rateLimit } : {}),
  });

/** Changes a key's name and detail. */
export const updateKey = (id, name, detail) =>
  call("PUT", `/v1.0/accesskeys/${encodeURIComponent(id)}`, { name, detail });

/** Disables (`false`) or enables (`true`) a key. */
export const setKeyEnabled = (id, enabled) =>
  call("PUT", `/v1.0/accesskeys/${encodeURIComponent(id)}`, { enabled });

/** A new secret for a key (the answer's `token`, shown once); the old one
 * keeps working for `grace` seconds. */
export const rerollKey = (id, grace) =>
  call("POST", `/v1.0/accesskeys/${encodeURIComponent(id)}/reroll`, { grace });

/** Revokes a key; it stops working at once. */
export const revokeKey = (id) =>
  call("DELETE", `/v1.0/accesskeys/${encodeURIComponent(id)}`);
