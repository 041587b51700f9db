// The live channel (WS /v1/sync, protocol in sync/hub/session.py), for either device.
//
//   const live = new SyncClient({ token, storageKey, onMessage: async (msg) => {...} });
//   live.addEventListener("status", (e) => e.detail.state);   // connecting | open | waiting | offline | ended
//   live.addEventListener("ended", (e) => e.detail.code);     // 4401/4403/4410: the pairing is over for us
//   live.addEventListener("resync", (e) => e.detail.snapshot);
//   live.addEventListener("presence", (e) => e.detail);  // {known, peers: [{device_id, role}]}: who else is connected
//   live.start(); ... live.stop();
//
// Guarantees to `onMessage`: messages in id order, each at most once per page (ids at or below the
// last one handled are dropped), and handled before they are acked. The last handled id is kept
// in localStorage and sent as `resume` on every connection, so a reload or a reconnect misses
// nothing; the server's ack also survives a lost localStorage.
//
// Presence (`peers`): the pairing's other devices connected right now. The server lists them in
// `hello` and reports changes as `peer.online` / `peer.offline` control frames (never replayed, see
// sync/hub/session.py); while our own socket is down we do not know, so `known` is false.

const NO_RECONNECT = new Set([4401, 4403, 4410]);

export class SyncClient extends EventTarget {
  constructor({ token, storageKey, onMessage, url = null, minDelayMs = 500, maxDelayMs = 15000 }) {
    super();
    this.token = token;
    this.storageKey = storageKey;
    this.onMessage = onMessage;
    this.url = url || SyncClient.defaultUrl(token);
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.state = "idle";
    this.hello = null;
    this.peers = new Map(); // device_id -> {device_id, role}, valid while `presenceKnown`
    this.presenceKnown = false;
    this.ws = null;
    this.attempt = 0;
    this.stopped = true;
    this.queue = Promise.resolve();
    this.lastSeen = this.loadLastId(); // highest id queued for handling
    this.lastHandled = this.lastSeen; // highest id handled (persisted, acked)
    this.resyncedAt = null; // id of the resync handled on the current connection, if any
    this.retryTimer = null;
    this.watchdog = null;
    this.idleTimeoutMs = 60000;
    this.onOnline = () => this.kick();
    this.onOffline = () => this.dropForOffline();
    this.onVisible = () => { if (document.visibilityState === "visible") this.kick(); };
  }

  static defaultUrl(token) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/v1/sync?token=${encodeURIComponent(token)}`;
  }

  loadLastId() {
    const raw = this.storageKey ? localStorage.getItem(this.storageKey) : null;
    const n = raw === null ? NaN : Number(raw);
    return Number.isInteger(n) && n >= 0 ? n : null;
  }

  saveLastId(id) {
    if (this.storageKey) localStorage.setItem(this.storageKey, String(id));
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    document.addEventListener("visibilitychange", this.onVisible);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    document.removeEventListener("visibilitychange", this.onVisible);
    clearTimeout(this.retryTimer);
    clearTimeout(this.watchdog);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try { ws.close(1000, "bye"); } catch { /* already closed */ }
    }
    this.setState("idle");
  }

  /** Reconnect now if we are waiting to (the network came back, the tab became visible). */
  kick() {
    if (this.stopped || this.state === "open" || this.state === "connecting" || this.state === "ended") return;
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    this.connect();
  }

  /** The device lost its network: a socket that looks open is dead; say so now, reconnect when back. */
  dropForOffline() {
    if (this.stopped || this.state === "ended") return;
    clearTimeout(this.retryTimer);
    clearTimeout(this.watchdog);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      try { ws.close(4000, "offline"); } catch { /* ignore */ }
    }
    this.setState("offline");
  }

  setState(state, extra = {}) {
    if (state !== "open" && this.presenceKnown) this.setPresence(null); // our socket is down: we no longer know
    this.state = state;
    this.dispatchEvent(new CustomEvent("status", { detail: { state, ...extra } }));
  }

  connect() {
    if (this.stopped) return;
    if (!navigator.onLine) {
      this.setState("offline");
      return; // the "online" event calls kick()
    }
    this.setState("connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleRetry(1006);
      return;
    }
    this.ws = ws;
    ws.onmessage = (event) => { if (this.ws === ws) this.onFrame(event.data); };
    ws.onclose = (event) => { if (this.ws === ws) this.onClose(event.code, event.reason); };
    ws.onerror = () => { /* onclose follows with the code */ };
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  armWatchdog() {
    // The server pings every heartbeat_s; silence for longer than its idle timeout means a dead
    // connection the browser has not noticed (sleep, network change): drop it and reconnect.
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      if (this.ws) {
        try { this.ws.close(4000, "silent"); } catch { /* ignore */ }
        const ws = this.ws;
        this.ws = null;
        ws.onclose = null;
        this.scheduleRetry(4408);
      }
    }, this.idleTimeoutMs + 5000);
  }

  onFrame(text) {
    let frame;
    try { frame = JSON.parse(text); } catch { return; }
    this.armWatchdog();
    if (!frame || typeof frame.type !== "string") return;
    if (frame.id === null || frame.id === undefined) {
      this.onControl(frame);
      return;
    }
    const id = frame.id;
    if (frame.type === "resync") {
      // What we asked for is gone; the snapshot stands in for it, then messages after last_id follow.
      // One gap can be answered twice on a connection: the server starts replaying from its stored
      // ack as soon as it says hello, and our resume restarts that replay, which hits the trimmed
      // history again. A later resync on the same connection that takes us no further than where
      // we already are is that duplicate: ack it, do not hand it on.
      if (this.resyncedAt !== null && this.lastSeen !== null && id <= this.lastSeen) {
        this.send({ type: "ack", id: this.lastHandled ?? id });
        return;
      }
      this.resyncedAt = id;
      this.lastSeen = id;
      // "reset": our ids belong to a log the server no longer has (its store lost it); the
      // snapshot replaces our state and its ids start again from here, even if lower than ours.
      if ((frame.data || {}).reason === "reset") this.lastHandled = null;
      this.enqueue(id, () => this.dispatchEvent(new CustomEvent("resync", { detail: frame.data || {} })));
      return;
    }
    if (this.lastSeen !== null && id <= this.lastSeen) { // a replay we already have
      this.send({ type: "ack", id: this.lastHandled ?? id });
      return;
    }
    this.lastSeen = id;
    this.enqueue(id, () => this.onMessage(frame));
  }

  enqueue(id, work) {
    this.queue = this.queue
      .then(() => work())
      .catch((err) => console.error("sync: handling message", id, "failed", err))
      .then(() => {
        if (this.lastHandled === null || id > this.lastHandled) {
          this.lastHandled = id;
          this.saveLastId(id);
        }
        this.send({ type: "ack", id });
      });
  }

  onControl(frame) {
    const data = frame.data || {};
    if (frame.type === "hello") {
      this.hello = data;
      this.resyncedAt = null; // a new connection: no resync handled on it yet
      this.attempt = 0;
      if (data.idle_timeout_s) this.idleTimeoutMs = data.idle_timeout_s * 1000;
      // Even when our last id is beyond the server's (its log was reset), resume from it: the
      // server answers with a "reset" resync whose snapshot replaces what we hold.
      if (this.lastSeen !== null) this.send({ type: "resume", last_id: this.lastSeen });
      this.setState("open", { hello: data });
      this.dispatchEvent(new CustomEvent("hello", { detail: data }));
      this.setPresence(Array.isArray(data.peers) ? data.peers : null); // null: a server without presence
    } else if (frame.type === "peer.online" || frame.type === "peer.offline") {
      if (!data.device_id || !this.presenceKnown) return;
      const peers = [...this.peers.values()].filter((p) => p.device_id !== data.device_id);
      if (frame.type === "peer.online") peers.push({ device_id: data.device_id, role: data.role });
      this.setPresence(peers);
    } else if (frame.type === "ping") {
      this.send({ type: "pong" });
    } else if (frame.type === "error") {
      console.warn("sync: server refused a frame", data);
    }
  }

  /** Replace who else is connected (null: unknown) and tell the listeners. */
  setPresence(peers) {
    this.presenceKnown = peers !== null;
    this.peers = new Map((peers || []).map((p) => [p.device_id, { device_id: p.device_id, role: p.role }]));
    this.dispatchEvent(new CustomEvent("presence", { detail: { known: this.presenceKnown, peers: [...this.peers.values()] } }));
  }

  /** Whether a device of `role` ("phone" | "desktop") is connected now: true, false, or null (unknown). */
  peerOnline(role) {
    if (!this.presenceKnown) return null;
    return [...this.peers.values()].some((p) => p.role === role);
  }

  onClose(code, reason) {
    this.ws = null;
    clearTimeout(this.watchdog);
    if (this.stopped) return;
    if (NO_RECONNECT.has(code)) {
      this.stopped = true;
      this.setState("ended", { code, reason });
      this.dispatchEvent(new CustomEvent("ended", { detail: { code, reason } }));
      return;
    }
    this.scheduleRetry(code);
  }

  scheduleRetry(code) {
    if (this.stopped) return;
    // 1012 (server restarting): come back quickly, spread out; others: exponential backoff with jitter.
    const base = code === 1012 ? 250 : Math.min(this.maxDelayMs, this.minDelayMs * 2 ** this.attempt);
    const delay = code === 1013 ? Math.max(base, 2000) : base;
    const jittered = delay / 2 + Math.random() * delay / 2;
    this.attempt += 1;
    this.setState(navigator.onLine ? "waiting" : "offline", { code, retryInMs: jittered });
    if (!navigator.onLine) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), jittered);
  }
}
