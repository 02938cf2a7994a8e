// roomcast.js — the browser client for roomcast (docs/browser.md). No dependencies.
//
//   import { RoomcastClient } from "/roomcast.js";
//   const client = new RoomcastClient(["wss://a.example/ws", "wss://b.example/ws"], token);
//   client.addEventListener("message", (e) => console.log(e.detail.seq, e.detail.data));
//   await client.connect();
//   await client.join("lobby");
//   const seq = await client.publish("lobby", { text: "hi" });
//
// Like the Python client it reconnects by itself (exponential backoff with full jitter over the
// URLs), resumes on whichever node it reaches (every missed message, in order, once), drops
// duplicates by seq, repairs gaps it detects by prev, and re-sends unacknowledged publishes with
// the same message id so each is stored exactly once. Protocol: docs/protocol.md.

/** Delay before reconnect attempt `attempt` (0-based): uniform in [0, min(cap, base * 2^n)]. */
export function backoffDelay(attempt, base = 250, cap = 30000, random = Math.random) {
  const bound = Math.min(cap, base * Math.pow(2, Math.min(attempt, 30)));
  return random() * bound;
}

/** Whether to reconnect after the server closed with `code` (docs/protocol.md §6). */
export function retryable(code) {
  return code === undefined || code === null || code < 4500;
}

/** Close codes of a refused upgrade that retrying cannot fix (docs/protocol.md §1, §6). */
export const REFUSALS = { 4510: "unauthorized", 4511: "origin_not_allowed" };

/**
 * Apply a presence frame (docs/protocol.md §4.10) to a room's view
 * `{members: Map(user -> conn[]) | null, users, connections}` (members null: the room is too big
 * to list, counts only). Returns the users it added to and removed from the list. The Python
 * client's RoomPresence.apply is the same rule; both are property-tested.
 */
export function applyPresence(view, f) {
  if (f.users !== undefined) view.users = f.users;
  if (f.connections !== undefined) view.connections = f.connections;
  if (f.type === "presence_count") {
    view.members = null;
    return { joined: [], left: [] };
  }
  if (f.type === "presence_state") {
    const old = view.members;
    view.members = new Map(Object.entries(f.members ?? {}));
    if (old === null) return { joined: [], left: [] }; // listed again after counts: a sync
    return { joined: [...view.members.keys()].filter((u) => !old.has(u)),
             left: [...old.keys()].filter((u) => !view.members.has(u)) };
  }
  if (f.type !== "presence_diff" || view.members === null) return { joined: [], left: [] };
  const left = Object.keys(f.leaves ?? {}).filter((u) => view.members.delete(u));
  const joined = [];
  for (const [user, conn] of Object.entries(f.joins ?? {})) {
    if (!view.members.has(user)) {
      view.members.set(user, [conn]);
      joined.push(user);
    }
  }
  return { joined, left };
}

/** A room's view from the `presence` of joined/resumed/welcome.rooms. */
export function presenceView(summary) {
  return { members: summary.members ? new Map(Object.entries(summary.members)) : null,
           users: summary.users ?? 0, connections: summary.connections ?? 0 };
}

export class RoomcastError extends Error {
  constructor(code, message, { temporary = false, room = null } = {}) {
    super(`${code}: ${message}`);
    this.code = code;
    this.temporary = temporary;
    this.room = room;
  }
}

const LOST = Symbol("connection lost");
const TEMPORARY = new Set(["rate_limited", "publish_failed", "unavailable", "internal"]);

function uuid() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
  return Math.random().toString(16).slice(2) + Date.now().toString(16);
}

export class RoomcastClient extends EventTarget {
  /**
   * @param {string[]|string} urls node WebSocket URLs (ws(s)://host/ws)
   * @param {string|function():string|Promise<string>} token JWT, or a function returning one
   * @param {object} options backoffBase/backoffCap (ms, cap <= 30000), maxPendingPublishes,
   *   shuffleUrls, WebSocketImpl
   */
  constructor(urls, token, options = {}) {
    super();
    this.urls = Array.isArray(urls) ? [...urls] : [urls];
    if (!this.urls.length) throw new Error("at least one URL is required");
    this.token = token;
    this.backoffBase = options.backoffBase ?? 250;
    this.backoffCap = Math.min(options.backoffCap ?? 30000, 30000);
    this.maxPendingPublishes = options.maxPendingPublishes ?? 1000;
    this.WebSocketImpl = options.WebSocketImpl ?? globalThis.WebSocket;
    this.urlIndex = options.shuffleUrls === false ? 0 : Math.floor(Math.random() * this.urls.length);
    this.rooms = new Map(); // room -> {position, waiters: [], repairing}
    this.pending = new Map(); // msg id -> {room, data, resolve, reject, sentOn}
    this.requests = new Map(); // rid -> {kind, key, resolve, reject}
    this.presence = new Map(); // room -> {members: Map(user -> conn meta[]) | null, users, connections}
    this.rid = 0;
    this.session = 0;
    this.sessions = 0;
    this.attempt = 0;
    this.ws = null;
    this.ready = false;
    this.closed = false;
    this.fatal = null;
    this.resumeToken = null;
    this.retryAfter = null;
    this.node = null;
    this.state = "idle";
    this.lastResume = null;
    this.tokenExpires = null; // exp of the token the session runs on (refreshed in band)
    this._refreshing = false;
    this._first = null;
  }

  // -- lifecycle ----------------------------------------------------------------------

  /** Connect; resolves when the first session is up, rejects on an authentication failure. */
  connect() {
    if (!this._first) {
      this._first = {};
      this._first.promise = new Promise((resolve, reject) => {
        this._first.resolve = resolve;
        this._first.reject = reject;
      });
      this._open();
    }
    return this._first.promise;
  }

  close() {
    this.closed = true;
    clearTimeout(this._timer);
    if (this.ws) this.ws.close(1000);
    this._failAll(new RoomcastError("closed", "client closed"));
    this._setState("closed");
  }

  /** Cut the connection as a network failure would; the client reconnects and resumes. */
  dropConnection() {
    if (this.ws) this.ws.close(4000, "dropped by the application");
  }

  // -- API ----------------------------------------------------------------------------

  join(room) {
    const closed = this._closedError();
    if (closed) return Promise.reject(closed);
    let state = this.rooms.get(room);
    if (!state) {
      state = { position: null, waiters: [], repairing: false };
      this.rooms.set(room, state);
    }
    const done = new Promise((resolve, reject) => state.waiters.push({ resolve, reject }));
    if (this.ready) this._sendJoin(room, state).catch(() => {});
    return done;
  }

  async leave(room) {
    this._checkOpen();
    const state = this.rooms.get(room);
    if (!state) return;
    this.rooms.delete(room);
    this.presence.delete(room);
    for (const w of state.waiters) w.reject(new RoomcastError("left", "left before joined"));
    if (this.ready) {
      try {
        await this._request({ type: "leave", room }, "leave", room);
      } catch (e) {
        if (e !== LOST) throw e;
      }
    }
  }

  /** Publish; resolves with the message's seq once the server stored it. */
  publish(room, data, { id } = {}) {
    const closed = this._closedError();
    if (closed) return Promise.reject(closed);
    const msgId = id ?? uuid();
    const existing = this.pending.get(msgId);
    if (existing) return existing.promise;
    if (this.pending.size >= this.maxPendingPublishes) {
      return Promise.reject(new RoomcastError("queue_full", `${this.pending.size} publishes await an ack`));
    }
    const pub = { room, data: JSON.stringify(data), id: msgId, sentOn: -1 };
    pub.promise = new Promise((resolve, reject) => {
      pub.resolve = (seq) => { this.pending.delete(msgId); resolve(seq); };
      pub.reject = (err) => { this.pending.delete(msgId); reject(err); };
    });
    this.pending.set(msgId, pub);
    if (this.ready) this._sendPublish(pub);
    return pub.promise;
  }

  /**
   * A page of a room's retained messages: newest first (below `before`), or oldest first above
   * `after`; page on with the last seq while `more`. Needs subscribe permission, not membership.
   * @returns {Promise<{room: string, messages: object[], more: boolean}>}
   */
  async history(room, { before, after, limit } = {}) {
    this._checkOpen();
    const frame = { type: "history", room };
    if (before !== undefined && before !== null) frame.before = before;
    if (after !== undefined && after !== null) frame.after = after;
    if (limit !== undefined && limit !== null) frame.limit = limit;
    for (;;) {
      if (!this.ready) await new Promise((resolve) => this.addEventListener("state", function on(ev) {
        if (ev.detail.state === "connected" || ev.detail.state === "closed" || ev.detail.state === "failed") {
          this.removeEventListener("state", on);
          resolve();
        }
      }));
      this._checkOpen();
      try {
        const reply = await this._request(frame, "history", room);
        return {
          room,
          more: reply.more,
          messages: reply.messages.map((m) => ({ room: m.room, seq: m.seq, prev: m.prev, sender: m.from, ts: m.ts, id: m.id, data: m.data })),
        };
      } catch (e) {
        if (e !== LOST) throw e; // asked again on the next session
      }
    }
  }

  /** Users present in `room` (cluster-wide), as last reported by the server; null when the
   * room has more users than the server lists (see `countsOf`). */
  membersOf(room) {
    const members = this.presence.get(room)?.members;
    if (members === null) return null;
    return [...(members?.keys() ?? [])].sort();
  }

  /** `{users, connections}` in `room` (cluster-wide), or null before it is joined. */
  countsOf(room) {
    const view = this.presence.get(room);
    return view ? { users: view.users, connections: view.connections } : null;
  }

  // -- connection loop ----------------------------------------------------------------

  async _token() {
    return typeof this.token === "function" ? await this.token() : this.token;
  }

  async _open() {
    if (this.closed) return;
    const url = this.urls[this.urlIndex % this.urls.length];
    this.urlIndex += 1;
    this._setState(this.sessions ? "reconnecting" : "connecting", { url });
    let token;
    try {
      token = await this._token();
    } catch (e) {
      return this._scheduleReconnect();
    }
    const sep = url.includes("?") ? "&" : "?";
    let ws;
    try {
      ws = new this.WebSocketImpl(`${url}${sep}token=${encodeURIComponent(token)}`);
    } catch (e) {
      return this._scheduleReconnect();
    }
    this.ws = ws;
    const session = ++this.session;
    let welcomed = false;
    const oldToken = this.resumeToken;
    ws.onmessage = (ev) => {
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (!welcomed) {
        if (frame.type !== "welcome") return;
        welcomed = true;
        this.node = frame.node;
        this.tokenExpires = frame.exp ?? null;
        // Rooms the token joined this connection to: kept like joined ones (protocol §1).
        const given = {};
        for (const [room, outcome] of Object.entries(frame.rooms ?? {})) {
          if (outcome.seq === undefined) continue;
          let state = this.rooms.get(room);
          if (!state) this.rooms.set(room, (state = { position: null, waiters: [], repairing: false }));
          if (state.position === null) state.position = outcome.seq;
          if (outcome.presence) this._setPresence(room, outcome.presence);
          given[room] = outcome;
        }
        // Keep the previous session's token until `resumed` replaces it (a welcome token names
        // no rooms): a connection lost mid-resume resumes again with it (protocol §7).
        if (!oldToken || !this.rooms.size) this.resumeToken = frame.resume_token ?? this.resumeToken;
        this._restore(oldToken, session, given).catch(() => {});
        return;
      }
      this._onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.ready = false;
      const requests = this.requests;
      this.requests = new Map();
      for (const r of requests.values()) r.reject(LOST);
      for (const s of this.rooms.values()) s.repairing = false;
      if (this.closed) return;
      // A browser cannot read the HTTP status of a refused upgrade, so the node upgrades and
      // closes with a code and reason (protocol §1): 4510 token refused, 4511 origin not
      // allowed — permanent, connect() rejects; 4012 node full or draining — try the next URL.
      if (!welcomed && REFUSALS[ev.code]) {
        return this._fail(new RoomcastError(REFUSALS[ev.code], ev.reason || `refused with ${ev.code}`));
      }
      if (welcomed && !retryable(ev.code)) {
        return this._fail(new RoomcastError("auth", ev.reason || `closed with ${ev.code}`));
      }
      this._setState("disconnected", { code: ev.code });
      this._scheduleReconnect(welcomed);
    };
  }

  _scheduleReconnect(hadSession = false) {
    if (this.closed) return;
    if (hadSession) this.attempt = 0;
    let delay;
    if (this.retryAfter !== null) {
      delay = this.retryAfter;
      this.retryAfter = null;
    } else {
      delay = backoffDelay(this.attempt, this.backoffBase, this.backoffCap);
      this.attempt += 1;
    }
    this._timer = setTimeout(() => this._open(), delay);
  }

  async _restore(oldToken, session, given = {}) {
    let resumed = oldToken ? {} : { ...given };
    if (this.rooms.size && oldToken) {
      const positions = {};
      for (const [room, s] of this.rooms) if (s.position !== null) positions[room] = s.position;
      try {
        const reply = await this._request({ type: "resume", token: oldToken, rooms: positions }, "resume", null);
        resumed = reply.rooms;
      } catch (e) {
        if (e === LOST) return;
        // refused (e.g. expired): re-join the rooms one by one below
      }
    }
    for (const [room, outcome] of Object.entries(resumed)) {
      const state = this.rooms.get(room);
      if (!state) continue;
      if (outcome.error && TEMPORARY.has(outcome.error)) {
        delete resumed[room]; // re-joined below, and retried later if need be
        continue;
      }
      if (outcome.error) {
        this.rooms.delete(room);
        for (const w of state.waiters) w.reject(new RoomcastError(outcome.error, "resume refused", { room }));
        continue;
      }
      this._advance(state, outcome.seq, outcome.recovered);
      if (outcome.presence) this._setPresence(room, outcome.presence);
    }
    for (const [room, state] of this.rooms) {
      if (room in resumed) continue;
      try {
        const reply = await this._sendJoin(room, state);
        resumed[room] = { seq: reply.seq, recovered: reply.recovered, replayed: reply.replayed };
      } catch (e) {
        if (e === LOST) return;
      }
    }
    if (session !== this.session) return;
    this.ready = true;
    this.sessions += 1;
    this.lastResume = this.sessions > 1 ? resumed : null;
    this._setState("connected", { node: this.node, resume: this.lastResume });
    if (this._first && this._first.resolve) {
      this._first.resolve();
      this._first.resolve = null;
    }
    for (const pub of this.pending.values()) if (pub.sentOn !== this.session) this._sendPublish(pub);
  }

  // -- frames -------------------------------------------------------------------------

  _send(text) {
    if (!this.ws || this.ws.readyState !== 1) throw LOST;
    this.ws.send(text);
  }

  _request(frame, kind, key) {
    const rid = ++this.rid;
    return new Promise((resolve, reject) => {
      this.requests.set(rid, { kind, key, resolve, reject });
      try {
        this._send(JSON.stringify({ ...frame, rid }));
      } catch (e) {
        this.requests.delete(rid);
        reject(LOST);
      }
    });
  }

  _sendJoin(room, state) {
    const frame = { type: "join", room };
    if (state.position !== null) frame.since = state.position;
    return this._request(frame, "join", room);
  }

  _sendPublish(pub) {
    pub.sentOn = this.session;
    const rid = ++this.rid;
    this.requests.set(rid, { kind: "publish", key: pub.id, resolve: () => {}, reject: () => {} });
    try {
      this._send(`{"type":"publish","room":${JSON.stringify(pub.room)},"id":${JSON.stringify(pub.id)},"rid":${rid},"data":${pub.data}}`);
    } catch (e) {
      this.requests.delete(rid); // re-sent by the next session
    }
  }

  _onFrame(f) {
    switch (f.type) {
      case "message":
        return this._onMessage(f);
      case "ack": {
        this.requests.delete(f.rid);
        const pub = this.pending.get(f.id);
        if (pub) pub.resolve(f.seq);
        return;
      }
      case "joined":
      case "left":
      case "resumed":
      case "pong":
      case "history":
      case "refreshed":
        return this._onReply(f);
      case "refresh_needed":
        return this._refresh();
      case "presence_diff":
      case "presence_count":
      case "presence_state":
        return this._onPresence(f);
      case "error":
        return this._onError(f);
      case "reconnect":
        this.resumeToken = f.resume_token ?? this.resumeToken;
        this.retryAfter = f.retry_after_ms ?? 0;
        return;
      default:
        return;
    }
  }

  _onMessage(f) {
    const state = this.rooms.get(f.room);
    if (!state) return;
    const pos = state.position;
    if (!f.seq) { // an ephemeral room's message: not stored, no order to keep (§4.5)
      const detail = { room: f.room, seq: 0, prev: null, sender: f.from, ts: f.ts, id: f.id, data: f.data };
      this.dispatchEvent(new CustomEvent("message", { detail }));
      return;
    }
    if (pos !== null && f.seq <= pos) return; // duplicate
    if (pos !== null && f.prev !== null && f.prev !== pos) {
      // Gap: drop this one and ask for everything after our position (once at a time).
      if (!state.repairing) {
        state.repairing = true;
        this._sendJoin(f.room, state).catch(() => {}).finally(() => { state.repairing = false; });
      }
      return;
    }
    state.position = f.seq;
    const detail = { room: f.room, seq: f.seq, prev: f.prev, sender: f.from, ts: f.ts, id: f.id, data: f.data };
    this.dispatchEvent(new CustomEvent("message", { detail }));
  }

  _onReply(f) {
    if (f.resume_token) this.resumeToken = f.resume_token;
    const req = this.requests.get(f.rid);
    this.requests.delete(f.rid);
    if (f.type === "left" && f.reason && this.rooms.delete(f.room)) {
      this.presence.delete(f.room);
      this.dispatchEvent(new CustomEvent("left", { detail: { room: f.room, reason: f.reason } }));
    }
    if (f.type === "refreshed") this.tokenExpires = f.exp;
    if (f.type === "joined") {
      const state = this.rooms.get(f.room);
      if (state) {
        this._advance(state, f.seq, f.recovered);
        if (f.presence) this._setPresence(f.room, f.presence);
        const waiters = state.waiters;
        state.waiters = [];
        for (const w of waiters) w.resolve(f);
      }
    }
    if (req) req.resolve(f);
  }

  _onPresence(f) {
    const view = this.presence.get(f.room);
    if (!view || !this.rooms.has(f.room)) return;
    this._reportPresence(f.room, applyPresence(view, f));
  }

  /** A fresh view (joined/resumed): listeners hear who appeared and went meanwhile. */
  _setPresence(room, summary) {
    const old = this.presence.get(room);
    const view = presenceView(summary);
    this.presence.set(room, view);
    const change = { joined: [], left: [] };
    if (old?.members && view.members) {
      change.joined = [...view.members.keys()].filter((u) => !old.members.has(u));
      change.left = [...old.members.keys()].filter((u) => !view.members.has(u));
    }
    this._reportPresence(room, change, true);
  }

  /** `presence` event: `{room, joined: [user], left: [user], users, connections}`. */
  _reportPresence(room, change, sync = false) {
    const view = this.presence.get(room);
    this.dispatchEvent(new CustomEvent("presence", { detail: {
      room, joined: change.joined, left: change.left, sync,
      users: view?.users ?? 0, connections: view?.connections ?? 0 } }));
  }

  _onError(f) {
    const err = new RoomcastError(f.code, f.message, { temporary: !!f.temporary, room: f.room ?? null });
    const req = this.requests.get(f.rid);
    this.requests.delete(f.rid);
    if (!req) {
      this.dispatchEvent(new CustomEvent("error", { detail: err }));
      return;
    }
    if (req.kind === "publish") {
      const pub = this.pending.get(req.key);
      if (!pub) return;
      if (err.temporary) {
        setTimeout(() => { if (this.ready && this.pending.has(pub.id)) this._sendPublish(pub); }, 200 + Math.random() * 1000);
      } else {
        pub.reject(err);
      }
      return;
    }
    if (req.kind === "join") {
      const state = this.rooms.get(req.key);
      if (state && err.temporary) {
        this._rejoinLater(req.key, this.session, 0); // the room stays wanted
      } else if (state) {
        this.rooms.delete(req.key);
        for (const w of state.waiters) w.reject(err);
      }
    }
    req.reject(err);
  }

  // The server asks for a fresh token ahead of `exp` (protocol §4.10): call the token function
  // and send it in band; retried every few seconds until taken or the session ends.
  async _refresh() {
    if (typeof this.token !== "function" || this._refreshing) return;
    this._refreshing = true;
    const session = this.session;
    try {
      while (session === this.session && !this.closed) {
        try {
          await this._request({ type: "refresh", token: await this._token() }, "refresh", null);
          return;
        } catch (e) {
          if (e === LOST) return; // the next session connects with a fresh token anyway
        }
        await new Promise((resolve) => setTimeout(resolve, 1000 + Math.random() * 2000));
      }
    } finally {
      this._refreshing = false;
    }
  }

  _rejoinLater(room, session, attempt) {
    setTimeout(() => {
      const state = this.rooms.get(room);
      if (!state || session !== this.session || this.closed || !this.ready) return;
      this._sendJoin(room, state).catch((e) => {
        if (e instanceof RoomcastError && e.temporary) this._rejoinLater(room, session, attempt + 1);
      });
    }, backoffDelay(attempt, 500, 10000));
  }

  // -- helpers ------------------------------------------------------------------------

  // A position moves only forward, except after `recovered: false`: the server's seq then
  // replaces it (the old one was from another epoch or never issued; protocol §7).
  _advance(state, seq, recovered) {
    if (seq === undefined || seq === null) return;
    if (recovered === false || state.position === null || seq > state.position) state.position = seq;
  }

  _fail(err) {
    this.fatal = err;
    this._failAll(err);
    if (this._first && this._first.reject) this._first.reject(err);
    this._setState("failed", { error: err.message });
  }

  _failAll(err) {
    for (const pub of [...this.pending.values()]) pub.reject(err);
    for (const s of this.rooms.values()) for (const w of s.waiters) w.reject(err);
    for (const r of this.requests.values()) r.reject(err);
    this.requests.clear();
  }

  _checkOpen() {
    const closed = this._closedError();
    if (closed) throw closed;
  }

  _closedError() {
    if (this.fatal) return this.fatal;
    if (this.closed) return new RoomcastError("closed", "client closed");
    return null;
  }

  _setState(state, info = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...info } }));
  }
}
