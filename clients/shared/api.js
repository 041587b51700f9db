// HTTP helpers shared by the capture app and the canvas companion.
//
// Every failure becomes an ApiError with a `kind` the UI can act on:
//   "offline"  the request never reached the server (no network, server down)
//   "auth"     the token is no longer valid (401/403/410 on a device route): pair again
//   "busy"     429/503: retry after `retryAfter` seconds
//   "http"     any other problem+json answer (`code`, `detail`, `hint` from the body)
//   "aborted"  cancelled by the caller

export class ApiError extends Error {
  constructor(kind, message, { status = 0, code = null, detail = null, hint = null, retryAfter = null, body = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.kind = kind;
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.hint = hint;
    this.retryAfter = retryAfter;
    this.body = body;
  }
}

// Codes that mean "this device's pairing is over" (SPEC §6 refusals).
const AUTH_CODES = new Set([
  "missing_token", "invalid_token", "revoked_token", "pairing_closed", "pairing_not_found", "wrong_role",
]);

export function errorFromResponse(status, body, retryAfterHeader) {
  const problem = body && typeof body === "object" ? body : {};
  const code = problem.code || null;
  const detail = problem.detail || problem.title || `HTTP ${status}`;
  const retryAfter = retryAfterHeader ? Number(retryAfterHeader) || 1 : null;
  let kind = "http";
  if (status === 401 || (status === 403 && code !== "bad_signature" && code !== "url_expired")
      || AUTH_CODES.has(code)) kind = "auth";
  else if (status === 429 || status === 503) kind = "busy";
  return new ApiError(kind, detail, { status, code, detail, hint: problem.hint || null, retryAfter, body: problem });
}

async function readBody(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try { return await response.json(); } catch { return null; }
  }
  return null;
}

/** fetch() with a bearer token; JSON in and out; throws ApiError. */
export async function api(path, { method = "GET", token = null, json, body, headers = {}, signal, timeoutMs = 30000 } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), timeoutMs);
  const onAbort = () => timeout.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  let response;
  try {
    response = await fetch(path, { method, headers: h, body, signal: timeout.signal, cache: "no-store" });
  } catch (err) {
    if (signal?.aborted) throw new ApiError("aborted", "cancelled");
    const timedOut = timeout.signal.aborted;
    throw new ApiError("offline", timedOut ? "The server did not answer in time." : "No connection to the server.");
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
  const data = await readBody(response);
  if (!response.ok) throw errorFromResponse(response.status, data, response.headers.get("retry-after"));
  return data ?? response;
}

/**
 * POST/PUT a FormData or Blob with upload progress (fetch cannot report it).
 * onProgress(fraction 0..1) while sending; resolves the JSON answer; throws ApiError.
 */
export function upload(path, { method = "POST", token = null, body, contentType = null, headers = {}, onProgress, signal, timeoutMs = 120000 } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, path);
    xhr.timeout = timeoutMs;
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    if (contentType) xhr.setRequestHeader("Content-Type", contentType);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.responseType = "text";
    if (onProgress) {
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
      xhr.upload.onload = () => onProgress(1);
    }
    const abort = () => xhr.abort();
    signal?.addEventListener("abort", abort, { once: true });
    const done = () => signal?.removeEventListener("abort", abort);
    xhr.onload = () => {
      done();
      let data = null;
      try { data = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { data = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(errorFromResponse(xhr.status, data, xhr.getResponseHeader("retry-after")));
    };
    xhr.onerror = () => { done(); reject(new ApiError("offline", "No connection to the server.")); };
    xhr.ontimeout = () => { done(); reject(new ApiError("offline", "The upload took too long; check the connection.")); };
    xhr.onabort = () => { done(); reject(new ApiError("aborted", "cancelled")); };
    xhr.send(body);
  });
}

/** A clip's PNG as a Blob: its signed URL first, else the device token (the URL may have expired). */
export async function fetchAsset(assetId, { url = null, token = null } = {}) {
  const tries = [];
  if (url) tries.push(() => fetch(url, { cache: "force-cache" }));
  if (token) tries.push(() => fetch(`/v1/assets/${encodeURIComponent(assetId)}`, { headers: { Authorization: `Bearer ${token}` } }));
  let last = new ApiError("http", "No way to fetch this clip.");
  for (const attempt of tries) {
    let response;
    try {
      response = await attempt();
    } catch {
      last = new ApiError("offline", "No connection to the server.");
      continue;
    }
    if (response.ok) return await response.blob();
    last = errorFromResponse(response.status, await readBody(response), response.headers.get("retry-after"));
  }
  throw last;
}

/**
 * A fresh Idempotency-Key (a UUID v4). Make one per action and send it with every retry of that
 * action: the server then does the work once and replays its answer. crypto.randomUUID exists only
 * on secure pages, and the capture app is often opened over plain http on the LAN.
 */
export function newIdempotencyKey() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Wait `ms` milliseconds (abortable). */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}
