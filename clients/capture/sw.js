// arclip capture service worker: makes the capture app installable and lets it open offline.
// Network first (a deploy shows at once), the cache when the network fails. The API (/v1/) is never cached.
const CACHE = "arclip-capture-v1";
const SHELL = [
  "./", "./index.html", "./app.js", "./style.css", "./manifest.webmanifest", "./icon.svg", "./icon-192.png", "./icon-512.png",
  "../shared/api.js", "../shared/sync.js", "../shared/store.js", "../shared/ui.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) if (key.startsWith("arclip-capture-") && key !== CACHE) await caches.delete(key);
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (!url.pathname.startsWith("/capture/") && !url.pathname.startsWith("/shared/")) return;
  event.respondWith((async () => {
    try {
      const response = await fetch(request);
      if (response.ok) {
        const cache = await caches.open(CACHE);
        cache.put(request, response.clone());
      }
      return response;
    } catch (err) {
      const cached = await caches.match(request, { ignoreSearch: true });
      if (cached) return cached;
      throw err;
    }
  })());
});
