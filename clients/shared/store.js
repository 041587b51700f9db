// Local persistence: small JSON state in localStorage, image blobs in IndexedDB.

export const local = {
  get(key, fallback = null) {
    try {
      const raw = localStorage.getItem(key);
      return raw === null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      if (value === null || value === undefined) localStorage.removeItem(key);
      else localStorage.setItem(key, JSON.stringify(value));
      return true;
    } catch {
      return false; // quota or private mode: the app keeps working, only without persistence
    }
  },
  remove(key) {
    try { localStorage.removeItem(key); } catch { /* ignore */ }
  },
};

/** A tiny IndexedDB key -> Blob store (clips survive reloads and the server's retention). */
export class BlobStore {
  constructor(dbName = "arclip", storeName = "blobs") {
    this.dbName = dbName;
    this.storeName = storeName;
    this.db = null;
  }

  open() {
    if (this.db) return this.db;
    this.db = new Promise((resolve, reject) => {
      if (!("indexedDB" in window)) { reject(new Error("no IndexedDB")); return; }
      const req = indexedDB.open(this.dbName, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(this.storeName);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    this.db.catch(() => { this.db = null; });
    return this.db;
  }

  async run(mode, fn) {
    const db = await this.open();
    return new Promise((resolve, reject) => {
      const tx = db.transaction(this.storeName, mode);
      const req = fn(tx.objectStore(this.storeName));
      tx.oncomplete = () => resolve(req ? req.result : undefined);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }

  async get(key) {
    try { return (await this.run("readonly", (s) => s.get(key))) || null; } catch { return null; }
  }

  async put(key, blob) {
    try { await this.run("readwrite", (s) => s.put(blob, key)); return true; } catch { return false; }
  }

  async delete(key) {
    try { await this.run("readwrite", (s) => s.delete(key)); } catch { /* ignore */ }
  }

  async keys() {
    try { return await this.run("readonly", (s) => s.getAllKeys()); } catch { return []; }
  }
}
