// arclip capture: the phone app (SPEC §6). Pair, cut an object out of the camera view, aim at
// the laptop canvas and paste it there.
//
// Uploads are JPEGs of at most MAX_SIDE pixels (the cut and the paste photo alike, so the
// canvas can size a paste by the locator's scale), sent with XHR for progress.

import { api, upload, fetchAsset, sleep, newIdempotencyKey } from "../shared/api.js";
import { SyncClient } from "../shared/sync.js";
import { local } from "../shared/store.js";
import { $, toast, registerServiceWorker, formatCode } from "../shared/ui.js";

const STATE_KEY = "arclip.capture.v1";
const syncKey = (pairingId) => `arclip.capture.sync.${pairingId}`;
const MAX_SIDE = 1600;
const JPEG_QUALITY = 0.88;
const HOLD_MS = 300; // press this long on the view to cut
const RELEASE_PASTE_MS = 400; // a clip shown this long before release is pasted on release
const BUSY_RETRIES = 2;

const state = Object.assign({ pairing: null, clip: null, usePicker: false }, local.get(STATE_KEY, {}));
const els = {};
let live = null;
let stream = null;
let busy = null; // null | "pair" | "cut" | "paste"
let clipShownAt = 0;
let clipObjectUrl = null;

function save() {
  local.set(STATE_KEY, { pairing: state.pairing, clip: state.clip, usePicker: state.usePicker });
}

const sentence = (text) => (text ? text.charAt(0).toUpperCase() + text.slice(1) : text);

// -- views -----------------------------------------------------------------------------------------

function showView(name) {
  document.body.dataset.view = name;
  els.pairView.hidden = name !== "pair";
  els.cameraView.hidden = name !== "camera";
  if (name === "camera") startCamera();
  else stopCamera();
}

function setPairStatus(text, kind = "info") {
  els.pairStatus.textContent = text;
  els.pairStatus.dataset.kind = kind;
}

function setHint(text, kind = "info") {
  els.hint.hidden = !text;
  els.hint.textContent = text || "";
  els.hint.dataset.kind = kind;
}

function setBusy(what) {
  busy = what;
  els.cameraView.dataset.busy = what || "";
  els.cutBtn.disabled = Boolean(what);
  els.pasteBtn.disabled = Boolean(what);
  els.discardBtn.disabled = Boolean(what);
  els.clipBox.classList.toggle("sending", what === "paste");
}

function showProgress(fraction, label) {
  els.progress.hidden = false;
  const pct = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
  els.progress.classList.toggle("indeterminate", fraction >= 1);
  els.progressFill.style.width = fraction >= 1 ? "" : `${pct}%`;
  els.progress.setAttribute("aria-valuenow", String(pct));
  els.progressText.textContent = label;
}

function hideProgress() {
  els.progress.hidden = true;
}

function renderControls() {
  const hasClip = Boolean(state.clip);
  els.cutBtn.hidden = hasClip;
  els.pasteBtn.hidden = !hasClip;
  els.discardBtn.hidden = !hasClip;
  els.cutHelp.textContent = hasClip
    ? "Aim the cross at the laptop canvas, then Paste (or press and hold the view, and release)."
    : "Tap Cut, or press and hold the view; release while aiming at the laptop to paste.";
  els.cameraView.dataset.clip = hasClip ? state.clip.asset_id : "";
}

// -- camera ------------------------------------------------------------------------------------------

async function startCamera() {
  if (stream) return;
  renderControls();
  if (state.usePicker) {
    cameraUnavailable("Using the photo picker: Cut and Paste open the camera app.");
    return;
  }
  if (!navigator.mediaDevices?.getUserMedia) {
    cameraUnavailable(window.isSecureContext
      ? "This browser cannot show a live camera. Cut and Paste will open the camera app instead."
      : "The live camera needs a secure page (https:// or localhost). Cut and Paste will open the camera app instead.");
    return;
  }
  try {
    const media = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: { ideal: "environment" }, width: { ideal: 1920 }, height: { ideal: 1080 } },
      audio: false,
    });
    if (els.cameraView.hidden) { media.getTracks().forEach((t) => t.stop()); return; } // left meanwhile
    stream = media;
    els.video.srcObject = stream;
    await els.video.play().catch(() => {});
    els.noCamera.hidden = true;
    els.cameraView.dataset.camera = "live";
  } catch (err) {
    const reasons = {
      NotAllowedError: "Camera permission was denied. Allow the camera for this site in the browser settings, or use the camera app.",
      SecurityError: "Camera permission was denied. Allow the camera for this site in the browser settings, or use the camera app.",
      NotFoundError: "No camera was found on this device.",
      OverconstrainedError: "No suitable camera was found on this device.",
      NotReadableError: "The camera is busy in another app. Close it and try again.",
    };
    cameraUnavailable(reasons[err.name] || `The camera could not start (${err.message}).`);
  }
}

function cameraUnavailable(text) {
  els.noCamera.hidden = false;
  const fallback = " Cut and Paste will open the camera app instead.";
  els.noCameraText.textContent = text.includes("instead") || text.includes("camera app") ? text : text + fallback;
  els.cameraView.dataset.camera = "picker";
}

function stopCamera() {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  if (els.video) els.video.srcObject = null;
}

function pickPhoto() {
  // Called synchronously inside a click, as browsers require for opening the picker.
  return new Promise((resolve, reject) => {
    const input = els.fileInput;
    input.value = "";
    const onChange = () => { cleanup(); input.files?.[0] ? resolve(input.files[0]) : reject(new Error("cancelled")); };
    const onCancel = () => { cleanup(); reject(new Error("cancelled")); };
    const cleanup = () => { input.removeEventListener("change", onChange); input.removeEventListener("cancel", onCancel); };
    input.addEventListener("change", onChange);
    input.addEventListener("cancel", onCancel);
    input.click();
  });
}

function encodeJpeg(source, width, height) {
  const scale = Math.min(1, MAX_SIDE / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve, reject) =>
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("The photo could not be encoded."))), "image/jpeg", JPEG_QUALITY));
}

/** The photo to send: a frame of the live camera, or (without one) a photo from the picker. */
function takePhoto() {
  if (stream && els.video.videoWidth) {
    return encodeJpeg(els.video, els.video.videoWidth, els.video.videoHeight);
  }
  const picked = pickPhoto(); // synchronously, within the user's gesture
  return picked.then(async (file) => {
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    try { return await encodeJpeg(bitmap, bitmap.width, bitmap.height); } finally { bitmap.close?.(); }
  });
}

// -- the clip ------------------------------------------------------------------------------------------

function setClip(clip) {
  state.clip = clip;
  save();
  renderControls();
  if (clipObjectUrl) { URL.revokeObjectURL(clipObjectUrl); clipObjectUrl = null; }
  if (!clip) {
    els.clipBox.hidden = true;
    els.clipImg.removeAttribute("src");
    return;
  }
  els.clipBox.hidden = false;
  els.clipBox.classList.remove("gone", "sending");
  els.clipBox.dataset.asset = clip.asset_id;
  els.clipImg.onload = () => { clipShownAt = performance.now(); els.clipBox.dataset.loaded = "true"; };
  els.clipImg.onerror = async () => {
    els.clipImg.onerror = null;
    try {
      const blob = await fetchAsset(clip.asset_id, { token: state.pairing?.phone_token });
      clipObjectUrl = URL.createObjectURL(blob);
      els.clipImg.src = clipObjectUrl;
    } catch (err) {
      if (err.status === 404) {
        toast("That clip has expired. Cut it again.", { kind: "warn" });
        setClip(null);
      }
    }
  };
  els.clipBox.dataset.loaded = "false";
  els.clipImg.src = clip.url || `/v1/assets/${encodeURIComponent(clip.asset_id)}?token=${encodeURIComponent(state.pairing.phone_token)}`;
}

/**
 * Run an upload, retrying (with a visible countdown) while the server says it is busy. An
 * `idempotent` upload (sent with an Idempotency-Key) is also retried when its answer was lost
 * (the network dropped mid-request) or its first try is still running (409): the server hands back
 * the first result instead of doing the work twice.
 */
async function withBusyRetry(send, { idempotent = false } = {}) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await send();
    } catch (err) {
      const stillRunning = err.status === 409 && err.code === "idempotency_key_in_use";
      const answerLost = err.kind === "offline" && navigator.onLine;
      const retry = err.kind === "busy" || (idempotent && (stillRunning || answerLost));
      if (!retry || attempt >= BUSY_RETRIES) throw err;
      const wait = Math.min(10, err.retryAfter || 2);
      setHint(err.kind === "busy" ? `The server is busy: retrying in ${wait} s…` : `Connection trouble: retrying in ${wait} s…`, "warn");
      await sleep(wait * 1000);
      setHint("");
    }
  }
}

async function cut() {
  if (busy || !state.pairing || state.clip) return;
  let photo;
  try {
    photo = takePhoto(); // before any await: the picker needs the click
    setBusy("cut");
    setHint("");
    const blob = await photo;
    const form = new FormData();
    form.append("image_file", blob, "cut.jpg");
    // One key per photo, reused by its retries: a retry after a lost answer gets the same clip back,
    // and the canvas receives it once.
    const key = newIdempotencyKey();
    showProgress(0, "Uploading…");
    const asset = await withBusyRetry(() => upload("/v1/captures", {
      token: state.pairing.phone_token, body: form, headers: { "Idempotency-Key": key },
      onProgress: (f) => showProgress(f, f >= 1 ? "Cutting out the object…" : `Uploading… ${Math.round(f * 100)}%`),
    }), { idempotent: true });
    setClip({ asset_id: asset.asset_id, url: asset.url, width: asset.width, height: asset.height });
    setHint("Now aim the centre at the laptop canvas and press Paste.", "info");
  } catch (err) {
    handleError(err, "cut");
  } finally {
    setBusy(null);
    hideProgress();
  }
}

async function paste() {
  if (busy || !state.pairing || !state.clip) return;
  const clip = state.clip;
  try {
    const photo = takePhoto();
    setBusy("paste");
    setHint("");
    const blob = await photo;
    const form = new FormData();
    form.append("view", blob, "view.jpg");
    showProgress(0, "Sending…");
    const placed = await withBusyRetry(() => upload(`/v1/captures/${encodeURIComponent(clip.asset_id)}/paste`, {
      token: state.pairing.phone_token, body: form,
      onProgress: (f) => showProgress(f, f >= 1 ? "Finding the spot on the screen…" : `Sending… ${Math.round(f * 100)}%`),
    }));
    if (placed?.found) pasted();
  } catch (err) {
    handleError(err, "paste");
  } finally {
    setBusy(null);
    hideProgress();
  }
}

function pasted() {
  // The clip is used up at once (a late asset.placed for it is then ignored); its picture flies off.
  state.clip = null;
  save();
  renderControls();
  els.clipBox.classList.add("gone");
  setHint("Pasted onto the canvas.", "ok");
  els.cameraView.dataset.pasted = String(Number(els.cameraView.dataset.pasted || 0) + 1);
  setTimeout(() => {
    if (!state.clip) setClip(null);
    setTimeout(() => { if (!busy && !state.clip && els.hint.dataset.kind === "ok") setHint(""); }, 2500);
  }, 450);
}

function discard() {
  setClip(null);
  setHint("");
}

function handleError(err, action) {
  if (err?.message === "cancelled" || err?.kind === "aborted") return;
  console.warn(action, "failed:", err);
  switch (err?.kind) {
    case "offline":
      setHint(navigator.onLine
        ? `Cannot reach the server. ${err.message} Check the connection and try again.`
        : "You are offline. Reconnect to Wi-Fi or mobile data, then try again.", "error");
      return;
    case "auth":
      pairingLost("This phone is no longer paired: the pairing ended or expired. Pair again with the code on the laptop.");
      return;
    case "busy":
      setHint("The server is busy. Try again in a moment.", "warn");
      return;
    default:
      break;
  }
  const code = err?.code;
  if (code === "screen_not_found") {
    setHint(`${sentence(err.hint || "the screen was not found")}, then press Paste again.`, "warn");
  } else if (code === "no_screen") {
    setHint(sentence(err.hint || "open the canvas on the laptop"), "warn");
  } else if (code === "asset_not_found") {
    setHint("That clip has expired. Cut it again.", "warn");
    setClip(null);
  } else if (err?.status === 413) {
    setHint("That photo is too large to send.", "error");
  } else if (err?.status === 400 || err?.status === 415) {
    setHint("The photo could not be read. Try again.", "error");
  } else {
    setHint(err?.detail || err?.message || `The ${action} failed. Try again.`, "error");
  }
}

// -- pairing -----------------------------------------------------------------------------------------

const CLAIM_MESSAGES = {
  invalid_code: "That code isn't right. Check it on the laptop and type it again.",
  code_expired: "That code has expired. Press “New code” on the laptop and use the new one.",
  code_used: "That code was already used. Press “New code” on the laptop and use the new one.",
  pairing_full: "That canvas already has as many phones as it can take.",
  pairing_closed: "That canvas's pairing has ended. Reload the canvas on the laptop for a new code.",
};

async function claim(rawCode) {
  const code = rawCode.toUpperCase().replace(/[\s\-_.]/g, "");
  if (!code) { setPairStatus("Type the code shown on the laptop.", "error"); return false; }
  if (busy) return false;
  busy = "pair";
  els.pairBtn.disabled = true;
  setPairStatus("Pairing…");
  try {
    const claimed = await api("/v1/pairings/claim", { method: "POST", json: { code } });
    const previous = state.pairing;
    state.pairing = { pairing_id: claimed.pairing_id, phone_token: claimed.phone_token, device_id: claimed.device_id };
    if (previous?.pairing_id !== claimed.pairing_id) state.clip = null;
    save();
    setPairStatus("Paired.", "ok");
    els.codeInput.value = "";
    toast("Paired with the canvas", { kind: "ok", timeoutMs: 2500 });
    startLive();
    showView("camera");
    setClip(state.clip);
    setHint("Point at an object and press Cut.", "info");
    els.cutBtn.focus({ preventScroll: true });
    return true;
  } catch (err) {
    let text;
    if (err.kind === "offline") text = "Cannot reach the server. Is the phone on the same network as the laptop?";
    else if (err.status === 429) text = `Too many attempts. Wait ${err.retryAfter || 60} s and try again.`;
    else text = CLAIM_MESSAGES[err.code] || err.detail || err.message;
    setPairStatus(text, "error");
    return false;
  } finally {
    busy = null;
    els.pairBtn.disabled = false;
  }
}

function startLive() {
  live?.stop();
  const pairing = state.pairing;
  live = new SyncClient({ token: pairing.phone_token, storageKey: syncKey(pairing.pairing_id), onMessage });
  live.addEventListener("status", (e) => renderConnection(e.detail));
  live.addEventListener("presence", (e) => renderPeer(e.detail));
  live.addEventListener("ended", () => pairingLost("This phone is no longer paired: the pairing ended or expired. Pair again with the code on the laptop."));
  live.start();
}

function onMessage(msg) {
  const data = msg.data || {};
  if (msg.type === "asset.placed" && state.clip && data.asset_id === state.clip.asset_id && busy !== "paste") {
    pasted(); // our paste landed though its answer was lost
  } else if (msg.type === "pairing.closed") {
    pairingLost("The laptop ended the pairing. Pair again with the code on the laptop.");
  }
}

function renderConnection({ state: s }) {
  const text = {
    idle: "Not connected", connecting: "Connecting…", open: "Connected",
    waiting: "Reconnecting…", offline: "Offline", ended: "Not paired",
  }[s] || s;
  els.conn.textContent = text;
  els.conn.dataset.state = s;
}

/** Whether the laptop has the canvas open right now (presence); hidden while we cannot know. */
function renderPeer({ known, peers }) {
  const online = known && peers.some((p) => p.role === "desktop");
  els.peer.hidden = !known;
  els.peer.dataset.state = online ? "online" : "away";
  els.peer.textContent = online ? "Laptop connected" : "Laptop not connected";
  els.peer.title = online ? "" : "Clips wait for the canvas: open /canvas on the laptop.";
}

function pairingLost(message) {
  live?.stop();
  live = null;
  if (state.pairing) localStorage.removeItem(syncKey(state.pairing.pairing_id));
  state.pairing = null;
  setClip(null);
  save();
  setHint("");
  showView("pair");
  setPairStatus(message, "error");
  els.codeInput.focus();
}

async function unpair() {
  const pairing = state.pairing;
  els.menu.close();
  if (!pairing) return;
  try {
    await api(`/v1/pairings/${encodeURIComponent(pairing.pairing_id)}`, { method: "DELETE", token: pairing.phone_token });
  } catch (err) {
    if (err.kind === "offline") { toast("Offline: cannot unpair now.", { kind: "error" }); return; }
  }
  pairingLost("Unpaired. Pair again with the code on the laptop.");
  setPairStatus("Unpaired.", "info");
}

// -- QR scanning inside the app (where the browser can decode QR codes) ---------------------------------

let scanning = null;

async function startScan() {
  try {
    const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
    const media = await navigator.mediaDevices.getUserMedia({ video: { facingMode: { ideal: "environment" } }, audio: false });
    els.scanBox.hidden = false;
    els.scanBtn.hidden = true;
    els.scanVideo.srcObject = media;
    await els.scanVideo.play();
    scanning = { media, timer: null };
    const tick = async () => {
      if (!scanning) return;
      try {
        for (const found of await detector.detect(els.scanVideo)) {
          const code = new URL(found.rawValue, location.href).searchParams.get("code");
          if (code) { stopScan(); await claim(code); return; }
        }
      } catch { /* not a URL, or no frame yet */ }
      scanning.timer = setTimeout(tick, 250);
    };
    tick();
  } catch (err) {
    stopScan();
    setPairStatus(`Cannot scan here (${err.message}). Type the code instead.`, "error");
  }
}

function stopScan() {
  if (scanning) {
    clearTimeout(scanning.timer);
    scanning.media.getTracks().forEach((t) => t.stop());
    scanning = null;
  }
  els.scanBox.hidden = true;
  els.scanBtn.hidden = false;
}

// -- the hold gesture: press and hold the view to cut; release while aiming to paste ------------------

function bindHold() {
  let timer = null;
  let holding = false;
  const ignore = (target) => target.closest(".controls, .top, .hint, .no-camera, button, dialog");
  els.cameraView.addEventListener("pointerdown", (e) => {
    if (ignore(e.target) || busy || !state.pairing) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      holding = true;
      els.cameraView.classList.add("holding");
      if (!state.clip) cut();
    }, HOLD_MS);
  });
  const release = (e) => {
    clearTimeout(timer);
    if (!holding) return;
    holding = false;
    els.cameraView.classList.remove("holding");
    const ready = state.clip && !busy && performance.now() - clipShownAt >= RELEASE_PASTE_MS;
    if (e.type === "pointerup" && ready) paste();
  };
  els.cameraView.addEventListener("pointerup", release);
  els.cameraView.addEventListener("pointercancel", release);
  els.cameraView.addEventListener("contextmenu", (e) => e.preventDefault());
}

// -- start ----------------------------------------------------------------------------------------------

function bind() {
  for (const [key, id] of Object.entries({
    pairView: "pair-view", cameraView: "camera-view", pairForm: "pair-form", codeInput: "code-input", pairBtn: "pair-btn",
    pairStatus: "pair-status", scanBtn: "scan-btn", scanBox: "scan-box", scanVideo: "scan-video", video: "video",
    noCamera: "no-camera", noCameraText: "no-camera-text", retryCamera: "retry-camera", clipBox: "clip-box",
    clipImg: "clip-img", conn: "conn", peer: "peer", hint: "hint", progress: "progress", progressFill: "progress-fill",
    progressText: "progress-text", cutBtn: "cut-btn", pasteBtn: "paste-btn", discardBtn: "discard-btn",
    fileInput: "file-input", cutHelp: "cut-help", menu: "menu", menuPairing: "menu-pairing",
  })) els[key] = document.getElementById(id);

  els.pairForm.addEventListener("submit", (e) => { e.preventDefault(); claim(els.codeInput.value); });
  els.cutBtn.addEventListener("click", cut);
  els.pasteBtn.addEventListener("click", paste);
  els.discardBtn.addEventListener("click", discard);
  els.retryCamera.addEventListener("click", () => { state.usePicker = false; save(); stopCamera(); startCamera(); });
  $("#menu-btn").addEventListener("click", () => {
    els.menuPairing.textContent = state.pairing ? `Paired (${state.pairing.device_id}).` : "Not paired.";
    $("#use-photo").textContent = state.usePicker ? "Use the live camera" : "Use the photo picker instead of the live camera";
    els.menu.showModal();
  });
  $("#menu-close").addEventListener("click", () => els.menu.close());
  $("#unpair-btn").addEventListener("click", unpair);
  $("#use-photo").addEventListener("click", () => {
    state.usePicker = !state.usePicker;
    save();
    els.menu.close();
    stopCamera();
    startCamera();
  });
  if ("BarcodeDetector" in window && navigator.mediaDevices?.getUserMedia) {
    els.scanBtn.hidden = false;
    els.scanBtn.addEventListener("click", startScan);
    $("#scan-stop").addEventListener("click", stopScan);
  }
  bindHold();
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") stopCamera();
    else if (!els.cameraView.hidden) startCamera();
  });
  window.addEventListener("offline", () => renderConnection({ state: "offline" }));
}

async function main() {
  bind();
  registerServiceWorker();
  const params = new URLSearchParams(location.search);
  const code = params.get("code");
  if (code) history.replaceState(null, "", location.pathname); // a code is single-use: keep it out of history
  if (code) {
    showView("pair");
    els.codeInput.value = formatCode(code.toUpperCase());
    const ok = await claim(code);
    if (!ok && state.pairing) { // a stale QR, but this phone is still paired: carry on
      toast(els.pairStatus.textContent, { kind: "warn" });
      startLive();
      showView("camera");
      setClip(state.clip);
    }
    return;
  }
  if (state.pairing) {
    startLive();
    showView("camera");
    setClip(state.clip);
  } else {
    showView("pair");
  }
}

main();
