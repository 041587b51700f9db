// arclip canvas: the desktop companion (SPEC §6).
//
// Coordinates: the stage's CSS pixels, origin top-left. The picture uploaded for localization
// (PUT /v1/pairings/{id}/screen) is rendered at exactly the stage's size, so the x/y of
// asset.placed are stage pixels too. A layer is {x, y} (its centre), {w, h} (its size), rot
// (degrees, clockwise, about the centre), z.

import { api, ApiError, fetchAsset, sleep } from "../shared/api.js";
import { SyncClient } from "../shared/sync.js";
import { local, BlobStore } from "../shared/store.js";
import { $, toast, registerServiceWorker, formatCode } from "../shared/ui.js";

const STATE_KEY = "arclip.canvas.v1";
const syncKey = (pairingId) => `arclip.canvas.sync.${pairingId}`;
const UPLOAD_DEBOUNCE_MS = 400;
const PENDING_MS = 3 * 60 * 1000; // markers stay up this long after a clip or a failed paste
const MAX_CLIPS = 40;
const MIN_SIDE = 24;
const BACKGROUND = "#ffffff";

const blobs = new BlobStore("arclip-canvas", "clips");

const state = Object.assign(
  { pairing: null, layers: [], clips: [], pending: null, nextLayer: 1, phones: 0 },
  local.get(STATE_KEY, {}),
);
let live = null;
let selectedId = null;
let codeTimer = null;
const images = new Map(); // asset_id -> Promise<HTMLImageElement | null>
const els = {};

function save() {
  local.set(STATE_KEY, {
    pairing: state.pairing, layers: state.layers, clips: state.clips, pending: state.pending,
    nextLayer: state.nextLayer, phones: state.phones,
  });
}

// -- the stage -----------------------------------------------------------------------------------

function stageSize() {
  return { w: Math.max(64, Math.round(els.stage.clientWidth)), h: Math.max(64, Math.round(els.stage.clientHeight)) };
}

function layerById(id) {
  return state.layers.find((l) => l.id === id) || null;
}

function clipById(assetId) {
  return state.clips.find((c) => c.asset_id === assetId) || null;
}

function loadImage(assetId) {
  if (images.has(assetId)) return images.get(assetId);
  const promise = (async () => {
    let blob = await blobs.get(assetId);
    if (!blob) {
      const clip = clipById(assetId);
      try {
        blob = await fetchAsset(assetId, { url: clip?.url, token: state.pairing?.desktop_token });
        await blobs.put(assetId, blob);
      } catch (err) {
        console.warn("clip", assetId, "unavailable:", err.message);
        return null;
      }
    }
    const img = new Image();
    img.decoding = "async";
    img.src = URL.createObjectURL(blob);
    try {
      await img.decode();
    } catch {
      return null;
    }
    img.blob = blob;
    return img;
  })();
  images.set(assetId, promise);
  promise.then((img) => { if (!img) images.delete(assetId); }); // let a later call retry
  return promise;
}

function layerLabel(layer) {
  return `Clip ${layer.id}: ${Math.round(layer.w)} by ${Math.round(layer.h)} pixels at ${Math.round(layer.x)}, ${Math.round(layer.y)}` +
    (Math.round(layer.rot) ? `, rotated ${Math.round(layer.rot)} degrees` : "");
}

function layerElement(layer) {
  let el = els.layers.querySelector(`[data-layer="${layer.id}"]`);
  if (el) return el;
  el = document.createElement("div");
  el.className = "layer";
  el.dataset.layer = String(layer.id);
  el.dataset.asset = layer.asset_id;
  el.tabIndex = 0;
  el.setAttribute("role", "img");
  el.setAttribute("aria-roledescription", "clip");
  el.setAttribute("aria-describedby", "stage-help");
  const img = document.createElement("img");
  img.alt = "";
  img.draggable = false;
  const resize = document.createElement("div");
  resize.className = "handle handle-resize";
  resize.dataset.handle = "resize";
  const rotate = document.createElement("div");
  rotate.className = "handle handle-rotate";
  rotate.dataset.handle = "rotate";
  el.append(img, resize, rotate);
  el.addEventListener("pointerdown", onLayerPointerDown);
  el.addEventListener("keydown", onLayerKey);
  el.addEventListener("focus", () => select(layer.id, { focus: false }));
  els.layers.append(el);
  loadImage(layer.asset_id).then((image) => {
    if (image) img.src = image.src;
    else el.classList.add("missing");
  });
  return el;
}

function renderLayer(layer) {
  const el = layerElement(layer);
  el.style.left = `${layer.x - layer.w / 2}px`;
  el.style.top = `${layer.y - layer.h / 2}px`;
  el.style.width = `${layer.w}px`;
  el.style.height = `${layer.h}px`;
  el.style.rotate = `${layer.rot}deg`;
  el.style.zIndex = String(layer.z);
  el.dataset.x = layer.x.toFixed(1);
  el.dataset.y = layer.y.toFixed(1);
  el.classList.toggle("selected", layer.id === selectedId);
  el.setAttribute("aria-label", layerLabel(layer));
  return el;
}

function renderLayers() {
  const ids = new Set(state.layers.map((l) => String(l.id)));
  for (const el of [...els.layers.children]) if (!ids.has(el.dataset.layer)) el.remove();
  for (const layer of state.layers) renderLayer(layer);
  els.empty.hidden = state.layers.length > 0 || Boolean(state.pending);
  els.selection.hidden = selectedId === null;
}

function select(id, { focus = true } = {}) {
  selectedId = id;
  renderLayers();
  if (id !== null && focus) els.layers.querySelector(`[data-layer="${id}"]`)?.focus({ preventScroll: true });
}

function changed({ upload = true } = {}) {
  save();
  renderLayers();
  if (upload) schedulePictureUpload();
}

function topZ() {
  return state.layers.reduce((z, l) => Math.max(z, l.z), 0) + 1;
}

function addLayer(assetId, x, y, w, h, rot = 0, fromMessage = null) {
  const layer = { id: state.nextLayer++, asset_id: assetId, x, y, w, h, rot, z: topZ(), from: fromMessage };
  state.layers.push(layer);
  changed();
  return layer;
}

function removeLayer(id) {
  state.layers = state.layers.filter((l) => l.id !== id);
  if (selectedId === id) selectedId = null;
  changed();
  toast("Clip removed from the canvas", { action: null, timeoutMs: 2500 });
}

/** A natural size for a clip: its pixels times the paste's scale, kept within the stage. */
function naturalSize(clip, scale) {
  const { w: sw, h: sh } = stageSize();
  let w = clip.width * (scale > 0 ? scale : 1);
  let h = clip.height * (scale > 0 ? scale : 1);
  const longest = Math.max(w, h);
  const maxSide = 0.9 * Math.min(sw, sh);
  const minSide = 48;
  const fit = longest > maxSide ? maxSide / longest : longest < minSide ? minSide / longest : 1;
  return { w: w * fit, h: h * fit };
}

// -- pointer and keyboard editing ------------------------------------------------------------------

function stagePoint(event) {
  const rect = els.stage.getBoundingClientRect();
  const { w, h } = stageSize();
  return { x: (event.clientX - rect.left) * (w / rect.width), y: (event.clientY - rect.top) * (h / rect.height) };
}

function onLayerPointerDown(event) {
  if (event.button !== 0) return;
  const el = event.currentTarget;
  const layer = layerById(Number(el.dataset.layer));
  if (!layer) return;
  event.preventDefault();
  event.stopPropagation();
  select(layer.id);
  const mode = event.target.dataset.handle || "move";
  const start = stagePoint(event);
  const orig = { ...layer };
  const startAngle = Math.atan2(start.y - layer.y, start.x - layer.x);
  const startDist = Math.max(1, Math.hypot(start.x - layer.x, start.y - layer.y));
  el.setPointerCapture(event.pointerId);
  el.classList.add("dragging");
  const move = (e) => {
    const p = stagePoint(e);
    if (mode === "move") {
      layer.x = orig.x + (p.x - start.x);
      layer.y = orig.y + (p.y - start.y);
    } else if (mode === "resize") {
      const f = Math.hypot(p.x - orig.x, p.y - orig.y) / startDist;
      const s = Math.max(f, MIN_SIDE / Math.min(orig.w, orig.h));
      layer.w = orig.w * s;
      layer.h = orig.h * s;
    } else {
      let rot = orig.rot + (Math.atan2(p.y - orig.y, p.x - orig.x) - startAngle) * 180 / Math.PI;
      if (e.shiftKey) rot = Math.round(rot / 15) * 15;
      layer.rot = normAngle(rot);
    }
    renderLayer(layer);
  };
  const up = () => {
    el.removeEventListener("pointermove", move);
    el.removeEventListener("pointerup", up);
    el.removeEventListener("pointercancel", up);
    el.classList.remove("dragging");
    if (layer.x !== orig.x || layer.y !== orig.y || layer.w !== orig.w || layer.rot !== orig.rot) changed();
  };
  el.addEventListener("pointermove", move);
  el.addEventListener("pointerup", up);
  el.addEventListener("pointercancel", up);
}

function normAngle(deg) {
  let a = ((deg + 180) % 360 + 360) % 360 - 180;
  if (Math.abs(a) < 1e-6) a = 0;
  return a;
}

function onLayerKey(event) {
  const layer = layerById(Number(event.currentTarget.dataset.layer));
  if (!layer) return;
  const step = event.shiftKey ? 10 : 1;
  let handled = true;
  switch (event.key) {
    case "ArrowLeft": layer.x -= step; break;
    case "ArrowRight": layer.x += step; break;
    case "ArrowUp": layer.y -= step; break;
    case "ArrowDown": layer.y += step; break;
    case "+": case "=": layer.w *= 1.1; layer.h *= 1.1; break;
    case "-": case "_":
      if (Math.min(layer.w, layer.h) / 1.1 >= MIN_SIDE) { layer.w /= 1.1; layer.h /= 1.1; }
      break;
    case "[": layer.rot = normAngle(layer.rot - (event.shiftKey ? 15 : 5)); break;
    case "]": layer.rot = normAngle(layer.rot + (event.shiftKey ? 15 : 5)); break;
    case "Delete": case "Backspace": removeLayer(layer.id); els.stage.focus(); event.preventDefault(); return;
    case "Escape": select(null); els.stage.focus(); break;
    case "PageUp": layer.z = topZ(); break;
    case "c":
      if (event.ctrlKey || event.metaKey) { copyClip(layer.asset_id); break; }
      handled = false; break;
    default: handled = false;
  }
  if (handled) {
    event.preventDefault();
    changed();
  }
}

// -- the picture: what the locator sees ---------------------------------------------------------------

let patternImage = null; // {key, promise}

function patternUrl(w, h) {
  return `/v1/fiducials.png?w=${w}&h=${h}`;
}

function loadPattern(w, h) {
  const key = `${w}x${h}`;
  if (patternImage?.key === key) return patternImage.promise;
  const img = new Image();
  img.src = patternUrl(w, h);
  const promise = img.decode().then(() => img, () => null);
  patternImage = { key, promise };
  return promise;
}

function showPending() {
  return Boolean(state.pending && state.pending.until > Date.now());
}

function renderPattern() {
  const on = showPending();
  const { w, h } = stageSize();
  els.pending.hidden = !on;
  els.pattern.hidden = !on;
  if (on) {
    const url = patternUrl(w, h);
    if (els.pattern.getAttribute("src") !== url) els.pattern.src = url;
    els.pattern.style.width = `${w}px`;
    els.pattern.style.height = `${h}px`;
  }
  els.empty.hidden = state.layers.length > 0 || on;
  els.stage.dataset.pending = on ? "true" : "false";
}

/** Draw the canvas (and the markers, when asked) at the stage's size. */
async function renderPicture({ markers = false, pixelRatio = 1 } = {}) {
  const { w, h } = stageSize();
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(w * pixelRatio);
  canvas.height = Math.round(h * pixelRatio);
  const ctx = canvas.getContext("2d");
  ctx.scale(pixelRatio, pixelRatio);
  ctx.fillStyle = BACKGROUND;
  ctx.fillRect(0, 0, w, h);
  ctx.imageSmoothingQuality = "high";
  const ordered = [...state.layers].sort((a, b) => a.z - b.z);
  const loaded = await Promise.all(ordered.map((l) => loadImage(l.asset_id)));
  ordered.forEach((layer, i) => {
    const img = loaded[i];
    if (!img) return;
    ctx.save();
    ctx.translate(layer.x, layer.y);
    ctx.rotate(layer.rot * Math.PI / 180);
    ctx.drawImage(img, -layer.w / 2, -layer.h / 2, layer.w, layer.h);
    ctx.restore();
  });
  if (markers) {
    const pattern = await loadPattern(w, h);
    if (pattern) {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(pattern, 0, 0, w, h);
    }
  }
  return canvas;
}

function canvasBlob(canvas, type = "image/png", quality) {
  return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("encode failed"))), type, quality));
}

const uploader = { timer: null, running: false, again: false, failures: 0 };

function schedulePictureUpload(delay = UPLOAD_DEBOUNCE_MS) {
  clearTimeout(uploader.timer);
  uploader.timer = setTimeout(() => { uploader.timer = null; uploadPicture(); }, delay);
}

async function uploadPicture() {
  if (!state.pairing) return;
  if (uploader.running) { uploader.again = true; return; }
  uploader.running = true;
  uploader.again = false;
  const pairing = state.pairing;
  const markers = showPending();
  try {
    const blob = await canvasBlob(await renderPicture({ markers }));
    await api(`/v1/pairings/${encodeURIComponent(pairing.pairing_id)}/screen?fiducials=${markers}`, {
      method: "PUT", token: pairing.desktop_token, body: blob, headers: { "Content-Type": "image/png" }, timeoutMs: 60000,
    });
    uploader.failures = 0;
    els.stage.dataset.uploaded = markers ? "markers" : "plain";
  } catch (err) {
    if (err instanceof ApiError && err.kind === "auth") {
      pairingLost("The pairing ended.");
    } else if (err instanceof ApiError && err.kind !== "http") { // offline or busy: try again
      uploader.failures += 1;
      const wait = err.retryAfter ? err.retryAfter * 1000 : Math.min(15000, 1000 * 2 ** uploader.failures);
      schedulePictureUpload(wait);
    } else {
      console.warn("screen picture refused:", err.message);
    }
  } finally {
    uploader.running = false;
    if (uploader.again) schedulePictureUpload(0);
  }
}

function setPending(assetId) {
  state.pending = assetId ? { asset_id: assetId, until: Date.now() + PENDING_MS } : null;
  save();
  renderPattern();
  renderLayers();
  schedulePictureUpload(0);
}

function checkPendingExpiry() {
  if (state.pending && state.pending.until <= Date.now()) setPending(null);
}

// -- clips ---------------------------------------------------------------------------------------------

function rememberClip(data) {
  if (!clipById(data.asset_id)) {
    state.clips.unshift({
      asset_id: data.asset_id, width: data.width, height: data.height, bbox: data.bbox || null,
      url: data.url || null, received_at: Date.now(),
    });
    const dropped = state.clips.splice(MAX_CLIPS);
    for (const c of dropped) {
      if (!state.layers.some((l) => l.asset_id === c.asset_id)) blobs.delete(c.asset_id);
    }
  }
  save();
  renderClips();
}

function renderClips() {
  els.clipsEmpty.hidden = state.clips.length > 0;
  const list = els.clipList;
  list.replaceChildren();
  state.clips.forEach((clip, i) => {
    const li = document.createElement("li");
    li.dataset.asset = clip.asset_id;
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = `Clip ${state.clips.length - i}`;
    loadImage(clip.asset_id).then((image) => { if (image) img.src = image.src; });
    const actions = document.createElement("div");
    actions.className = "actions";
    const button = (label, aria, run) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "btn btn-small btn-quiet";
      b.textContent = label;
      b.setAttribute("aria-label", `${aria} clip ${state.clips.length - i}`);
      b.addEventListener("click", run);
      actions.append(b);
    };
    button("Place", "Place", () => placeInCentre(clip));
    button("Copy", "Copy", () => copyClip(clip.asset_id));
    button("Download", "Download", () => downloadClip(clip.asset_id));
    li.append(img, actions);
    list.append(li);
  });
}

function placeInCentre(clip) {
  const { w, h } = stageSize();
  const size = naturalSize(clip, Math.min(1, (0.4 * Math.min(w, h)) / Math.max(clip.width, clip.height)));
  const layer = addLayer(clip.asset_id, w / 2, h / 2, size.w, size.h);
  select(layer.id);
}

async function clipBlob(assetId) {
  const img = await loadImage(assetId);
  if (!img) throw new Error("This clip is no longer available.");
  return img.blob;
}

async function copyClip(assetId) {
  try {
    if (!navigator.clipboard?.write || typeof ClipboardItem === "undefined") throw new Error("unsupported");
    // Safari wants the promise inside the item, created within the click.
    await navigator.clipboard.write([new ClipboardItem({ "image/png": clipBlob(assetId) })]);
    toast("Clip copied to the clipboard", { kind: "ok", timeoutMs: 2500 });
  } catch (err) {
    toast(`Could not copy here (${err.message}): use Download instead.`, { kind: "warn" });
  }
}

function saveBlob(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

async function downloadClip(assetId) {
  try {
    saveBlob(await clipBlob(assetId), `arclip-${assetId}.png`);
  } catch (err) {
    toast(err.message, { kind: "error" });
  }
}

async function exportCanvas() {
  const canvas = await renderPicture({ markers: false, pixelRatio: Math.min(2, window.devicePixelRatio || 1) });
  const stamp = new Date().toISOString().replace(/[:T]/g, "-").slice(0, 19);
  saveBlob(await canvasBlob(canvas), `arclip-canvas-${stamp}.png`);
}

// -- live messages ----------------------------------------------------------------------------------------

async function onMessage(msg) {
  const data = msg.data || {};
  switch (msg.type) {
    case "asset.created":
      rememberClip(data);
      loadImage(data.asset_id); // fetch now, in the background: the paste usually follows
      setPending(data.asset_id);
      toast("New clip: aim your phone at the canvas and paste", { timeoutMs: 3500 });
      break;
    case "asset.placed": {
      if (state.layers.some((l) => l.from === msg.id)) break; // already placed (replayed)
      const clip = clipById(data.asset_id) || { asset_id: data.asset_id, width: 200, height: 200 };
      if (!clipById(data.asset_id)) rememberClip(clip);
      const size = naturalSize(clip, Number(data.scale) || 1);
      const rot = normAngle(-(Number(data.rotation_deg) || 0)); // counter-clockwise on screen -> CSS clockwise
      const layer = addLayer(data.asset_id, Number(data.x), Number(data.y), size.w, size.h, rot, msg.id);
      const el = renderLayer(layer);
      el.classList.add("arrive");
      el.addEventListener("animationend", () => el.classList.remove("arrive"), { once: true });
      if (!state.pending || state.pending.asset_id === data.asset_id) setPending(null);
      break;
    }
    case "paste.failed":
      toast(`Paste missed: ${data.hint || "the screen was not recognised"}`, { kind: "warn", timeoutMs: 6000 });
      setPending(data.asset_id || state.pending?.asset_id || "retry"); // markers help the next try
      break;
    case "peer.joined":
      if (data.role === "phone") {
        state.phones += 1;
        codeUsed();
        save();
        toast("Phone paired", { kind: "ok", timeoutMs: 2500 });
        renderPairing();
      }
      break;
    case "peer.left":
      if (data.role === "phone") {
        state.phones = Math.max(0, state.phones - 1);
        save();
        toast("A phone left the pairing", { timeoutMs: 3000 });
        renderPairing();
      }
      break;
    case "pairing.closed":
      pairingLost(`The pairing was ${data.state || "closed"}.`);
      break;
    default:
      break;
  }
}

function onResync(snapshot) {
  // The messages we missed are gone; the snapshot has the pairing's state (and, where the server
  // offers it, its recent clips: {"assets": [...]} or {"assets": {"assets"|"recent"|"items": [...]}}).
  // Layers are the canvas's own (the server keeps no placements): a resync leaves them be, and
  // clips already in the list stay (they are kept locally, past the server's retention, as they
  // would be had we never been away); only what we missed is added.
  const devices = snapshot?.pairing?.devices || snapshot?.devices;
  if (Array.isArray(devices)) {
    const phones = devices.filter((d) => d.role === "phone").length;
    if (phones > state.phones) codeUsed(); // a missed peer.joined: our code was used (as refreshPairing)
    state.phones = phones;
    save();
    renderPairing();
  }
  const section = snapshot?.assets;
  const recent = Array.isArray(section) ? section : section?.assets || section?.recent || section?.items;
  let recovered = 0;
  let newest = null;
  if (Array.isArray(recent)) {
    // The snapshot lists the assets oldest first (sync/assets AssetService.snapshot) and
    // rememberClip() puts each clip at the top of the list, as asset.created does: adding them in
    // the snapshot's order leaves the newest on top, as if the messages had arrived live.
    for (const asset of recent) {
      if (asset?.asset_id && !clipById(asset.asset_id)) { rememberClip(asset); recovered += 1; newest = asset; }
    }
  }
  // A clip cut while we were away may be about to be pasted: show the markers for the newest one,
  // as its asset.created would have, unless it is older than that would have lasted.
  if (newest && !(Date.parse(newest.created_at) < Date.now() - PENDING_MS)) setPending(newest.asset_id);
  toast(recovered
    ? `Reconnected after a long break: ${recovered} clip${recovered > 1 ? "s" : ""} recovered.`
    : "Reconnected after a long break: some earlier updates were skipped.", { kind: "warn" });
}

// -- pairing ----------------------------------------------------------------------------------------------

function startLive() {
  live?.stop();
  const pairing = state.pairing;
  live = new SyncClient({ token: pairing.desktop_token, storageKey: syncKey(pairing.pairing_id), onMessage });
  live.addEventListener("status", (e) => renderConnection(e.detail));
  live.addEventListener("presence", () => renderPeer());
  live.addEventListener("ended", () => pairingLost("The pairing ended."));
  live.addEventListener("resync", (e) => onResync(e.detail.snapshot));
  live.start();
}

function renderConnection({ state: s, retryInMs }) {
  const text = {
    idle: "Not connected", connecting: "Connecting…", open: "Live",
    waiting: `Reconnecting${retryInMs ? ` in ${Math.ceil(retryInMs / 1000)} s` : "…"}`,
    offline: "Offline: clips arrive when back online", ended: "Pairing ended",
  }[s] || s;
  els.conn.textContent = text;
  els.conn.dataset.state = s;
}

async function openPairing() {
  try {
    const opened = await api("/v1/pairings", { method: "POST" });
    state.pairing = {
      pairing_id: opened.pairing_id, desktop_token: opened.desktop_token, device_id: opened.device_id,
      code: opened.code, qr_url: opened.qr_url, expires_at: opened.expires_at,
    };
    state.phones = 0;
    save();
    renderPairing();
    startLive();
    schedulePictureUpload(0);
  } catch (err) {
    renderConnection({ state: "offline" });
    const wait = err.retryAfter ? err.retryAfter * 1000 : 5000;
    toast(`Could not open a pairing (${err.message}). Retrying…`, { kind: "error", timeoutMs: wait });
    await sleep(wait);
    if (!state.pairing) return openPairing();
  }
}

async function refreshPairing() {
  const pairing = state.pairing;
  try {
    const info = await api(`/v1/pairings/${encodeURIComponent(pairing.pairing_id)}`, { token: pairing.desktop_token });
    const phones = info.devices.filter((d) => d.role === "phone").length;
    if (phones > state.phones) codeUsed(); // a phone joined while we were away: with our code
    state.phones = phones;
    save();
    renderPairing();
  } catch (err) {
    if (err.kind === "auth" || err.status === 404) pairingLost("The previous pairing has ended.");
  }
}

async function newCode() {
  const pairing = state.pairing;
  if (!pairing) return openPairing();
  try {
    const issued = await api(`/v1/pairings/${encodeURIComponent(pairing.pairing_id)}/code`, {
      method: "POST", token: pairing.desktop_token,
    });
    Object.assign(pairing, { code: issued.code, qr_url: issued.qr_url, expires_at: issued.expires_at });
    save();
    renderPairing();
  } catch (err) {
    if (err.kind === "auth" || err.status === 404 || err.status === 409) pairingLost("The pairing has ended.");
    else toast(`No new code: ${err.message}`, { kind: "error" });
  }
}

let losing = false;

async function pairingLost(reason, { quiet = false } = {}) {
  if (losing) return;
  losing = true;
  try {
    live?.stop();
    live = null;
    if (state.pairing) localStorage.removeItem(syncKey(state.pairing.pairing_id));
    state.pairing = null;
    state.phones = 0;
    state.pending = null; // no phone is about to paste
    save();
    renderPattern();
    renderLayers();
    renderConnection({ state: "ended" });
    if (!quiet) toast(`${reason} Showing a new code to pair again.`, { kind: "warn", timeoutMs: 6000 });
    await openPairing();
  } finally {
    losing = false;
  }
}

async function unpair() {
  const pairing = state.pairing;
  if (!pairing) return;
  if (!confirm("Unpair every phone from this canvas? Your clips stay on the canvas.")) return;
  live?.stop(); // our own pairing.closed needs no second notice
  try {
    await api(`/v1/pairings/${encodeURIComponent(pairing.pairing_id)}`, { method: "DELETE", token: pairing.desktop_token });
  } catch (err) {
    if (err.kind === "offline") { toast("Offline: cannot unpair now.", { kind: "error" }); startLive(); return; }
  }
  await pairingLost("Unpaired.");
}

/** A code is single-use: once a phone has joined with it, it is of no use to show. */
function codeUsed() {
  if (state.pairing) {
    state.pairing.code = null;
    state.pairing.showCode = false;
  }
}

function codeValid(pairing) {
  return Boolean(pairing?.code && Date.parse(pairing.expires_at) > Date.now());
}

function renderPairing() {
  const pairing = state.pairing;
  const showCode = codeValid(pairing) && (state.phones === 0 || pairing.showCode);
  els.pairingOpen.hidden = !showCode;
  els.pairing.dataset.state = showCode ? "code" : "paired";
  els.pairingDone.hidden = showCode;
  if (showCode) {
    els.code.textContent = formatCode(pairing.code);
    els.code.dataset.code = pairing.code;
    const qrSrc = `/v1/qr.svg?data=${encodeURIComponent(pairing.qr_url)}`;
    if (els.qr.getAttribute("src") !== qrSrc) els.qr.src = qrSrc;
    const target = new URL(pairing.qr_url);
    els.captureUrl.textContent = target.origin + "/capture";
    els.reachWarning.hidden = false;
    if (/^(localhost|127\.|\[::1\]$|0\.0\.0\.0$)/.test(target.hostname)) {
      const command = document.createElement("code");
      command.textContent = "arclip serve --host 0.0.0.0";
      els.reachWarning.replaceChildren("A phone cannot open this address. Start the server with ", command,
        " and open this page at the laptop's network address (or set ARCLIP_PUBLIC_URL).");
    } else if (target.protocol === "http:") {
      els.reachWarning.textContent = "Over http:// phones take photos with the camera app; serve over https for the live camera view.";
    } else {
      els.reachWarning.hidden = true;
    }
  } else {
    els.pairingDone.textContent = state.phones > 0
      ? `Paired with ${state.phones} phone${state.phones > 1 ? "s" : ""}. Use “New code” to add another.`
      : "The code has lapsed: press “New code” to pair a phone.";
  }
  els.btnUnpair.hidden = state.phones === 0;
  els.phones.textContent = state.phones > 0 ? `${state.phones} phone${state.phones > 1 ? "s" : ""} paired` : "No phone paired";
  els.phones.dataset.state = state.phones > 0 ? "paired" : "none";
  els.btnPair.textContent = state.phones > 0 ? "Add a phone" : "Pair a phone";
  renderPeer();
  tickCode();
}

/** Whether a phone has the capture app open right now (presence), beside how many are paired. */
function renderPeer() {
  const known = Boolean(live?.presenceKnown);
  const online = known ? [...live.peers.values()].filter((p) => p.role === "phone").length : 0;
  // Unknown while our own socket is down (the connection pill says so); nothing to say before a phone pairs.
  els.peer.hidden = !known || (state.phones === 0 && online === 0);
  els.peer.dataset.state = online > 0 ? "online" : "away";
  els.peer.textContent = online > 1 ? `${online} phones connected` : online === 1 ? "Phone connected" : "Phone not connected";
}

function tickCode() {
  clearTimeout(codeTimer);
  const pairing = state.pairing;
  if (!pairing?.code) return;
  const left = Math.round((Date.parse(pairing.expires_at) - Date.now()) / 1000);
  if (left <= 0) {
    if (state.phones === 0) {
      // An unclaimed pairing lapses with its code: start a fresh one while someone is looking.
      if (document.visibilityState === "visible") pairingLost("The code lapsed.", { quiet: true });
      return;
    }
    pairing.showCode = false;
    renderPairing();
    return;
  }
  els.codeExpiry.textContent = `Code valid for ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  codeTimer = setTimeout(tickCode, 1000);
}

// -- start ------------------------------------------------------------------------------------------------

function bind() {
  for (const [key, id] of Object.entries({
    stage: "stage", layers: "layers", pattern: "pattern", empty: "empty", conn: "conn", phones: "phones", peer: "peer",
    pending: "pending", pairing: "pairing", pairingOpen: "pairing-open", pairingDone: "pairing-done",
    qr: "qr", code: "code", reachWarning: "reach-warning", codeExpiry: "code-expiry", captureUrl: "capture-url", selection: "selection",
    clipList: "clip-list", clipsEmpty: "clips-empty", btnPair: "btn-pair", btnUnpair: "btn-unpair",
  })) els[key] = document.getElementById(id);

  $("#btn-export").addEventListener("click", exportCanvas);
  $("#btn-new-code").addEventListener("click", () => { if (state.pairing) state.pairing.showCode = true; newCode(); });
  els.btnPair.addEventListener("click", () => {
    if (state.pairing) state.pairing.showCode = true;
    if (codeValid(state.pairing)) renderPairing();
    else newCode();
    els.pairing.scrollIntoView({ block: "nearest" });
  });
  els.btnUnpair.addEventListener("click", unpair);
  $("#btn-hide-pattern").addEventListener("click", () => setPending(null));
  $("#btn-copy").addEventListener("click", () => { const l = layerById(selectedId); if (l) copyClip(l.asset_id); });
  $("#btn-download").addEventListener("click", () => { const l = layerById(selectedId); if (l) downloadClip(l.asset_id); });
  $("#btn-front").addEventListener("click", () => { const l = layerById(selectedId); if (l) { l.z = topZ(); changed(); } });
  $("#btn-delete").addEventListener("click", () => { if (selectedId !== null) removeLayer(selectedId); });
  els.stage.addEventListener("pointerdown", (e) => { if (e.target === els.stage || e.target === els.layers) select(null); });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.pending && document.activeElement === document.body) setPending(null);
  });
  new ResizeObserver(() => { renderPattern(); schedulePictureUpload(); }).observe(els.stage);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") { checkPendingExpiry(); tickCode(); }
  });
  setInterval(checkPendingExpiry, 5000);
  let warnedTabs = false;
  window.addEventListener("storage", (e) => {
    if (e.key !== STATE_KEY || warnedTabs) return;
    warnedTabs = true;
    toast("This canvas is open in another tab too: use one, or their clips will overwrite each other.", { kind: "warn", timeoutMs: 8000 });
  });
}

async function main() {
  bind();
  registerServiceWorker();
  // For debugging and tests: the state, and whether the latest picture has been uploaded.
  window.arclipCanvas = { state, stageSize, renderPicture, uploadIdle: () => !uploader.running && uploader.timer === null };
  renderLayers();
  renderClips();
  renderPattern();
  if (state.pairing) {
    renderPairing();
    startLive();
    refreshPairing();
    schedulePictureUpload(0);
  } else {
    renderConnection({ state: "connecting" });
    await openPairing();
  }
}

main();
