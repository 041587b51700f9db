// Small UI helpers: toasts announced to screen readers, element lookup, service worker.

export const $ = (selector, root = document) => root.querySelector(selector);

let toastRegion = null;

/** Show a short message. kind: "info" | "ok" | "warn" | "error". Announced via aria-live. */
export function toast(message, { kind = "info", timeoutMs = 4500, action = null } = {}) {
  toastRegion ||= document.getElementById("toasts");
  if (!toastRegion) return null;
  const el = document.createElement("div");
  el.className = `toast toast-${kind}`;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  const text = document.createElement("span");
  text.textContent = message;
  el.append(text);
  if (action) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = action.label;
    button.addEventListener("click", () => { action.run(); el.remove(); });
    el.append(button);
  }
  const close = document.createElement("button");
  close.type = "button";
  close.className = "toast-close";
  close.setAttribute("aria-label", "Dismiss");
  close.textContent = "×";
  close.addEventListener("click", () => el.remove());
  el.append(close);
  toastRegion.append(el);
  while (toastRegion.children.length > 4) toastRegion.firstElementChild.remove();
  if (timeoutMs) setTimeout(() => el.remove(), timeoutMs);
  return el;
}

/** Register the app's service worker (installable, works offline); never fatal. */
export function registerServiceWorker(url = "./sw.js") {
  if (!("serviceWorker" in navigator) || !window.isSecureContext) return;
  navigator.serviceWorker.register(url, { scope: "./" }).catch((err) => console.warn("service worker:", err));
}

/** "ABCD2345" -> "ABCD-2345" for reading aloud and typing. */
export function formatCode(code) {
  return code && code.length > 4 ? `${code.slice(0, Math.ceil(code.length / 2))}-${code.slice(Math.ceil(code.length / 2))}` : code || "";
}
