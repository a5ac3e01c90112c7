// switchboard-client: the JavaScript SDK for switchboard's real-time hub and signaling rooms.
//
// One ES module, no dependencies, for browsers and Node.js >= 20 (Node 20 has no global
// WebSocket: pass one, e.g. the `ws` package, as the `websocket` option).
//
//   import { Client } from "switchboard-client";
//   const client = new Client("https://example.com", { token });
//   const sub = client.newSubscription("chat:lobby");
//   sub.on("publication", (ctx) => console.log(ctx.data));
//   sub.subscribe();
//   client.connect();
//
// The protocol is the hub's JSON mapping (docs/hub.md): over WebSocket `/v1/ws` with the
// subprotocol `switchboard.json`, one `Command` per text frame out and one `ServerFrame` per
// frame in; when the WebSocket cannot be opened, server-sent events (`GET /v1/sse`) for
// receiving and `POST /v1/publish` for publishing. A page may opt in to WebTransport
// (`transports: ["webtransport"]`): where the browser has it, `/v1/wt` over HTTP/3 is tried
// first (one session with one bidirectional stream per connection, carrying length-prefixed
// protobuf through the small codec below), the WebSocket when it fails. After every reconnect
// each subscription recovers from the last position (offset and epoch) it saw: exactly the
// missed publications, in order, without duplicates, or a `recoveryfailed` event when the
// server says that is impossible. Rooms (`client.joinRoom`) run WebRTC perfect negotiation between the peers of a
// signaling room (browsers: RTCPeerConnection). The API reference is docs/clients.md.

export const VERSION = "0.1.0";

/** Client states. */
export const State = Object.freeze({
  Disconnected: "disconnected",
  Connecting: "connecting",
  Connected: "connected",
});

/** Subscription states. */
export const SubscriptionState = Object.freeze({
  Unsubscribed: "unsubscribed",
  Subscribing: "subscribing",
  Subscribed: "subscribed",
});

/**
 * Codes of errors and disconnects made by the SDK itself (the server's are 100..199 for errors,
 * 2000.. for unsubscribes and 3000..3999 for disconnects, see docs/hub.md).
 */
export const ClientCode = Object.freeze({
  /** `disconnect()` or `unsubscribe()` was called. */
  Called: 0,
  /** The transport closed without a server disconnect (network, server gone). */
  TransportClosed: 1,
  /** A command got no reply in time. */
  Timeout: 2,
  /** The client is disconnected (or the connection ended before the reply). */
  NotConnected: 3,
  /** The method is not available on the transport in use (e.g. history over SSE). */
  NotAvailable: 4,
  /** No transport could be used (none available in this environment). */
  NoTransport: 5,
  /** The server's liveness check failed (no ping reply, silent SSE stream). */
  Stale: 6,
  /** A subscription saw a gap or an epoch change and resubscribes with recovery. */
  InsufficientState: 7,
});

/** An error with the server's (or the SDK's) code; `temporary` when retrying may help. */
export class HubError extends Error {
  /**
   * @param {number} code
   * @param {string} message
   * @param {boolean} [temporary]
   */
  constructor(code, message, temporary = false) {
    super(message);
    this.name = "HubError";
    this.code = code;
    this.temporary = temporary;
  }
}

/** Throw this from `getToken` when the user may not connect: the client stops for good. */
export class UnauthorizedError extends Error {
  /** @param {string} [message] */
  constructor(message = "unauthorized") {
    super(message);
    this.name = "UnauthorizedError";
  }
}

const SUBPROTOCOL = "switchboard.json";
const DEFAULTS = {
  token: "",
  getToken: null,
  websocket: null,
  webtransport: null,
  webtransportUrl: null,
  webtransportOptions: null,
  fetch: null,
  transports: ["websocket", "sse"],
  minReconnectDelay: 500,
  maxReconnectDelay: 20_000,
  timeout: 10_000,
  pingInterval: 15_000,
  sseIdleTimeout: 60_000,
  name: "switchboard-js",
  version: VERSION,
  debug: false,
};

// Server codes the SDK acts on (docs/hub.md).
const TOKEN_EXPIRED = 109;
const CONNECTION_CLOSED = 116;
const UNSUB_INSUFFICIENT_STATE = 2500;
/** Refusals of one channel (unknown, forbidden, limit, bad name, no history/presence). */
const CHANNEL_ERRORS = new Set([102, 103, 105, 106, 107, 108]);
/** A refused `connect` and the disconnect the server sends with it. */
const CONNECT_DISCONNECT = {
  101: [3500, "invalid token"],
  103: [3507, "permission denied"],
  114: [3504, "connection limit"],
  115: [3504, "connection limit"],
};

// ------------------------------------------------------------------ helpers

/** A tiny event emitter: `on`, `once`, `off`; handler exceptions are logged, not thrown. */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._handlers = new Map();
  }

  /**
   * @param {string} event
   * @param {(ctx: any) => void} handler
   */
  on(event, handler) {
    let set = this._handlers.get(event);
    if (!set) {
      set = new Set();
      this._handlers.set(event, set);
    }
    set.add(handler);
    return this;
  }

  /**
   * @param {string} event
   * @param {(ctx: any) => void} handler
   */
  once(event, handler) {
    const wrapped = (/** @type {any} */ ctx) => {
      this.off(event, wrapped);
      handler(ctx);
    };
    return this.on(event, wrapped);
  }

  /**
   * @param {string} event
   * @param {(ctx: any) => void} [handler] all handlers of the event when absent
   */
  off(event, handler) {
    if (!handler) this._handlers.delete(event);
    else this._handlers.get(event)?.delete(handler);
    return this;
  }

  /**
   * @param {string} event
   * @param {any} [ctx]
   */
  _emit(event, ctx) {
    const set = this._handlers.get(event);
    if (!set) return;
    for (const h of [...set]) {
      try {
        h(ctx);
      } catch (e) {
        console.error(`switchboard: "${event}" handler threw`, e);
      }
    }
  }
}

/** Full-jitter exponential backoff: a random delay in [0, min(max, min * 2^attempt)). */
export function backoff(attempt, min, max) {
  const cap = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return Math.floor(Math.random() * cap);
}

/** The HTTP base and the WebSocket URL of a server given as http(s)://, ws(s):// or a path. */
function endpoints(url) {
  const here = typeof location !== "undefined" && location.href ? location.href : undefined;
  const u = new URL(url, here);
  if (u.protocol === "ws:") u.protocol = "http:";
  else if (u.protocol === "wss:") u.protocol = "https:";
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new TypeError(`switchboard: unsupported server URL ${url}`);
  }
  let path = u.pathname.replace(/\/+$/, "");
  for (const suffix of ["/v1/ws", "/v1/sse", "/v1/wt"]) {
    if (path.endsWith(suffix)) path = path.slice(0, -suffix.length);
  }
  const http = `${u.protocol}//${u.host}${path}`;
  const ws = `${u.protocol === "https:" ? "wss:" : "ws:"}//${u.host}${path}/v1/ws`;
  return { http, ws, wt: `https://${u.host}${path}/v1/wt` };
}

/** Drops null and undefined fields (the JSON mapping wants them absent). */
function compact(o) {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null && v !== undefined));
}

function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function fromBase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** A payload for the JSON mapping: JSON values embedded as `data`, bytes as `b64data`. */
function payloadFields(data, name = "data") {
  const b64 = `b64${name}`; // b64data, b64connInfo
  if (data instanceof Uint8Array) return { [b64]: toBase64(data) };
  if (data instanceof ArrayBuffer) return { [b64]: toBase64(new Uint8Array(data)) };
  if (ArrayBuffer.isView(data)) {
    return { [b64]: toBase64(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)) };
  }
  return { [name]: data === undefined ? null : data };
}

/** A payload from the JSON mapping (`data` embedded JSON, or `b64data` binary). */
function payload(o, name = "data") {
  if (!o) return null;
  if (name in o) return o[name];
  const b64 = `b64${name}`; // b64data, b64connInfo
  if (typeof o[b64] === "string") return fromBase64(o[b64]);
  return null;
}

function clientInfo(i) {
  if (!i) return undefined;
  return { user: i.user ?? "", client: i.clientId ?? "", connInfo: payload(i, "connInfo") };
}

function publicationCtx(p) {
  return {
    channel: p.channel ?? "",
    data: payload(p),
    offset: Number(p.offset ?? 0),
    epoch: p.epoch ?? "",
    info: clientInfo(p.info),
    tags: p.tags ?? {},
  };
}

function hubError(e) {
  return new HubError(Number(e?.code ?? 0), String(e?.message ?? "error"), Boolean(e?.temporary));
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

function randomId(prefix = "p-") {
  const b = new Uint8Array(6);
  globalThis.crypto.getRandomValues(b);
  return prefix + [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** The WebSocket failed to open (refused or blocked upgrade, no server): try the next transport. */
class OpenFailed extends Error {}

// ------------------------------------------------------------------ protobuf (WebTransport)

// WebTransport streams carry protobuf (docs/http3.md): a u32 big-endian length, then a
// `Command` (client to server) or a `ServerFrame` (server to client), schema
// proto/switchboard/v1/hub.proto. The codec below knows exactly the messages the SDK uses and
// maps them to and from the objects of the JSON mapping the rest of the SDK speaks, so a
// WebTransport connection is a drop-in for the WebSocket one: field names in lowerCamelCase,
// payloads (`data`, `connInfo`) as JSON values (their bytes are the UTF-8 JSON text) or, when the
// bytes are not JSON, as a Uint8Array; a `b64data` given to the encoder is sent as its bytes.

// A field: [name, type, kind] with type "string" | "bytes" | "uint32" | "uint64" | "bool" or a
// message name, and kind "" (singular), "repeated" or "map" (map<string, type>).
const PB_SCHEMA = (() => {
  const s = "string";
  const u32 = "uint32";
  const u64 = "uint64";
  const b = "bool";
  const y = "bytes";
  return {
    Command: ({
      1: ["id", u32], 2: ["connect", "ConnectRequest"], 3: ["subscribe", "SubscribeRequest"],
      4: ["unsubscribe", "ChannelRequest"], 5: ["publish", "PublishRequest"],
      6: ["presence", "ChannelRequest"], 7: ["presenceStats", "ChannelRequest"],
      8: ["history", "HistoryRequest"], 9: ["ping", "Empty"], 20: ["roomJoin", "RoomJoinRequest"],
      21: ["roomLeave", "RoomLeaveRequest"], 22: ["offer", "DescriptionRequest"],
      23: ["answer", "DescriptionRequest"], 24: ["candidate", "CandidateRequest"],
      25: ["bye", "ByeRequest"],
    }),
    ServerFrame: ({ 1: ["reply", "Reply"], 2: ["push", "Push"] }),
    Reply: ({
      1: ["id", u32], 2: ["error", "Error"], 3: ["connect", "ConnectResult"],
      4: ["subscribe", "SubscribeResult"], 5: ["unsubscribe", "Empty"],
      6: ["publish", "PublishResult"], 7: ["presence", "PresenceResult"],
      8: ["presenceStats", "PresenceStatsResult"], 9: ["history", "HistoryResult"],
      10: ["ping", "Empty"], 20: ["roomJoin", "RoomJoinResult"], 21: ["roomLeave", "Empty"],
      22: ["offer", "SignalResult"], 23: ["answer", "SignalResult"],
      24: ["candidate", "SignalResult"], 25: ["bye", "SignalResult"],
    }),
    Error: ({ 1: ["code", u32], 2: ["message", s], 3: ["temporary", b] }),
    Push: ({
      1: ["publication", "Publication"], 2: ["join", "JoinLeave"], 3: ["leave", "JoinLeave"],
      4: ["disconnect", "Disconnect"], 5: ["unsubscribe", "Unsubscribe"],
      20: ["roomJoin", "RoomJoin"], 21: ["roomLeave", "RoomLeave"], 22: ["signal", "Signal"],
    }),
    Empty: ({}),
    StreamPosition: ({ 1: ["offset", u64], 2: ["epoch", s] }),
    ClientInfo: ({ 1: ["user", s], 2: ["clientId", s], 3: ["connInfo", y] }),
    Publication: ({
      1: ["channel", s], 2: ["offset", u64], 3: ["epoch", s], 4: ["data", y],
      5: ["info", "ClientInfo"], 6: ["tags", s, "map"],
    }),
    JoinLeave: ({ 1: ["channel", s], 2: ["info", "ClientInfo"] }),
    Disconnect: ({ 1: ["code", u32], 2: ["reason", s], 3: ["reconnect", b] }),
    Unsubscribe: ({ 1: ["channel", s], 2: ["code", u32], 3: ["reason", s] }),
    ConnectRequest: ({ 1: ["token", s], 2: ["name", s], 3: ["version", s] }),
    ConnectResult: ({
      1: ["clientId", s], 2: ["user", s], 3: ["version", s], 4: ["expires", b], 5: ["ttl", u32],
    }),
    SubscribeRequest: ({ 1: ["channel", s], 2: ["recover", "StreamPosition"] }),
    SubscribeResult: ({
      1: ["recoverable", b], 2: ["offset", u64], 3: ["epoch", s], 4: ["wasRecovering", b],
      5: ["recovered", b], 6: ["publications", "Publication", "repeated"],
    }),
    ChannelRequest: ({ 1: ["channel", s] }),
    PublishRequest: ({ 1: ["channel", s], 2: ["data", y], 3: ["idempotencyKey", s] }),
    PublishResult: ({ 1: ["offset", u64], 2: ["epoch", s] }),
    PresenceResult: ({ 1: ["presence", "ClientInfo", "map"] }),
    PresenceStatsResult: ({ 1: ["numClients", u32], 2: ["numUsers", u32] }),
    HistoryRequest: ({
      1: ["channel", s], 2: ["limit", u32], 3: ["since", "StreamPosition"], 4: ["reverse", b],
    }),
    HistoryResult: ({
      1: ["publications", "Publication", "repeated"], 2: ["offset", u64], 3: ["epoch", s],
    }),
    RoomJoinRequest: ({ 1: ["room", s], 2: ["peerId", s], 3: ["data", y] }),
    RoomLeaveRequest: ({ 1: ["room", s] }),
    SessionDescription: ({ 1: ["type", s], 2: ["sdp", s] }),
    IceCandidate: ({
      1: ["candidate", s], 2: ["sdpMid", s], 3: ["sdpMLineIndex", u32], 4: ["usernameFragment", s],
    }),
    DescriptionRequest: ({ 1: ["room", s], 2: ["to", s], 3: ["description", "SessionDescription"] }),
    CandidateRequest: ({ 1: ["room", s], 2: ["to", s], 3: ["candidate", "IceCandidate"] }),
    ByeRequest: ({ 1: ["room", s], 2: ["to", s], 3: ["reason", s] }),
    RoomMember: ({ 1: ["peerId", s], 2: ["data", y], 3: ["info", "ClientInfo"], 4: ["joinedAt", u64] }),
    RoomJoinResult: ({ 1: ["members", "RoomMember", "repeated"], 2: ["polite", b] }),
    SignalResult: ({ 1: ["delivered", u32] }),
    RoomJoin: ({ 1: ["room", s], 2: ["peer", "RoomMember"], 3: ["polite", b] }),
    RoomLeave: ({ 1: ["room", s], 2: ["peerId", s], 3: ["timedOut", b] }),
    Signal: ({
      1: ["room", s], 2: ["from", s], 3: ["offer", "SessionDescription"],
      4: ["answer", "SessionDescription"], 5: ["candidate", "IceCandidate"], 6: ["bye", s],
    }),
  };
})();

const PB_VARINTS = new Set(["uint32", "uint64", "bool"]);
const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });
const utf8Lenient = new TextDecoder();

/** A growing byte buffer for the encoder. */
class PbWriter {
  constructor() {
    this.buf = new Uint8Array(64);
    this.len = 0;
  }

  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  /** A varint of a non-negative integer (exact up to 2^53). */
  varint(n) {
    this.reserve(10);
    let v = Math.max(0, Math.floor(Number(n) || 0));
    while (v >= 0x80) {
      this.buf[this.len++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.len++] = v;
  }

  bytes(b) {
    this.varint(b.length);
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  finish() {
    return this.buf.subarray(0, this.len);
  }
}

/** The bytes of payload field `name` of `o` (JSON value, binary, or `b64name`), or null. */
function payloadBytes(o, name) {
  const v = o[name];
  if (v === undefined || v === null) {
    const b64 = o[`b64${name}`]; // b64data, b64connInfo
    return typeof b64 === "string" ? fromBase64(b64) : null;
  }
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  return utf8.encode(JSON.stringify(v));
}

/** Encodes `value` (a JSON-mapping object) as protobuf message `type`. */
function pbEncode(type, value, w = new PbWriter()) {
  const schema = PB_SCHEMA[type];
  for (const [num, [name, ftype, kind]] of Object.entries(schema)) {
    const no = Number(num);
    if (ftype === "bytes") {
      const b = payloadBytes(value, name);
      if (b) {
        w.varint((no << 3) | 2);
        w.bytes(b);
      }
      continue;
    }
    const v = value[name];
    if (v === undefined || v === null) continue;
    if (kind === "repeated") {
      for (const item of v) pbField(w, no, ftype, item);
    } else if (kind === "map") {
      for (const [k, item] of Object.entries(v)) {
        const entry = new PbWriter();
        pbField(entry, 1, "string", k);
        pbField(entry, 2, ftype, item);
        w.varint((no << 3) | 2);
        w.bytes(entry.finish());
      }
    } else {
      pbField(w, no, ftype, v);
    }
  }
  return w;
}

function pbField(w, no, ftype, v) {
  if (ftype === "string") {
    w.varint((no << 3) | 2);
    w.bytes(utf8.encode(String(v)));
  } else if (ftype === "uint32" || ftype === "uint64") {
    w.varint(no << 3);
    w.varint(v);
  } else if (ftype === "bool") {
    w.varint(no << 3);
    w.varint(v ? 1 : 0);
  } else {
    w.varint((no << 3) | 2);
    w.bytes(pbEncode(ftype, v).finish());
  }
}

/** A payload's bytes as the JSON mapping gives them: the JSON value, else the bytes. */
function payloadValue(b) {
  try {
    return JSON.parse(utf8Strict.decode(b));
  } catch {
    return b.slice();
  }
}

/** Decodes protobuf message `type` from `b` into a JSON-mapping object (unknown fields skipped). */
function pbDecode(type, b) {
  const schema = PB_SCHEMA[type];
  const out = {};
  let i = 0;
  const varint = () => {
    let n = 0;
    let scale = 1;
    for (;;) {
      if (i >= b.length) throw new Error("protobuf: truncated varint");
      const x = b[i++];
      n += (x & 0x7f) * scale;
      if (x < 0x80) return n;
      scale *= 0x80;
      if (scale > 2 ** 70) throw new Error("protobuf: varint too long");
    }
  };
  const chunk = () => {
    const n = varint();
    if (i + n > b.length) throw new Error("protobuf: truncated field");
    const c = b.subarray(i, i + n);
    i += n;
    return c;
  };
  while (i < b.length) {
    const tag = varint();
    const no = Math.floor(tag / 8);
    const wire = tag % 8;
    const f = schema[no];
    const want = f && !f[2] && PB_VARINTS.has(f[1]) ? 0 : 2;
    if (!f || wire !== want) {
      // Unknown (or unexpected) field: skip it.
      if (wire === 0) varint();
      else if (wire === 1) i += 8;
      else if (wire === 2) chunk();
      else if (wire === 5) i += 4;
      else throw new Error(`protobuf: wire type ${wire}`);
      continue;
    }
    const [name, ftype, kind] = f;
    if (kind === "map") {
      const entry = chunk();
      const e = pbDecode(ftype === "string" ? "MapStringString" : "MapStringMessage", entry);
      const value = ftype === "string" ? (e.value ?? "") : pbDecode(ftype, e.value ?? new Uint8Array(0));
      (out[name] ??= {})[e.key ?? ""] = value;
      continue;
    }
    let v;
    if (ftype === "uint32" || ftype === "uint64") v = varint();
    else if (ftype === "bool") v = varint() !== 0;
    else if (ftype === "string") v = utf8Lenient.decode(chunk());
    else if (ftype === "raw") v = chunk();
    else if (ftype === "bytes") {
      const c = chunk();
      if (c.length === 0) continue; // as the JSON mapping: an empty payload is absent
      v = payloadValue(c);
    } else v = pbDecode(ftype, chunk());
    if (kind === "repeated") (out[name] ??= []).push(v);
    else out[name] = v;
  }
  return out;
}

// Map entries: key 1, value 2 (a string, or a message's bytes decoded by the caller).
PB_SCHEMA.MapStringString = { 1: ["key", "string"], 2: ["value", "string"] };
PB_SCHEMA.MapStringMessage = { 1: ["key", "string"], 2: ["value", "raw"] };

// ------------------------------------------------------------------ WebSocket connection

/**
 * One hub connection with commands and replies: the parts the WebSocket and the WebTransport
 * connection share. Subclasses send a command (`_send`) and hand in frames (`onFrame`, JSON
 * mapping objects) and their end (`onClose`).
 */
class HubConn {
  constructor(client, gen, kind) {
    this.client = client;
    this.gen = gen;
    this.kind = kind;
    this.nextId = 0;
    /** @type {Map<number, {resolve: Function, reject: Function, timer: any}>} */
    this.pending = new Map();
    this.closed = false;
  }

  onFrame(frame) {
    if (frame.reply) {
      const id = Number(frame.reply.id ?? 0);
      const w = this.pending.get(id);
      if (!w) return;
      this.pending.delete(id);
      clearTimeout(w.timer);
      if (frame.reply.error) w.reject(hubError(frame.reply.error));
      else w.resolve(frame.reply);
    } else if (frame.push) {
      this.client._onPush(frame.push, this);
    }
  }

  onClose(code, reason) {
    if (this.closed) return;
    this.closed = true;
    this.failPending();
    this.client._onTransportClosed(this, { code: Number(code ?? 1006), reason: String(reason ?? "") });
  }

  failPending() {
    for (const [, w] of this.pending) {
      clearTimeout(w.timer);
      w.reject(new HubError(ClientCode.NotConnected, "connection closed", true));
    }
    this.pending.clear();
  }

  /** Sends one command; resolves with its reply (rejects with a HubError). */
  call(method, body, timeout) {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new HubError(ClientCode.NotConnected, "connection closed", true));
        return;
      }
      const id = ++this.nextId;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new HubError(ClientCode.Timeout, `${method}: no reply within ${timeout} ms`, true));
      }, timeout);
      this.pending.set(id, { resolve, reject, timer });
      try {
        this._send({ id, [method]: body });
      } catch (e) {
        this.pending.delete(id);
        clearTimeout(timer);
        reject(new HubError(ClientCode.NotConnected, String(e?.message ?? e), true));
      }
    });
  }
}

/** One WebSocket speaking the JSON mapping: commands with replies, pushes to the client. */
class WsConn extends HubConn {
  constructor(client, gen, ws) {
    super(client, gen, "websocket");
    this.ws = ws;
  }

  /** Opens a WebSocket; resolves when it is open with our subprotocol. */
  static open(client, gen) {
    const WS = client._opts.websocket ?? globalThis.WebSocket;
    if (!WS) return Promise.reject(new OpenFailed("no WebSocket implementation"));
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WS(client._ep.ws, SUBPROTOCOL);
      } catch (e) {
        reject(new OpenFailed(String(e?.message ?? e)));
        return;
      }
      const conn = new WsConn(client, gen, ws);
      let settled = false;
      const fail = (why) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        conn.closed = true;
        try {
          ws.close();
        } catch {
          // not open yet
        }
        reject(new OpenFailed(why));
      };
      const timer = setTimeout(() => fail("WebSocket open timed out"), client._opts.timeout);
      ws.onopen = () => {
        if (settled) return;
        if (ws.protocol !== SUBPROTOCOL) {
          fail(`server chose subprotocol "${ws.protocol}"`);
          return;
        }
        settled = true;
        clearTimeout(timer);
        resolve(conn);
      };
      ws.onerror = (e) => fail(`cannot open ${client._ep.ws}${e?.message ? `: ${e.message}` : ""}`);
      ws.onclose = (e) => {
        if (!settled) {
          fail(`WebSocket closed before it opened (${e.code})`);
          return;
        }
        conn.onClose(e.code, e.reason);
      };
      ws.onmessage = (e) => conn.onMessage(e.data);
    });
  }

  onMessage(text) {
    if (typeof text !== "string") return; // switchboard.json frames are text
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this.client._log("unparsable frame", text);
      return;
    }
    this.onFrame(frame);
  }

  _send(command) {
    this.ws.send(JSON.stringify(command));
  }

  close(code = 1000, reason = "") {
    if (this.closed) return;
    this.closed = true;
    this.failPending();
    try {
      this.ws.close(code, reason);
    } catch {
      // already closing
    }
  }
}

/** Frames longer than this (bytes) end a WebTransport connection (the server's own cap is lower). */
const WT_MAX_FRAME = 64 << 20;

/**
 * One WebTransport session (`/v1/wt`, HTTP/3) with one bidirectional stream: one hub connection
 * speaking length-prefixed protobuf (docs/http3.md). A session per connection: closing it ends
 * the hub connection at once on the server.
 */
class WtConn extends HubConn {
  constructor(client, gen, wt) {
    super(client, gen, "webtransport");
    this.wt = wt;
    this.writer = null;
  }

  /** Opens a session and its stream; rejects with OpenFailed (try the next transport). */
  static async open(client, gen) {
    const WT = client._opts.webtransport ?? globalThis.WebTransport;
    if (typeof WT !== "function") throw new OpenFailed("no WebTransport implementation");
    const url = client._opts.webtransportUrl ?? client._ep.wt;
    let wt;
    try {
      wt = client._opts.webtransportOptions ? new WT(url, client._opts.webtransportOptions) : new WT(url);
    } catch (e) {
      throw new OpenFailed(`cannot open ${url}: ${e?.message ?? e}`);
    }
    // Both reject when the session fails; they are awaited below, or by the connection.
    Promise.resolve(wt.ready).catch(() => {});
    Promise.resolve(wt.closed).catch(() => {});
    const conn = new WtConn(client, gen, wt);
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("WebTransport open timed out")), client._opts.timeout);
    });
    let stream;
    try {
      await Promise.race([wt.ready, timeout]);
      stream = await Promise.race([wt.createBidirectionalStream(), timeout]);
    } catch (e) {
      conn.closed = true;
      conn.shutdown(0, "open failed");
      throw new OpenFailed(`cannot open ${url}: ${e?.message ?? e}`);
    } finally {
      clearTimeout(timer);
    }
    conn.start(stream);
    return conn;
  }

  start(stream) {
    this.writer = stream.writable.getWriter();
    Promise.resolve(this.writer.closed).catch(() => {});
    this.read(stream.readable).then(
      () => this.onClose(0, "stream finished"),
      (e) => this.onClose(0, `stream failed: ${e?.message ?? e}`),
    );
    Promise.resolve(this.wt.closed).then(
      (info) => this.onClose(Number(info?.closeCode ?? 0), String(info?.reason ?? "session closed")),
      (e) => this.onClose(0, `session failed: ${e?.message ?? e}`),
    );
  }

  /** Reads `u32 length + ServerFrame` frames until the stream ends. */
  async read(readable) {
    const reader = readable.getReader();
    let buf = new Uint8Array(0);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.closed) return;
        const chunk = value instanceof Uint8Array ? value : new Uint8Array(value);
        if (buf.length === 0) {
          buf = chunk;
        } else {
          const joined = new Uint8Array(buf.length + chunk.length);
          joined.set(buf);
          joined.set(chunk, buf.length);
          buf = joined;
        }
        while (buf.length >= 4) {
          const len = new DataView(buf.buffer, buf.byteOffset, 4).getUint32(0);
          if (len > WT_MAX_FRAME) throw new Error(`frame of ${len} bytes`);
          if (buf.length < 4 + len) break;
          const frame = pbDecode("ServerFrame", buf.subarray(4, 4 + len));
          buf = buf.subarray(4 + len);
          this.onFrame(frame);
          if (this.closed) return;
        }
      }
    } finally {
      try {
        reader.releaseLock();
      } catch {
        // a read is pending
      }
    }
  }

  _send(command) {
    const body = pbEncode("Command", command).finish();
    const frame = new Uint8Array(4 + body.length);
    new DataView(frame.buffer).setUint32(0, body.length);
    frame.set(body, 4);
    // Writes queue in order; a failed one ends the stream, which closes the connection.
    this.writer.write(frame).catch(() => {});
  }

  onClose(code, reason) {
    if (this.closed) return;
    super.onClose(code, reason);
    this.shutdown(0, "");
  }

  /** Closes the session (every stream of it). */
  shutdown(code, reason) {
    try {
      this.wt.close({ closeCode: code, reason });
    } catch {
      // closed already
    }
  }

  close(code = 0, reason = "") {
    if (this.closed) return;
    this.closed = true;
    this.failPending();
    this.shutdown(code, reason);
  }
}

// ------------------------------------------------------------------ SSE stream

/** One `GET /v1/sse` stream (read with fetch, so it works in Node and carries headers). */
class SseStream {
  constructor(client, gen, channels) {
    this.client = client;
    this.gen = gen;
    this.channels = channels;
    this.kind = "sse";
    this.abort = new AbortController();
    this.closed = false;
    this.idle = null;
  }

  /** Starts the stream; resolves once the server answered 200 (refusals reject with HubError). */
  async start(cursor) {
    const q = new URLSearchParams();
    for (const c of this.channels) q.append("channel", c);
    if (cursor) q.set("last_event_id", cursor);
    const res = await this.client._http(`/v1/sse?${q}`, {
      headers: { Accept: "text/event-stream" },
      signal: this.abort.signal,
    });
    if (!res.ok) {
      throw await errorOf(res);
    }
    if (!res.body) throw new HubError(ClientCode.NotAvailable, "SSE response without a body stream");
    this.read(res.body).then(
      () => this.end(null),
      (e) => this.end(e),
    );
  }

  touch() {
    clearTimeout(this.idle);
    this.idle = setTimeout(() => {
      this.stale = true;
      this.abort.abort();
    }, this.client._opts.sseIdleTimeout);
  }

  async read(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let data = [];
    this.touch();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      this.touch();
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === "\r" && buf[nl + 1] === "\n" ? 2 : 1));
        if (line === "") {
          if (data.length > 0 && !this.closed) this.dispatch(data.join("\n"));
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line[5] === " " ? 6 : 5));
        }
        // `id:` lines are not needed (the SDK computes cursors from its own positions), `:`
        // comments are pings.
        if (this.closed) return;
      }
    }
  }

  dispatch(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this.client._log("unparsable SSE event", text);
      return;
    }
    this.client._onSseFrame(this, frame);
  }

  end(err) {
    clearTimeout(this.idle);
    if (this.closed) return;
    this.closed = true;
    this.client._onSseEnd(this, err);
  }

  close() {
    clearTimeout(this.idle);
    this.closed = true;
    this.abort.abort();
  }
}

/** The HubError of a refused HTTP request (`{"error":{"code","message","temporary"}}`). */
async function errorOf(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  const e = body?.error;
  if (e && typeof e.code === "number") {
    return new HubError(e.code, e.message ?? `HTTP ${res.status}`, Boolean(e.temporary) || res.status >= 500);
  }
  return new HubError(0, `HTTP ${res.status}`, res.status >= 500 || res.status === 429);
}

// ------------------------------------------------------------------ the client

/**
 * A connection to a switchboard server, re-established with backoff until `disconnect()` or a
 * permanent refusal. Events: `state`, `connecting`, `connected`, `disconnected`, `error`.
 */
export class Client extends Emitter {
  /**
   * @param {string} url the server: `https://host[:port][/prefix]` (or `wss://host/v1/ws`, or a
   *   path resolved against the page)
   * @param {object} [opts] see docs/clients.md
   */
  constructor(url, opts = {}) {
    super();
    this._ep = endpoints(url);
    this._opts = { ...DEFAULTS, ...compact(opts) }; // an option given as undefined/null = its default
    for (const t of this._opts.transports) {
      if (!["websocket", "sse", "webtransport"].includes(t)) {
        throw new TypeError(`switchboard: unknown transport ${t}`);
      }
    }
    // Opting in to WebTransport never removes the fallback: a list naming only "webtransport"
    // goes on with the default WebSocket, then SSE.
    const t = this._opts.transports;
    this._transports = t.length > 0 && t.every((x) => x === "webtransport") ? [...t, ...DEFAULTS.transports] : [...t];
    /** WebTransport failed to open where a later transport worked: skipped until `connect()`. */
    this._wtBlocked = false;
    /** @type {"disconnected"|"connecting"|"connected"} */
    this.state = State.Disconnected;
    /** The transport in use while connected: "webtransport", "websocket" or "sse". */
    this.transport = "";
    /** This connection's client id (empty over SSE until the stream's connect reply). */
    this.clientId = "";
    /** The connection's user (token `sub`, empty = anonymous). */
    this.user = "";
    this._token = this._opts.token ?? "";
    /** @type {Map<string, Subscription>} */
    this._subs = new Map();
    /** @type {Map<string, Room>} */
    this._rooms = new Map();
    this._gen = 0;
    this._conn = null; // WsConn or WtConn, or null
    this._sse = null; // SseStream, or null (SSE mode may be connected without a stream)
    this._sseMode = false;
    this._sseResyncTimer = null;
    this._attempt = 0;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._lastDisconnect = null;
    /** @type {Array<{resolve: Function, reject: Function}>} */
    this._waiters = [];
  }

  /** Starts connecting (no-op when connecting or connected). */
  connect() {
    if (this.state !== State.Disconnected) return;
    this._attempt = 0;
    this._wtBlocked = false;
    this._setState(State.Connecting, { code: ClientCode.Called, reason: "connect called" });
    this._startAttempt();
  }

  /** Closes the connection and stops reconnecting; subscriptions are kept for `connect()`. */
  disconnect() {
    this._stop({ code: ClientCode.Called, reason: "disconnect called", reconnect: false });
  }

  /** Resolves once connected (rejects when the client is or becomes disconnected, or on timeout). */
  ready(timeout = this._opts.timeout) {
    if (this.state === State.Connected) return Promise.resolve();
    if (this.state === State.Disconnected) {
      return Promise.reject(new HubError(ClientCode.NotConnected, "client is disconnected"));
    }
    return new Promise((resolve, reject) => {
      const w = { resolve, reject, timer: null };
      w.timer = setTimeout(() => {
        this._waiters = this._waiters.filter((x) => x !== w);
        reject(new HubError(ClientCode.Timeout, `not connected within ${timeout} ms`, true));
      }, timeout);
      this._waiters.push(w);
    });
  }

  /**
   * A new subscription (not subscribed until `subscribe()`); throws if one exists for `channel`.
   * @param {string} channel
   * @param {{since?: {offset: number|string, epoch: string}, data?: any}} [opts]
   */
  newSubscription(channel, opts = {}) {
    if (this._subs.has(channel)) {
      throw new Error(`switchboard: a subscription to ${channel} exists already`);
    }
    const sub = new Subscription(this, channel, opts);
    this._subs.set(channel, sub);
    return sub;
  }

  /** @param {string} channel */
  getSubscription(channel) {
    return this._subs.get(channel) ?? null;
  }

  /** Unsubscribes and forgets the subscription. */
  removeSubscription(sub) {
    if (!sub) return;
    sub.unsubscribe();
    if (this._subs.get(sub.channel) === sub) this._subs.delete(sub.channel);
  }

  /** Every subscription, by channel. */
  subscriptions() {
    return Object.fromEntries(this._subs);
  }

  /**
   * Publishes `data` (any JSON value; a Uint8Array/ArrayBuffer travels as binary) to `channel`.
   * Resolves with the publication's position (`offset` 0 on channels without history).
   */
  async publish(channel, data, opts = {}) {
    const body = compact({ channel, ...payloadFields(data), idempotencyKey: opts.idempotencyKey });
    if (this.state === State.Connecting) await this.ready();
    if (this._sseMode && this.state === State.Connected) {
      const res = await this._http("/v1/publish", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const r = await res.json().catch(() => null);
      if (!res.ok || r?.error) throw r?.error ? hubError(r.error) : await errorOf(res);
      return { offset: Number(r?.result?.offset ?? 0), epoch: r?.result?.epoch ?? "" };
    }
    const reply = await this._call("publish", body);
    return { offset: Number(reply.publish?.offset ?? 0), epoch: reply.publish?.epoch ?? "" };
  }

  /**
   * History of `channel`: `limit` publications (0, the default, = only the current position)
   * after `since` (before it with `reverse`).
   */
  async history(channel, opts = {}) {
    const since = opts.since
      ? { offset: String(opts.since.offset ?? 0), epoch: opts.since.epoch ?? "" }
      : undefined;
    const reply = await this._call(
      "history",
      compact({ channel, limit: opts.limit ?? 0, since, reverse: opts.reverse || undefined }),
    );
    const h = reply.history ?? {};
    return {
      publications: (h.publications ?? []).map((p) => publicationCtx({ channel, ...p })),
      offset: Number(h.offset ?? 0),
      epoch: h.epoch ?? "",
    };
  }

  /** Who is subscribed to `channel`: client id → {user, client, connInfo}. */
  async presence(channel) {
    const reply = await this._call("presence", { channel });
    const clients = {};
    for (const [id, info] of Object.entries(reply.presence?.presence ?? {})) {
      clients[id] = clientInfo(info);
    }
    return { clients };
  }

  /** How many clients and distinct users are subscribed to `channel`. */
  async presenceStats(channel) {
    const reply = await this._call("presenceStats", { channel });
    const s = reply.presenceStats ?? {};
    return { numClients: Number(s.numClients ?? 0), numUsers: Number(s.numUsers ?? 0) };
  }

  /**
   * Joins the signaling room `name` and negotiates a WebRTC connection with each of its peers
   * (browsers only). Resolves with the Room once joined.
   * @param {string} name
   * @param {object} [opts]
   */
  async joinRoom(name, opts = {}) {
    if (this._rooms.has(name)) throw new Error(`switchboard: already in room ${name}`);
    const room = new Room(this, name, opts);
    this._rooms.set(name, room);
    try {
      await room._start();
    } catch (e) {
      this._rooms.delete(name);
      room._teardown();
      throw e;
    }
    return room;
  }

  // ---------------------------------------------------------------- internals

  _log(...args) {
    if (this._opts.debug) console.debug("switchboard:", ...args);
  }

  _setState(state, ctx) {
    if (this.state === state) {
      if (state !== State.Connected) this._emit(state, ctx);
      return;
    }
    const old = this.state;
    this.state = state;
    this._emit("state", { oldState: old, newState: state });
    this._emit(state, ctx);
  }

  _authHeaders() {
    return this._token ? { Authorization: `Bearer ${this._token}` } : {};
  }

  /** An HTTP request to the server with the token. */
  _http(path, init = {}) {
    const f = this._opts.fetch ?? globalThis.fetch;
    if (!f) return Promise.reject(new HubError(ClientCode.NoTransport, "no fetch implementation"));
    return f(`${this._ep.http}${path}`, {
      cache: "no-store",
      ...init,
      headers: { ...this._authHeaders(), ...(init.headers ?? {}) },
    });
  }

  async _refreshToken() {
    const get = this._opts.getToken;
    if (!get) return false;
    const t = await get();
    this._token = typeof t === "string" ? t : "";
    return true;
  }

  async _startAttempt() {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    const gen = ++this._gen;
    this._lastDisconnect = null;
    try {
      if (!this._token && this._opts.getToken) await this._refreshToken();
      if (gen !== this._gen) return;
      let lastOpenError = null;
      let wtFailed = false;
      for (const kind of this._transports) {
        if (gen !== this._gen) return;
        if (kind === "webtransport" || kind === "websocket") {
          if (kind === "webtransport") {
            if (this._wtBlocked) continue;
            if (typeof (this._opts.webtransport ?? globalThis.WebTransport) !== "function") {
              this._log("webtransport: not available here, trying the next transport");
              continue;
            }
          }
          let conn;
          try {
            conn = kind === "webtransport" ? await WtConn.open(this, gen) : await WsConn.open(this, gen);
          } catch (e) {
            if (!(e instanceof OpenFailed)) throw e;
            this._log(`${kind}:`, e.message);
            lastOpenError = e;
            if (kind === "webtransport") wtFailed = true;
            continue;
          }
          if (gen !== this._gen) {
            conn.close();
            return;
          }
          if (wtFailed) this._wtBlocked = true;
          await this._handshake(conn, gen);
          return;
        }
        if (kind === "sse") {
          if (wtFailed) this._wtBlocked = true;
          await this._startSse(gen);
          return;
        }
      }
      throw new HubError(
        ClientCode.NoTransport,
        lastOpenError ? lastOpenError.message : "no usable transport",
        true,
      );
    } catch (e) {
      if (gen !== this._gen) return;
      this._attemptFailed(e);
    }
  }

  /** `connect` on an open WebSocket or WebTransport stream; after 109 once more with a fresh token. */
  async _handshake(conn, gen) {
    this._conn = conn;
    this._sseMode = false;
    let refreshed = false;
    for (;;) {
      try {
        const reply = await conn.call(
          "connect",
          compact({
            token: this._token || undefined,
            name: this._opts.name,
            version: this._opts.version,
          }),
          this._opts.timeout,
        );
        if (gen !== this._gen) return;
        this._connected(conn.kind, reply.connect ?? {});
        return;
      } catch (e) {
        if (gen !== this._gen) return;
        if (conn.closed && this._conn !== conn) return; // _onTransportClosed took over
        if (e instanceof HubError && e.code === ClientCode.NotConnected && conn.closed) return;
        if (e instanceof HubError && e.code === TOKEN_EXPIRED && !refreshed && this._opts.getToken) {
          // The server keeps the connection after 109: connect again with a new token.
          refreshed = true;
          this._emit("error", { type: "connect", error: e });
          await this._refreshToken();
          if (gen !== this._gen) return;
          continue;
        }
        conn.close();
        throw e;
      }
    }
  }

  _connected(transport, result) {
    this._attempt = 0;
    this.transport = transport;
    this.clientId = result.clientId ?? "";
    this.user = result.user ?? "";
    this._setState(State.Connected, {
      client: this.clientId,
      user: this.user,
      transport,
      version: result.version ?? "",
      expires: Boolean(result.expires),
      ttl: Number(result.ttl ?? 0),
    });
    for (const w of this._waiters.splice(0)) {
      clearTimeout(w.timer);
      w.resolve();
    }
    if (transport !== "sse") {
      this._startPing();
      for (const sub of this._subs.values()) {
        if (sub.state === SubscriptionState.Subscribing) sub._sendSubscribe();
      }
      for (const room of this._rooms.values()) room._rejoin();
    }
  }

  _attemptFailed(e) {
    const err = e instanceof HubError ? e : new HubError(ClientCode.TransportClosed, String(e?.message ?? e), true);
    if (e instanceof UnauthorizedError) {
      this._emit("error", { type: "connect", error: e });
      this._stop({ code: 3500, reason: e.message || "unauthorized", reconnect: false, error: e });
      return;
    }
    this._emit("error", { type: "connect", error: err });
    const permanent = err.code >= 100 && err.code < 200 && !err.temporary;
    if (permanent && !(err.code === TOKEN_EXPIRED && this._opts.getToken)) {
      const [code, reason] = CONNECT_DISCONNECT[err.code] ?? [err.code, err.message];
      this._stop({ code, reason, reconnect: false, error: err });
      return;
    }
    this._scheduleReconnect({ code: err.code, reason: err.message });
  }

  _scheduleReconnect(ctx) {
    this._closeTransport();
    for (const sub of this._subs.values()) sub._connectionLost(ctx);
    this._setState(State.Connecting, ctx);
    const delay = backoff(this._attempt++, this._opts.minReconnectDelay, this._opts.maxReconnectDelay);
    this._log(`reconnecting in ${delay} ms`, ctx);
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => this._startAttempt(), delay);
  }

  _closeTransport() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    clearTimeout(this._sseResyncTimer);
    this._sseResyncTimer = null;
    if (this._conn) this._conn.close();
    this._conn = null;
    if (this._sse) this._sse.close();
    this._sse = null;
    this._sseMode = false;
    this.transport = "";
  }

  /** Stops for good (until `connect()`): disconnected with `ctx.code` and `ctx.reason`. */
  _stop(ctx) {
    this._gen++;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._closeTransport();
    for (const sub of this._subs.values()) sub._connectionLost(ctx);
    // The rooms end with the client: their peer connections close and `left` says why.
    for (const room of [...this._rooms.values()]) room._end(ctx);
    for (const w of this._waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new HubError(ClientCode.NotConnected, `disconnected: ${ctx.reason}`));
    }
    this._setState(State.Disconnected, ctx);
  }

  /** A transport ended: reconnect, unless the server said not to. */
  _onTransportClosed(conn, close) {
    if (conn !== this._conn && conn !== this._sse) return;
    const d = this._lastDisconnect;
    let ctx;
    if (d) {
      ctx = d;
    } else if (close.code >= 3000 && close.code < 4000) {
      ctx = { code: close.code, reason: close.reason, reconnect: close.code < 3500 };
    } else {
      ctx = { code: ClientCode.TransportClosed, reason: `transport closed${close.code ? ` (${close.code}${close.reason ? ` ${close.reason}` : ""})` : ""}`, reconnect: true };
    }
    for (const room of this._rooms.values()) room._connectionLost();
    if (ctx.reconnect) this._scheduleReconnect({ code: ctx.code, reason: ctx.reason });
    else this._stop({ code: ctx.code, reason: ctx.reason, reconnect: false });
  }

  _startPing() {
    clearInterval(this._pingTimer);
    const conn = this._conn;
    this._pingTimer = setInterval(() => {
      if (this._conn !== conn || !conn) return;
      conn.call("ping", {}, this._opts.timeout).catch((e) => {
        if (this._conn !== conn || e.code !== ClientCode.Timeout) return;
        this._lastDisconnect = { code: ClientCode.Stale, reason: "no ping reply", reconnect: true };
        conn.close(4000, "no ping reply");
        this._onTransportClosed(conn, { code: 4000, reason: "no ping reply" });
      });
    }, this._opts.pingInterval);
  }

  /** A command on the WebSocket, waiting for the connection while connecting. */
  async _call(method, body) {
    if (this.state === State.Connecting) await this.ready();
    if (this.state !== State.Connected) {
      throw new HubError(ClientCode.NotConnected, "client is disconnected");
    }
    if (this._sseMode || !this._conn) {
      throw new HubError(ClientCode.NotAvailable, `${method} is not available over ${this.transport}`);
    }
    return this._conn.call(method, body, this._opts.timeout);
  }

  _onPush(push, conn) {
    if (push.publication) {
      this._subs.get(push.publication.channel)?._onPublication(push.publication);
    } else if (push.join) {
      this._subs.get(push.join.channel)?._onJoinLeave("join", push.join);
    } else if (push.leave) {
      this._subs.get(push.leave.channel)?._onJoinLeave("leave", push.leave);
    } else if (push.unsubscribe) {
      this._subs.get(push.unsubscribe.channel)?._onServerUnsubscribe(push.unsubscribe);
    } else if (push.disconnect) {
      const d = push.disconnect;
      this._lastDisconnect = {
        code: Number(d.code ?? 0),
        reason: d.reason ?? "",
        reconnect: Boolean(d.reconnect),
      };
    } else if (push.roomJoin) {
      this._rooms.get(push.roomJoin.room)?._onRoomJoin(push.roomJoin);
    } else if (push.roomLeave) {
      this._rooms.get(push.roomLeave.room)?._onRoomLeave(push.roomLeave);
    } else if (push.signal) {
      this._rooms.get(push.signal.room)?._onSignal(push.signal);
    }
    void conn;
  }

  // ---------------------------------------------------------------- SSE

  /** Subscriptions carried by an SSE stream (subscribing or subscribed), in a stable order. */
  _sseSubs() {
    return [...this._subs.values()].filter((s) => s.state !== SubscriptionState.Unsubscribed);
  }

  _cursor(subs) {
    const parts = subs.map((s) => (s._positioned ? `${s._offset}.${s._epoch}` : "0."));
    return parts.some((p) => p !== "0.") ? parts.join(",") : "";
  }

  /** SSE as the connection: a stream over the subscriptions, or just a reachability probe. */
  async _startSse(gen) {
    this._sseMode = true;
    this._conn = null;
    await this._sseOpen(gen);
  }

  /**
   * Opens the stream over the current subscriptions. A channel refusal (the stream is one
   * request, so the server does not say which channel) fails the subscriptions new in it.
   */
  async _sseOpen(gen) {
    for (;;) {
      const subs = this._sseSubs();
      if (subs.length === 0) {
        if (this.state === State.Connected) return;
        // No channel to stream: check the server answers (a stream needs at least one
        // channel, so this request is refused with 400/107), then count as connected.
        const res = await this._http("/v1/sse", { headers: { Accept: "text/event-stream" } });
        const err = await errorOf(res);
        if (err.code !== 107) throw err;
        if (gen !== this._gen) return;
        this._connected("sse", {});
        return;
      }
      try {
        await this._openSseStream(gen, subs);
        return;
      } catch (e) {
        if (gen !== this._gen) return;
        if (!(e instanceof HubError) || e.temporary || !CHANNEL_ERRORS.has(e.code)) throw e;
        const fresh = subs.filter((s) => !s._sseSeen);
        for (const s of fresh.length > 0 ? fresh : subs) s._failed(e);
      }
    }
  }

  async _openSseStream(gen, subs) {
    let refreshed = false;
    for (;;) {
      const stream = new SseStream(this, gen, subs.map((s) => s.channel));
      stream.subs = subs;
      this._sse = stream;
      try {
        await stream.start(this._cursor(subs));
        return;
      } catch (e) {
        if (this._sse === stream) this._sse = null;
        if (e instanceof HubError && e.code === TOKEN_EXPIRED && !refreshed && this._opts.getToken) {
          refreshed = true;
          this._emit("error", { type: "connect", error: e });
          await this._refreshToken();
          if (gen !== this._gen) return;
          continue;
        }
        throw e;
      }
    }
  }

  _onSseFrame(stream, frame) {
    if (stream !== this._sse || stream.gen !== this._gen) return;
    if (frame.reply) {
      const id = Number(frame.reply.id ?? 0);
      if (frame.reply.error) {
        this._emit("error", { type: "sse", error: hubError(frame.reply.error) });
      } else if (id === 0) {
        if (this.state !== State.Connected) this._connected("sse", frame.reply.connect ?? {});
        else this.clientId = frame.reply.connect?.clientId ?? this.clientId;
      } else {
        const sub = stream.subs[id - 1];
        if (sub && sub.state !== SubscriptionState.Unsubscribed) {
          sub._onSubscribeResult(frame.reply.subscribe ?? {});
        }
      }
    } else if (frame.push) {
      this._onPush(frame.push, stream);
    }
  }

  _onSseEnd(stream, err) {
    if (stream !== this._sse || stream.gen !== this._gen) return;
    this._sse = null;
    const d = this._lastDisconnect;
    if (d && !d.reconnect) {
      this._stop({ code: d.code, reason: d.reason, reconnect: false });
      return;
    }
    if (stream.resync) {
      // Ended after an unsubscribe 2500: open a new stream that recovers.
      this._sseResync();
      return;
    }
    this._sse = stream; // so _onTransportClosed accepts it
    const reason = stream.stale ? "SSE stream silent" : err ? String(err.message ?? err) : "SSE stream ended";
    this._lastDisconnect = d ?? (stream.stale ? { code: ClientCode.Stale, reason, reconnect: true } : null);
    this._onTransportClosed(stream, { code: 0, reason });
  }

  /** The set of SSE channels changed: restart the stream (batched). */
  _sseResync() {
    if (!this._sseMode || this.state !== State.Connected) return;
    clearTimeout(this._sseResyncTimer);
    this._sseResyncTimer = setTimeout(() => this._sseRestart(), 0);
  }

  async _sseRestart() {
    const gen = this._gen;
    if (this._sse) this._sse.close();
    this._sse = null;
    try {
      await this._sseOpen(gen);
    } catch (e) {
      if (gen !== this._gen) return;
      this._attemptFailed(e);
    }
  }
}

// ------------------------------------------------------------------ subscriptions

/**
 * One channel subscription. Events: `state`, `subscribing`, `subscribed`, `unsubscribed`,
 * `publication`, `join`, `leave`, `error`, `recoveryfailed`.
 */
export class Subscription extends Emitter {
  constructor(client, channel, opts) {
    super();
    this._client = client;
    this.channel = channel;
    /** @type {"unsubscribed"|"subscribing"|"subscribed"} */
    this.state = SubscriptionState.Unsubscribed;
    this._opts = opts;
    this._positioned = false;
    this._offset = 0;
    this._epoch = "";
    if (opts.since) {
      this._positioned = true;
      this._offset = Number(opts.since.offset ?? 0);
      this._epoch = String(opts.since.epoch ?? "");
    }
    this._attempt = 0;
    this._retryTimer = null;
    this._inflight = null;
    this._buffer = null;
    this._sseSeen = false;
  }

  /** The last position seen (null on channels without history). */
  get position() {
    return this._positioned ? { offset: this._offset, epoch: this._epoch } : null;
  }

  /** Subscribes (now if connected, else as soon as the client connects). */
  subscribe() {
    if (this.state !== SubscriptionState.Unsubscribed) return;
    this._attempt = 0;
    this._sseSeen = false;
    this._setState(SubscriptionState.Subscribing, { code: ClientCode.Called, reason: "subscribe called" });
    const c = this._client;
    if (c.state !== State.Connected) return;
    if (c._sseMode) c._sseResync();
    else this._sendSubscribe();
  }

  /** Unsubscribes; keeps the position, so a later `subscribe()` recovers. */
  unsubscribe() {
    if (this.state === SubscriptionState.Unsubscribed) return;
    const wasActive = this.state === SubscriptionState.Subscribed || this._inflight;
    this._reset();
    this._setState(SubscriptionState.Unsubscribed, { code: ClientCode.Called, reason: "unsubscribe called" });
    const c = this._client;
    if (c.state !== State.Connected) return;
    if (c._sseMode) c._sseResync();
    else if (wasActive) c._conn?.call("unsubscribe", { channel: this.channel }, c._opts.timeout).catch(() => {});
  }

  /** Publishes to this channel (see `Client.publish`). */
  publish(data, opts) {
    return this._client.publish(this.channel, data, opts);
  }

  history(opts) {
    return this._client.history(this.channel, opts);
  }

  presence() {
    return this._client.presence(this.channel);
  }

  presenceStats() {
    return this._client.presenceStats(this.channel);
  }

  /** Resolves once subscribed (rejects when unsubscribed meanwhile, or on timeout). */
  ready(timeout = this._client._opts.timeout) {
    if (this.state === SubscriptionState.Subscribed) return Promise.resolve();
    if (this.state === SubscriptionState.Unsubscribed) {
      return Promise.reject(new HubError(ClientCode.NotConnected, "subscription is unsubscribed"));
    }
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.off("subscribed", ok);
        this.off("unsubscribed", ko);
      };
      const ok = () => {
        done();
        resolve();
      };
      const ko = (ctx) => {
        done();
        reject(new HubError(ctx.code, ctx.reason));
      };
      const timer = setTimeout(() => {
        done();
        reject(new HubError(ClientCode.Timeout, `not subscribed within ${timeout} ms`, true));
      }, timeout);
      this.on("subscribed", ok);
      this.on("unsubscribed", ko);
    });
  }

  // ---------------------------------------------------------------- internals

  _setState(state, ctx) {
    const old = this.state;
    this.state = state;
    if (old !== state) this._emit("state", { oldState: old, newState: state });
    this._emit(state, { channel: this.channel, ...ctx });
  }

  _reset() {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._inflight = null;
    this._buffer = null;
  }

  /** The connection went away: wait for the next one (subscribing). */
  _connectionLost(ctx) {
    if (this.state === SubscriptionState.Unsubscribed) return;
    this._reset();
    if (this.state === SubscriptionState.Subscribing) return;
    this._setState(SubscriptionState.Subscribing, { code: ctx.code, reason: ctx.reason });
  }

  async _sendSubscribe() {
    const c = this._client;
    if (!c._conn || c._sseMode) return;
    const conn = c._conn;
    const req = { channel: this.channel };
    if (this._positioned) req.recover = { offset: String(this._offset), epoch: this._epoch };
    const token = {};
    this._inflight = token;
    this._buffer = [];
    let reply;
    try {
      reply = await conn.call("subscribe", req, c._opts.timeout);
    } catch (e) {
      if (this._inflight !== token) return;
      this._inflight = null;
      this._buffer = null;
      if (c._conn !== conn || e.code === ClientCode.NotConnected || e.code === CONNECTION_CLOSED) {
        return; // the reconnect subscribes again
      }
      if (e.temporary) {
        this._emit("error", { channel: this.channel, type: "subscribe", error: e });
        const delay = backoff(this._attempt++, c._opts.minReconnectDelay, c._opts.maxReconnectDelay);
        this._retryTimer = setTimeout(() => {
          if (this.state === SubscriptionState.Subscribing && c._conn === conn) this._sendSubscribe();
        }, delay);
        return;
      }
      this._failed(e);
      return;
    }
    if (this._inflight !== token || c._conn !== conn) return;
    this._inflight = null;
    const buffered = this._buffer ?? [];
    this._buffer = null;
    this._onSubscribeResult(reply.subscribe ?? {});
    for (const p of buffered) this._onPublication(p);
  }

  /** A permanent refusal: unsubscribed with the server's code. */
  _failed(err) {
    this._reset();
    this._emit("error", { channel: this.channel, type: "subscribe", error: err });
    this._setState(SubscriptionState.Unsubscribed, { code: err.code, reason: err.message });
  }

  _onSubscribeResult(r) {
    const wasSubscribed = this.state === SubscriptionState.Subscribed;
    this._attempt = 0;
    this._sseSeen = true;
    const recoverable = Boolean(r.recoverable);
    const wasRecovering = Boolean(r.wasRecovering);
    const recovered = Boolean(r.recovered);
    const top = { offset: Number(r.offset ?? 0), epoch: r.epoch ?? "" };
    const pubs = recovered ? (r.publications ?? []) : [];
    const lost = wasRecovering && !recovered;
    if (!recoverable) {
      this._positioned = false;
      this._offset = 0;
      this._epoch = "";
    } else if (lost || !this._positioned) {
      this._positioned = true;
      this._offset = top.offset;
      this._epoch = top.epoch;
    }
    // Otherwise (recovered) the position advances with the recovered publications below.
    if (!wasSubscribed) {
      this._setState(SubscriptionState.Subscribed, {
        recoverable,
        positioned: recoverable,
        streamPosition: recoverable ? top : undefined,
        wasRecovering,
        recovered,
      });
    }
    if (lost) {
      this._emit("recoveryfailed", {
        channel: this.channel,
        streamPosition: recoverable ? top : undefined,
        reason: recoverable
          ? "the publications missed are no longer in history (or the stream's epoch changed)"
          : "the channel keeps no history",
      });
    }
    // Over SSE the recovered publications follow the reply as pushes; here they are in it.
    for (const p of pubs) this._onPublication({ channel: this.channel, ...p });
  }

  _onPublication(p) {
    if (this._buffer) {
      this._buffer.push(p);
      return;
    }
    if (this.state !== SubscriptionState.Subscribed) return;
    const offset = Number(p.offset ?? 0);
    const epoch = p.epoch ?? "";
    if (this._positioned && offset > 0) {
      if (epoch === this._epoch && offset <= this._offset) return; // seen already
      if (epoch !== this._epoch || offset > this._offset + 1) {
        // A gap or a new epoch: the server normally says so with unsubscribe 2500; resubscribe
        // with recovery either way (it delivers what is missing, or reports the loss).
        this._resubscribe();
        return;
      }
      this._offset = offset;
    }
    this._emit("publication", publicationCtx({ channel: this.channel, ...p }));
  }

  _onJoinLeave(kind, m) {
    if (this.state !== SubscriptionState.Subscribed) return;
    this._emit(kind, { channel: this.channel, info: clientInfo(m.info) });
  }

  _onServerUnsubscribe(u) {
    const code = Number(u.code ?? 0);
    const reason = u.reason ?? "";
    if (code === UNSUB_INSUFFICIENT_STATE) {
      this._reset();
      this._setState(SubscriptionState.Subscribing, { code, reason });
      const c = this._client;
      if (c._sseMode) {
        if (c._sse) c._sse.resync = true; // the stream ends now; the next one recovers
      } else {
        this._sendSubscribe();
      }
      return;
    }
    this._reset();
    this._setState(SubscriptionState.Unsubscribed, { code, reason });
  }

  /** Ends the server-side subscription and subscribes again with recovery. */
  _resubscribe() {
    const c = this._client;
    this._reset();
    this._setState(SubscriptionState.Subscribing, {
      code: ClientCode.InsufficientState,
      reason: "gap in the publications",
    });
    if (c._sseMode) {
      c._sseResync();
      return;
    }
    const conn = c._conn;
    if (!conn) return;
    const token = {};
    this._inflight = token;
    this._buffer = [];
    conn
      .call("unsubscribe", { channel: this.channel }, c._opts.timeout)
      .catch(() => {})
      .then(() => {
        if (this._inflight === token && c._conn === conn) this._sendSubscribe();
      });
  }
}

// ------------------------------------------------------------------ rooms (WebRTC)

/**
 * One peer of a room: its RTCPeerConnection (perfect negotiation with the role the server
 * assigned), the default data channel, and its tracks.
 */
class RoomPeer {
  constructor(room, id, polite, data, info) {
    this.room = room;
    /** The peer id. */
    this.id = id;
    /** Our role towards this peer (true: we roll back our offer on a collision). */
    this.polite = polite;
    /** The join metadata it gave. */
    this.data = data ?? null;
    this.info = info;
    /** @type {RTCPeerConnection|null} */
    this.pc = null;
    /** @type {RTCDataChannel|null} the default data channel, when the room has one */
    this.channel = null;
    this._makingOffer = false;
    this._ignoreOffer = false;
    this._settingRemoteAnswer = false;
    this._pending = [];
    this._endSent = new Set();
    this._queue = Promise.resolve();
  }

  /** The RTCPeerConnection, created on first use (with the default data channel when `offer`). */
  connection(offer) {
    if (this.pc) return this.pc;
    const room = this.room;
    const PC = room._opts.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    if (!PC) throw new Error("switchboard: rooms need RTCPeerConnection (a browser)");
    const pc = new PC(room._rtcConfig());
    this.pc = pc;
    for (const s of room._streams) for (const t of s.getTracks()) pc.addTrack(t, s);
    const label = room._opts.dataChannel === undefined ? "data" : room._opts.dataChannel;
    if (offer && label) this._attach(pc.createDataChannel(label));
    pc.ondatachannel = (e) => this._attach(e.channel);
    pc.onnegotiationneeded = async () => {
      try {
        this._makingOffer = true;
        await pc.setLocalDescription();
        await this._sendDescription(pc.localDescription);
      } catch (e) {
        room._error(e, this);
      } finally {
        this._makingOffer = false;
      }
    };
    pc.onicecandidate = (e) => this._sendCandidate(e.candidate);
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === "failed") {
        room._log(`ICE to ${this.id} failed: restarting ICE`);
        pc.restartIce();
      }
    };
    pc.onconnectionstatechange = () => {
      room._emit("connectionstatechange", { peer: this, state: pc.connectionState });
    };
    pc.ontrack = (e) => room._emit("track", { peer: this, track: e.track, streams: [...e.streams] });
    return pc;
  }

  _attach(dc) {
    const label = this.room._opts.dataChannel === undefined ? "data" : this.room._opts.dataChannel;
    if (label && dc.label === label) {
      this.channel = dc;
      dc.addEventListener("message", (e) => this.room._emit("message", { peer: this, data: e.data }));
      dc.addEventListener("open", () => this.room._emit("channelopen", { peer: this, channel: dc }));
    }
    // Deferred: the default channel is made while `joinRoom` runs, before handlers exist.
    setTimeout(() => this.room._emit("datachannel", { peer: this, channel: dc }), 0);
  }

  _sendDescription(desc) {
    if (!desc || (desc.type !== "offer" && desc.type !== "answer")) return Promise.resolve();
    return this.room._command(desc.type, {
      room: this.room.name,
      to: this.id,
      description: { type: desc.type, sdp: desc.sdp },
    });
  }

  _sendCandidate(candidate) {
    const room = this.room;
    const send = (c) =>
      room._command("candidate", { room: room.name, to: this.id, candidate: c }).catch((e) => room._error(e, this));
    if (candidate && candidate.candidate) {
      send(compact({
        candidate: candidate.candidate,
        sdpMid: candidate.sdpMid,
        sdpMLineIndex: candidate.sdpMLineIndex,
        usernameFragment: candidate.usernameFragment,
      }));
      return;
    }
    // End of candidates: an empty candidate per media section (once per ICE generation).
    const sdp = this.pc?.localDescription?.sdp ?? "";
    const ufrag = /^a=ice-ufrag:(\S+)/m.exec(sdp)?.[1];
    const mids = candidate?.sdpMid != null
      ? [candidate.sdpMid]
      : [...sdp.matchAll(/^a=mid:(\S+)/gm)].map((m) => m[1]);
    for (const mid of mids) {
      const key = `${ufrag}/${mid}`;
      if (this._endSent.has(key)) continue;
      this._endSent.add(key);
      send(compact({ candidate: "", sdpMid: mid, usernameFragment: ufrag }));
    }
  }

  _signal(s) {
    this._queue = this._queue.then(() => this._handle(s)).catch((e) => this.room._error(e, this));
  }

  async _handle(s) {
    if (s.offer || s.answer) {
      const desc = s.offer ?? s.answer;
      const pc = this.connection(false);
      // Perfect negotiation (W3C webrtc-pc, "Perfect negotiation example").
      const ready = !this._makingOffer && (pc.signalingState === "stable" || this._settingRemoteAnswer);
      const collision = desc.type === "offer" && !ready;
      this._ignoreOffer = !this.polite && collision;
      if (this._ignoreOffer) return;
      this._settingRemoteAnswer = desc.type === "answer";
      try {
        await pc.setRemoteDescription({ type: desc.type, sdp: desc.sdp });
      } finally {
        this._settingRemoteAnswer = false;
      }
      if (desc.type === "offer") {
        await pc.setLocalDescription();
        await this._sendDescription(pc.localDescription);
      }
      for (const c of this._pending.splice(0)) await this._addCandidate(c);
    } else if (s.candidate) {
      const pc = this.connection(false);
      if (!pc.remoteDescription) {
        this._pending.push(s.candidate);
        return;
      }
      await this._addCandidate(s.candidate);
    } else if ("bye" in s) {
      this.room._emit("bye", { peer: this, reason: s.bye ?? "" });
      this.close();
    }
  }

  async _addCandidate(c) {
    try {
      await this.pc.addIceCandidate(compact({
        candidate: c.candidate ?? "",
        sdpMid: c.sdpMid,
        sdpMLineIndex: c.sdpMLineIndex,
        usernameFragment: c.usernameFragment,
      }));
    } catch (e) {
      if (!this._ignoreOffer) this.room._error(e, this);
    }
  }

  /** Sends on the default data channel when open; returns whether it was sent. */
  send(data) {
    if (this.channel?.readyState !== "open") return false;
    this.channel.send(data);
    return true;
  }

  close() {
    try {
      this.channel?.close();
      this.pc?.close();
    } catch {
      // closing twice
    }
    this.pc = null;
    this.channel = null;
  }
}

/**
 * A signaling room with a WebRTC connection to each of its peers. Events: `joined`,
 * `peerjoined`, `peerleft`, `track`, `datachannel`, `channelopen`, `message`,
 * `connectionstatechange`, `bye`, `error`, `left`.
 */
export class Room extends Emitter {
  constructor(client, name, opts) {
    super();
    this._client = client;
    this.name = name;
    this._opts = opts;
    /** Our peer id in the room. */
    this.peerId = opts.peerId ?? randomId();
    /** Our role towards the members that were there when we joined. */
    this.polite = false;
    /** @type {Map<string, RoomPeer>} */
    this.peers = new Map();
    this.joined = false;
    this._left = false;
    this._iceServers = opts.iceServers ?? null;
    this._iceTimer = null;
    /** @type {MediaStream[]} */
    this._streams = opts.stream ? [opts.stream] : [];
    /** `negotiate: false`: no RTCPeerConnection here; signals surface as `signal` events. */
    this._manual = opts.negotiate === false;
  }

  /** The RTCConfiguration the room's connections use (ICE servers from /v1/ice-servers). */
  rtcConfiguration() {
    return this._rtcConfig();
  }

  /** Sends a description (`{type: "offer"|"answer", sdp}`) to peer `to`. */
  sendDescription(to, description) {
    const type = description?.type;
    if (type !== "offer" && type !== "answer") return Promise.reject(new Error("an offer or an answer"));
    return this._command(type, { room: this.name, to, description: { type, sdp: description.sdp } });
  }

  /** Sends an ICE candidate (`RTCIceCandidateInit`; `candidate: ""` ends them) to peer `to`. */
  sendCandidate(to, candidate) {
    return this._command("candidate", {
      room: this.name,
      to,
      candidate: compact({
        candidate: candidate?.candidate ?? "",
        sdpMid: candidate?.sdpMid,
        sdpMLineIndex: candidate?.sdpMLineIndex,
        usernameFragment: candidate?.usernameFragment,
      }),
    });
  }

  /** Tells peer `to` this side hangs up, with a reason it gets in its `bye` event. */
  bye(to, reason = "") {
    return this._command("bye", { room: this.name, to, reason });
  }

  /** Adds a local stream's tracks to every peer connection (now and later). */
  addStream(stream) {
    this._streams.push(stream);
    for (const p of this.peers.values()) {
      if (p.pc) for (const t of stream.getTracks()) p.pc.addTrack(t, stream);
    }
  }

  /** Sends `data` on every open default data channel; returns how many peers got it. */
  send(data) {
    let n = 0;
    for (const p of this.peers.values()) if (p.send(data)) n++;
    return n;
  }

  /** The client stopped for good (`disconnect()` or a permanent refusal): every peer
   * connection closes and `left` carries the client's code and reason. */
  _end(ctx) {
    if (this._left) return;
    this._left = true;
    this._teardown();
    this._client._rooms.delete(this.name);
    this._emit("left", { room: this.name, code: ctx.code, reason: ctx.reason });
  }

  /** Says bye to every peer, leaves the room and closes every connection. */
  async leave() {
    if (this._left) return;
    this._left = true;
    if (this.joined && this._client.state === State.Connected) {
      for (const p of this._manual ? [] : this.peers.values()) {
        await this._command("bye", { room: this.name, to: p.id, reason: "left" }).catch(() => {});
      }
      await this._command("roomLeave", { room: this.name }).catch(() => {});
    }
    this._teardown();
    this._client._rooms.delete(this.name);
    this._emit("left", { room: this.name });
  }

  // ---------------------------------------------------------------- internals

  _log(...args) {
    this._client._log(`room ${this.name}:`, ...args);
  }

  _error(e, peer) {
    this._emit("error", { room: this.name, peer, error: e });
  }

  _command(method, body) {
    return this._client._call(method, body);
  }

  _rtcConfig() {
    return {
      ...(this._opts.rtcConfig ?? {}),
      iceServers: this._iceServers ?? [],
      iceTransportPolicy: this._opts.relayOnly ? "relay" : "all",
    };
  }

  /** GET /v1/ice-servers, then again before the credentials expire. */
  async _fetchIceServers() {
    if (this._opts.iceServers) return;
    const res = await this._client._http("/v1/ice-servers");
    if (res.status === 404) {
      this._iceServers = []; // no STUN/TURN on this server: host candidates only
      return;
    }
    if (!res.ok) throw await errorOf(res);
    const body = await res.json();
    this._iceServers = Array.isArray(body?.iceServers) ? body.iceServers : [];
    const ttl = Number(body?.ttl ?? 0);
    clearTimeout(this._iceTimer);
    if (ttl > 0 && !this._left) {
      this._iceTimer = setTimeout(() => {
        this._fetchIceServers()
          .then(() => {
            for (const p of this.peers.values()) p.pc?.setConfiguration(this._rtcConfig());
          })
          .catch((e) => this._error(e));
      }, Math.max(5, ttl * 0.8) * 1000);
    }
  }

  async _start() {
    if (this._client._sseMode && this._client.state === State.Connected) {
      throw new HubError(ClientCode.NotAvailable, "rooms need the WebSocket transport");
    }
    await this._fetchIceServers();
    if (this._opts.relayOnly) {
      const turn = (this._iceServers ?? []).some((s) =>
        [].concat(s.urls ?? []).some((u) => String(u).startsWith("turn")));
      if (!turn) {
        throw new HubError(108, "relayOnly needs TURN, and the server hands out no TURN credentials");
      }
    }
    await this._join();
  }

  async _join() {
    const reply = await this._command("roomJoin", compact({
      room: this.name,
      peerId: this.peerId,
      data: this._opts.data,
    }));
    const r = reply.roomJoin ?? {};
    this.joined = true;
    this.polite = Boolean(r.polite);
    const members = r.members ?? [];
    // Events of the join itself are emitted once `joinRoom` has resolved and its caller could
    // attach handlers (the next macrotask).
    const later = (event, ctx) => setTimeout(() => this._emit(event, ctx), 0);
    later("joined", { room: this.name, peerId: this.peerId, polite: this.polite, members: members.map((m) => m.peerId) });
    // We are the newcomer: polite towards everyone here; we create each connection, the data
    // channel and the first offer.
    for (const m of members) {
      const p = new RoomPeer(this, m.peerId, true, payload(m), clientInfo(m.info));
      this.peers.set(p.id, p);
      later("peerjoined", { peer: p });
      if (!this._manual) p.connection(true);
    }
  }

  /** After a reconnect: the server dropped our peer with the old session; join as a newcomer. */
  _rejoin() {
    if (this._left || !this.joined) return;
    this._dropPeers();
    this._join().catch((e) => this._error(e));
  }

  _connectionLost() {
    // Peer connections may outlive the hub connection, but the others are told we left:
    // they close theirs, and we rejoin as a newcomer after the reconnect.
  }

  _dropPeers() {
    for (const p of this.peers.values()) {
      p.close();
      this._emit("peerleft", { peer: p, timedOut: false });
    }
    this.peers.clear();
  }

  _teardown() {
    clearTimeout(this._iceTimer);
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
    this.joined = false;
  }

  _onRoomJoin(j) {
    if (!j.peer || this._left) return;
    const id = j.peer.peerId;
    const polite = Boolean(j.polite);
    const old = this.peers.get(id);
    if (old && old.polite === polite && old.pc && !["failed", "closed"].includes(old.pc.connectionState)) {
      return; // already negotiating with it in this role
    }
    if (old) {
      old.close();
      this.peers.delete(id);
      this._emit("peerleft", { peer: old, timedOut: false });
    }
    const p = new RoomPeer(this, id, polite, payload(j.peer), clientInfo(j.peer.info));
    this.peers.set(id, p);
    this._emit("peerjoined", { peer: p });
    // Normally the newcomer offers and we wait; `polite` (a cross-node tie-break) makes us offer.
    if (polite && !this._manual) p.connection(true);
  }

  _onRoomLeave(l) {
    if (l.peerId === this.peerId) {
      // The room dropped us (no sign of life for too long): join again as a newcomer.
      this._dropPeers();
      if (!this._left && this._client.state === State.Connected) this._join().catch((e) => this._error(e));
      return;
    }
    const p = this.peers.get(l.peerId);
    if (!p) return;
    p.close();
    this.peers.delete(l.peerId);
    this._emit("peerleft", { peer: p, timedOut: Boolean(l.timedOut) });
  }

  _onSignal(s) {
    if (!s.from || this._left) return;
    let p = this.peers.get(s.from);
    if (!p) {
      // It joined after us (its roomJoin push may still be on its way): we are impolite.
      p = new RoomPeer(this, s.from, false, null, undefined);
      this.peers.set(s.from, p);
      this._emit("peerjoined", { peer: p });
    }
    if (this._manual) {
      if ("bye" in s) this._emit("bye", { peer: p, reason: s.bye ?? "" });
      else if (s.offer || s.answer) this._emit("signal", { peer: p, description: s.offer ?? s.answer });
      else if (s.candidate) this._emit("signal", { peer: p, candidate: s.candidate });
      return;
    }
    p._signal(s);
  }
}

export default Client;
