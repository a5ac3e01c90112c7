// The /send page: `switchboard send` / `receive` in a browser, with Chromium's (or any
// browser's) own WebRTC stack, so a phone can take a file from a laptop and the other way round.
//
// It speaks exactly what crates/transfer does (docs/send.md):
// * pairing: the SDK (/sdk/switchboard.js) joins the room send-NUMBER with join metadata
//   {role, v: 1, pake} and `negotiate: false` (the page runs its own RTCPeerConnection); the
//   receiver offers, the sender answers; both descriptions carry every candidate (no trickle)
//   and travel sealed (web/spake2.js) in an SDP envelope; a description that does not open
//   means a wrong code: the sender says bye "wrong code" and both give up; once the data channel
//   is open both leave the room (a code pairs once), and a second receiver gets bye "busy";
// * the data channel "switchboard-send" (reliable, ordered; opened by the receiver) and the file
//   protocol of crates/transfer/src/wire.rs: M manifest, G go (receiver: where each file
//   starts), C chunks with their SHA-256, E end with the whole file's SHA-256, D done, A / K
//   acknowledgements, X abort.
// Received files are kept as Blobs (the browser may keep big ones on disk) and offered as
// downloads once their whole-file hash matched. The code's words never reach the server: the
// link the sender shows carries them in the fragment (#code=), and a ?code= is removed from the
// address as soon as the page reads it.
//
// Test hook (read-only): window.switchboardSend.state() — {phase, role, code, link, route,
// error: {kind, message}, total, done, files: [{path, size, sha256, verified}]}.

import { Client } from "/sdk/switchboard.js";
import { $, el, human } from "./common.js";
import {
  CodeError, Pake, SealError, Sha256, Side, base64, envelope, formatCode, parseCode, randomCode,
  roomOf, sha256, toHex, unbase64, unenvelope,
} from "./spake2.js";

const LABEL = "switchboard-send";
const CHUNK = 64 * 1024;
const HIGH_WATER = 4 * 1024 * 1024; // stop sending above this much buffered
const LOW_WATER = 1024 * 1024; // and go on below this
const GATHER_MS = 5_000; // ICE gathering bound (then what was gathered goes)
const ANSWER_MS = 30_000;
const CONNECT_MS = 30_000;
const WAIT_MS = 10 * 60_000; // a sender waits this long for a receiver
const BLOB_PART = 16 * 1024 * 1024; // chunks are gathered into Blobs of about this size
const READ = 1024 * 1024; // a File is read this much at a time (each read is a round trip)
const WRONG_CODE = "wrong code";
const BUSY = "busy";

/** A failure with a kind the page and its test hook show: wrong_code, no_sender, peer, ... */
class TransferError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

const state = {
  phase: "idle", // idle, pairing, waiting, connecting, transferring, done, error
  role: "",
  code: "",
  link: "",
  route: "",
  error: null,
  total: 0,
  done: 0,
  files: [],
};

/** What the current transfer holds, to close on cancel or failure. */
let current = null;

// ------------------------------------------------------------------ view

function show(phase, status) {
  state.phase = phase;
  if (status !== undefined) $("#status").textContent = status;
  $("#transfer").hidden = phase === "idle";
  $("#start").hidden = phase !== "idle";
  const over = phase === "done" || phase === "error";
  $("#cancel-button").hidden = over;
  $("#again-button").hidden = !over;
}

function fail(e) {
  const kind = e instanceof TransferError ? e.kind : e instanceof CodeError ? "usage" : "peer";
  state.error = { kind, message: String(e?.message ?? e) };
  const box = $("#error");
  box.textContent = state.error.message;
  box.hidden = false;
  if (state.phase !== "idle") show("error", "failed");
  console.warn("switchboard send:", kind, state.error.message);
}

/** When the data phase started and how much was done then (for the average rate). */
let clock = null;

function progress() {
  const p = $("#progress");
  p.max = Math.max(1, state.total);
  p.value = state.done;
  const now = performance.now();
  clock ??= { at: now, done: state.done };
  const seconds = (now - clock.at) / 1000;
  const rate = seconds > 0.5 ? (state.done - clock.done) / seconds : 0;
  $("#rate").textContent =
    `${human(state.done, "B")} of ${human(state.total, "B")}` + (rate > 0 ? ` · ${human(rate, "B/s")}` : "");
}

function fileRow(entry) {
  const row = el("li", {}, el("span", {}, entry.path), " ", el("span", { className: "muted" }, human(entry.size, "B")));
  $("#file-list").append(row);
  return row;
}

// ------------------------------------------------------------------ frames (wire.rs)

function frame(kind, ...parts) {
  const n = 1 + parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(n);
  out[0] = kind.charCodeAt(0);
  let at = 1;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function u32(n) {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

function u64(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

/** Decodes a message from the data channel: {kind, ...fields}; throws on a malformed one. */
function decode(buffer) {
  const b = new Uint8Array(buffer);
  if (b.length === 0) throw new TransferError("peer", "malformed transfer message (empty)");
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const kind = String.fromCharCode(b[0]);
  const need = (n) => {
    if (b.length < n) throw new TransferError("peer", `malformed transfer message (${kind}, short)`);
  };
  switch (kind) {
    case "M": {
      let manifest;
      try {
        manifest = JSON.parse(new TextDecoder().decode(b.subarray(1)));
      } catch {
        throw new TransferError("peer", "malformed transfer message (manifest)");
      }
      return { kind, manifest };
    }
    case "C":
      need(45);
      return { kind, file: v.getUint32(1), offset: Number(v.getBigUint64(5)), sha256: b.subarray(13, 45), data: b.subarray(45) };
    case "E":
      need(45);
      return { kind, file: v.getUint32(1), size: Number(v.getBigUint64(5)), sha256: b.subarray(13, 45) };
    case "G": {
      if ((b.length - 1) % 12 !== 0) throw new TransferError("peer", "malformed transfer message (G)");
      const records = [];
      for (let at = 1; at < b.length; at += 12) records.push({ file: v.getUint32(at), offset: Number(v.getBigUint64(at + 4)) });
      return { kind, records };
    }
    case "A":
      need(5);
      return { kind, file: v.getUint32(1) };
    case "D":
    case "K":
      return { kind };
    case "X":
      return { kind, why: new TextDecoder().decode(b.subarray(1)) };
    default:
      throw new TransferError("peer", `malformed transfer message (unknown kind ${b[0]})`);
  }
}

/** Messages of a data channel, one at a time: `await inbox.next(ms)`. */
class Inbox {
  constructor(dc) {
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    dc.addEventListener("message", (e) => this._push({ data: e.data }));
    dc.addEventListener("close", () => this._push({ closed: true }));
  }

  _push(item) {
    const w = this.waiters.shift();
    if (w) w(item);
    else this.queue.push(item);
  }

  async next() {
    const item = this.queue.length ? this.queue.shift() : await new Promise((r) => this.waiters.push(r));
    if (item.closed) {
      this.queue.unshift(item); // stays closed
      throw new TransferError("peer", "the other side went away (the data channel closed)");
    }
    return decode(item.data);
  }
}

// ------------------------------------------------------------------ pairing

function timeout(ms, what) {
  let timer;
  const p = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new TransferError("connect", `timed out ${what}`)), ms);
  });
  p.cancel = () => clearTimeout(timer);
  return p;
}

async function within(ms, what, promise) {
  const t = timeout(ms, what);
  try {
    return await Promise.race([promise, t]);
  } finally {
    t.cancel();
  }
}

/** The join metadata of a peer in role `role`: its SPAKE2 message, or null. */
function pakeOf(data, role) {
  let d = data;
  if (d instanceof Uint8Array) {
    try {
      d = JSON.parse(new TextDecoder().decode(d));
    } catch {
      return null;
    }
  }
  if (!d || d.role !== role || d.v !== 1 || typeof d.pake !== "string") return null;
  try {
    return unbase64(d.pake);
  } catch {
    return null;
  }
}

async function connectClient() {
  const client = new Client("/", { name: "switchboard-send-page" });
  current.client = client;
  client.connect();
  try {
    await client.ready();
  } catch (e) {
    throw new TransferError("server", `the server could not be reached: ${e.message ?? e}`);
  }
  return client;
}

/** Resolves when ICE gathering is complete (or after GATHER_MS with what there is). */
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, GATHER_MS);
  });
}

/** Waits for the data channel to open, or for the connection to fail. */
function opened(pc, dc) {
  return within(CONNECT_MS, "connecting (ICE or DTLS did not complete within 30 s)", new Promise((resolve, reject) => {
    if (dc.readyState === "open") resolve();
    dc.addEventListener("open", () => resolve(), { once: true });
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "failed") reject(new TransferError("connect", "the peers could not connect (ICE failed)"));
    });
  }));
}

/** The kind of path the data channel took ("direct" or "relay"), for the status line. */
async function route(pc) {
  try {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId) ?? pair;
    });
    const local = pair ? stats.get(pair.localCandidateId) : null;
    const remote = pair ? stats.get(pair.remoteCandidateId) : null;
    if (!local) return "";
    const relay = local.candidateType === "relay" || remote?.candidateType === "relay";
    const where = remote?.address ? `, ${remote.address}:${remote.port}` : "";
    return relay ? `relay${where}` : `direct${where}`;
  } catch {
    return "";
  }
}

/**
 * Room events in order, one at a time (their handlers await WebCrypto): the room's `peerjoined`,
 * `peerleft`, `bye` and `signal` events become items of an async queue.
 */
function roomEvents(room) {
  const queue = [];
  const waiters = [];
  const push = (ev) => {
    const w = waiters.shift();
    if (w) w(ev);
    else queue.push(ev);
  };
  for (const type of ["peerjoined", "peerleft", "bye", "signal"]) room.on(type, (ctx) => push({ type, ...ctx }));
  room.on("left", (ctx) => push({ type: "left", ...ctx }));
  return () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r)));
}

function byeError(reason, who) {
  if (reason === WRONG_CODE) return new TransferError("wrong_code", "wrong code: the other side's key did not match (nothing was sent)");
  if (reason === BUSY) return new TransferError("peer", "the sender is already sending to someone else");
  return new TransferError("peer", `the ${who} left${reason ? ` (${reason})` : ""}`);
}

/** Receiver: join the code's room, find the sender, offer, open the data channel. */
async function pairAsReceiver(code) {
  const client = await connectClient();
  const { pake, message } = await Pake.start(code, Side.Receiver);
  const room = await client.joinRoom(roomOf(code), {
    negotiate: false,
    data: { role: "receive", v: 1, pake: base64(message) },
  });
  current.room = room;
  const next = roomEvents(room);
  let sender = null;
  for (const p of room.peers.values()) {
    const theirs = pakeOf(p.data, "send");
    if (theirs) {
      sender = { id: p.id, theirs };
      break;
    }
  }
  if (!sender) throw new TransferError("no_sender", `no sender is waiting under code ${code.number} (check the code; it works once)`);
  let sealer;
  try {
    sealer = await pake.finish(sender.theirs);
  } catch {
    throw new TransferError("wrong_code", "wrong code: the other side's key did not match");
  }
  show("connecting", "paired; connecting…");
  const pc = new RTCPeerConnection(room.rtcConfiguration());
  current.pc = pc;
  const dc = pc.createDataChannel(LABEL, { ordered: true });
  dc.binaryType = "arraybuffer";
  const inbox = new Inbox(dc);
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const sealed = await sealer.seal(new TextEncoder().encode("O" + pc.localDescription.sdp));
  await room.sendDescription(sender.id, { type: "offer", sdp: envelope(sealed) });
  const answer = await within(ANSWER_MS, "waiting for the sender's answer", (async () => {
    for (;;) {
      const ev = await next();
      if (ev.type === "left") throw new TransferError("server", "the connection to the server ended");
      if (ev.peer?.id !== sender.id) continue;
      if (ev.type === "bye") throw byeError(ev.reason, "sender");
      if (ev.type === "peerleft") throw new TransferError("peer", "the sender left");
      if (ev.type === "signal" && ev.description?.type === "answer") {
        let plain;
        try {
          plain = await sealer.open(unenvelope(ev.description.sdp));
        } catch (e) {
          if (e instanceof SealError) throw new TransferError("wrong_code", "wrong code: the sender's answer did not open");
          throw e;
        }
        if (plain[0] !== 0x41) throw new TransferError("peer", "protocol: not an answer");
        return new TextDecoder().decode(plain.subarray(1));
      }
    }
  })());
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  await opened(pc, dc);
  await leaveRoom();
  return { pc, dc, inbox };
}

/** Sender: join a free room, show the code, wait for a receiver's offer, answer. */
async function pairAsSender() {
  const client = await connectClient();
  let chosen = null;
  for (let i = 0; i < 20 && !chosen; i++) {
    const code = randomCode();
    const { pake, message } = await Pake.start(code, Side.Sender);
    const room = await client.joinRoom(roomOf(code), {
      negotiate: false,
      data: { role: "send", v: 1, pake: base64(message) },
    });
    if (room.peers.size === 0) chosen = { code, pake, room };
    else await room.leave(); // someone else is using this number
  }
  if (!chosen) throw new TransferError("server", "could not find a free code number (the server has many transfers waiting)");
  const { code, pake, room } = chosen;
  current.room = room;
  const next = roomEvents(room);
  const text = formatCode(code);
  state.code = text;
  state.link = `${location.origin}/send#code=${text}`;
  $("#send-code").textContent = text;
  $("#send-command").textContent = `switchboard receive ${text} --server ${location.origin}`;
  $("#send-link").textContent = state.link;
  $("#send-link").href = state.link;
  $("#offer").hidden = false;
  show("waiting", "waiting for the receiver (the code works once)…");

  let peer = null; // {id, sealer}
  const offer = await within(WAIT_MS, "waiting for a receiver", (async () => {
    for (;;) {
      const ev = await next();
      if (ev.type === "left") throw new TransferError("server", "the connection to the server ended");
      if (ev.type === "peerjoined") {
        if (peer) {
          if (ev.peer.id !== peer.id) await room.bye(ev.peer.id, BUSY).catch(() => {});
          continue;
        }
        const theirs = pakeOf(ev.peer.data, "receive");
        if (!theirs) continue;
        try {
          peer = { id: ev.peer.id, sealer: await pake.finish(theirs) };
        } catch {
          await room.bye(ev.peer.id, WRONG_CODE).catch(() => {});
          throw new TransferError("wrong_code", "wrong code: the receiver's key exchange did not match");
        }
        show("connecting", "a receiver joined; connecting…");
      } else if (peer && ev.peer?.id === peer.id) {
        if (ev.type === "peerleft") throw new TransferError("peer", "the receiver left before connecting");
        if (ev.type === "bye") throw byeError(ev.reason, "receiver");
        if (ev.type === "signal" && ev.description?.type === "offer") {
          let plain;
          try {
            plain = await peer.sealer.open(unenvelope(ev.description.sdp));
          } catch (e) {
            if (!(e instanceof SealError)) throw e;
            await room.bye(peer.id, WRONG_CODE).catch(() => {});
            throw new TransferError("wrong_code", "wrong code: the receiver used another code (nothing was sent; send again for a new code)");
          }
          if (plain[0] !== 0x4f) throw new TransferError("peer", "protocol: not an offer");
          return new TextDecoder().decode(plain.subarray(1));
        }
      }
    }
  })());
  const pc = new RTCPeerConnection(room.rtcConfiguration());
  current.pc = pc;
  const channel = new Promise((resolve) => {
    pc.addEventListener("datachannel", (e) => {
      if (e.channel.label === LABEL) resolve(e.channel);
    });
  });
  await pc.setRemoteDescription({ type: "offer", sdp: offer });
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  const sealed = await peer.sealer.seal(new TextEncoder().encode("A" + pc.localDescription.sdp));
  await room.sendDescription(peer.id, { type: "answer", sdp: envelope(sealed) });
  const dc = await within(CONNECT_MS, "connecting (no data channel within 30 s)", channel);
  dc.binaryType = "arraybuffer";
  const inbox = new Inbox(dc);
  await opened(pc, dc);
  await leaveRoom();
  return { pc, dc, inbox };
}

/** Leaves the room and closes the hub connection: the code is used up. */
async function leaveRoom() {
  const c = current;
  if (c?.room) await c.room.leave().catch(() => {});
  if (c?.client) c.client.disconnect();
  if (c) {
    c.room = null;
    c.client = null;
  }
}

// ------------------------------------------------------------------ receiving

function safePath(p) {
  if (typeof p !== "string" || !p || p.startsWith("/") || p.includes("\0") || p.includes("\\")) return false;
  return p.split("/").every((c) => c && c !== "." && c !== "..");
}

async function receiveFiles({ dc, inbox }) {
  const first = await inbox.next();
  if (first.kind === "X") throw new TransferError("peer", `the sender stopped: ${first.why}`);
  const m = first.manifest;
  if (first.kind !== "M" || !m || m.v !== 1 || !Array.isArray(m.entries)) throw new TransferError("peer", "protocol: expected a manifest");
  for (const e of m.entries) {
    if (!safePath(e?.path)) throw new TransferError("peer", `protocol: unsafe path ${JSON.stringify(e?.path)}`);
  }
  // Nothing held from an earlier attempt: every file from its start.
  dc.send(frame("G"));
  const files = m.entries.filter((e) => !e.dir);
  state.total = files.reduce((s, e) => s + (Number(e.size) || 0), 0);
  show("transferring", `receiving ${files.length} file(s), ${human(state.total, "B")}`);
  progress();
  let cur = null; // {index, entry, offset, hash, parts, pending, pendingBytes}
  const start = (index) => {
    const entry = m.entries[index];
    if (!entry || entry.dir) throw new TransferError("peer", `protocol: no file #${index}`);
    return { index, entry, offset: 0, hash: new Sha256(), parts: [], pending: [], pendingBytes: 0 };
  };
  for (;;) {
    const f = await inbox.next();
    if (f.kind === "C") {
      if (cur && cur.index !== f.file) throw new TransferError("peer", "protocol: a file ended without its hash");
      cur ??= start(f.file);
      if (f.offset !== cur.offset) throw new TransferError("peer", `protocol: ${cur.entry.path}: data at ${f.offset}, expected ${cur.offset}`);
      const data = f.data.slice(); // its own buffer (the frame's is shared)
      if (toHex(await sha256(data)) !== toHex(f.sha256)) {
        throw new TransferError("integrity", `${cur.entry.path}: the chunk at ${f.offset} does not match its SHA-256`);
      }
      cur.hash.update(data);
      cur.pending.push(data);
      cur.pendingBytes += data.length;
      if (cur.pendingBytes >= BLOB_PART) {
        cur.parts.push(new Blob(cur.pending));
        cur.pending = [];
        cur.pendingBytes = 0;
      }
      cur.offset += data.length;
      state.done += data.length;
      state.total = Math.max(state.total, state.done);
      progress();
    } else if (f.kind === "E") {
      if (cur && cur.index !== f.file) throw new TransferError("peer", "protocol: hash of another file");
      const c = cur ?? start(f.file); // an empty file has no chunks
      cur = null;
      const digest = toHex(c.hash.digest());
      const sizeOk = c.offset === f.size && (c.entry.size == null || c.entry.size === f.size);
      if (!sizeOk || digest !== toHex(f.sha256)) {
        throw new TransferError("integrity", `${c.entry.path}: ${c.offset} bytes with SHA-256 ${digest}, the sender says ${f.size} bytes with ${toHex(f.sha256)} (not kept)`);
      }
      const blob = new Blob([...c.parts, ...c.pending], { type: "application/octet-stream" });
      const url = URL.createObjectURL(blob);
      current.urls.push(url);
      const name = c.entry.path.split("/").join("_");
      const info = { path: c.entry.path, size: f.size, sha256: digest, verified: true, url };
      state.files.push(info);
      $("#file-list").append(
        el("li", {},
          el("a", { href: url, download: name, className: "download" }, c.entry.path),
          " ", el("span", { className: "muted" }, `${human(f.size, "B")} · SHA-256 ${digest.slice(0, 16)}… verified`)),
      );
      dc.send(frame("A", u32(f.file)));
    } else if (f.kind === "D") {
      if (cur) throw new TransferError("peer", "protocol: done in the middle of a file");
      dc.send(frame("K"));
      return;
    } else if (f.kind === "X") {
      throw new TransferError("peer", `the sender stopped: ${f.why}`);
    } else {
      throw new TransferError("peer", `protocol: unexpected ${f.kind}`);
    }
  }
}

// ------------------------------------------------------------------ sending

/** Resolves once the channel's buffered amount is low enough to send more. */
function drained(dc) {
  if (dc.bufferedAmount <= HIGH_WATER) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const ok = () => {
      dc.removeEventListener("close", gone);
      resolve();
    };
    const gone = () => {
      dc.removeEventListener("bufferedamountlow", ok);
      reject(new TransferError("peer", "the other side went away (the data channel closed)"));
    };
    dc.addEventListener("bufferedamountlow", ok, { once: true });
    dc.addEventListener("close", gone, { once: true });
  });
}

async function sendFiles({ dc, inbox }, files) {
  dc.bufferedAmountLowThreshold = LOW_WATER;
  const entries = files.map((f) => ({
    path: f.name,
    dir: false,
    size: f.size,
    mode: null,
    mtime: Math.floor(f.lastModified / 1000),
  }));
  dc.send(frame("M", new TextEncoder().encode(JSON.stringify({ v: 1, entries }))));
  // The receiver says where each file starts (what it already holds, verified).
  const go = await inbox.next();
  if (go.kind === "X") throw new TransferError("peer", `the receiver stopped: ${go.why}`);
  if (go.kind !== "G") throw new TransferError("peer", `protocol: expected G, got ${go.kind}`);
  const starts = new Map();
  for (const r of go.records) {
    if (r.file >= files.length || r.offset > files[r.file].size) throw new TransferError("peer", `protocol: cannot start file #${r.file} at ${r.offset}`);
    starts.set(r.file, r.offset);
  }
  state.total = files.reduce((s, f) => s + f.size, 0);
  state.done = [...starts.values()].reduce((s, o) => s + o, 0);
  show("transferring", `sending ${files.length} file(s), ${human(state.total, "B")}`);
  progress();
  // A/X from the receiver while sending; anything else is an error.
  let failure = null;
  let acked = 0;
  let kept = false;
  const listening = (async () => {
    for (;;) {
      const f = await inbox.next();
      if (f.kind === "A") acked++;
      else if (f.kind === "K") {
        kept = true;
        return;
      } else if (f.kind === "X") throw new TransferError("peer", `the receiver stopped: ${f.why}`);
      else throw new TransferError("peer", `protocol: unexpected ${f.kind}`);
    }
  })().catch((e) => {
    failure = e;
  });
  for (const [i, file] of files.entries()) {
    const hash = new Sha256();
    const from = starts.get(i) ?? 0;
    // What the receiver holds is hashed here too: E carries the whole file's hash.
    for (let at = 0; at < from; at += BLOB_PART) {
      hash.update(new Uint8Array(await file.slice(at, Math.min(from, at + BLOB_PART)).arrayBuffer()));
    }
    let offset = from;
    const rows = fileRow({ path: file.name, size: file.size });
    while (offset < file.size) {
      if (failure) throw failure;
      const block = new Uint8Array(await file.slice(offset, Math.min(file.size, offset + READ)).arrayBuffer());
      if (block.length === 0) throw new TransferError("file", `${file.name} could not be read (changed while being sent?)`);
      for (let at = 0; at < block.length; at += CHUNK) {
        const data = block.subarray(at, Math.min(block.length, at + CHUNK));
        hash.update(data);
        await drained(dc);
        if (failure) throw failure;
        dc.send(frame("C", u32(i), u64(offset), await sha256(data), data));
        offset += data.length;
        state.done += data.length;
        progress();
      }
    }
    const digest = hash.digest();
    dc.send(frame("E", u32(i), u64(offset), digest));
    const info = { path: file.name, size: offset, sha256: toHex(digest), verified: false };
    state.files.push(info);
    rows.append(" ", el("span", { className: "muted" }, `· SHA-256 ${info.sha256.slice(0, 16)}…`));
  }
  dc.send(frame("D"));
  show("transferring", "sent; waiting for the receiver to keep everything…");
  await within(60_000, "waiting for the receiver to keep the files", listening);
  if (failure) throw failure;
  if (!kept) throw new TransferError("peer", "the receiver did not confirm");
  for (const f of state.files) f.verified = true;
  void acked;
}

// ------------------------------------------------------------------ flows

async function finishChannel(dc) {
  // Let the last message leave before the connection closes.
  for (let i = 0; i < 50 && dc.readyState === "open" && dc.bufferedAmount > 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
  }
}

function reset() {
  const c = current;
  current = null;
  if (c) {
    c.room?.leave().catch(() => {});
    c.client?.disconnect();
    try {
      c.pc?.close();
    } catch {
      // closed already
    }
  }
}

async function run(role, body) {
  reset();
  current = { client: null, room: null, pc: null, urls: current?.urls ?? [] };
  const mine = current;
  Object.assign(state, { role, code: "", link: "", route: "", error: null, total: 0, done: 0, files: [] });
  clock = null;
  $("#error").hidden = true;
  $("#file-list").replaceChildren();
  $("#offer").hidden = true;
  $("#title").textContent = role === "receive" ? "Receiving" : "Sending";
  show("pairing", "connecting to the server…");
  try {
    await body();
    if (current === mine) {
      const how = state.route ? ` (${state.route})` : "";
      show("done", role === "receive" ? `done${how}: every file verified (SHA-256); save them below` : `done${how}: the receiver kept every file`);
      progress();
    }
  } catch (e) {
    if (current === mine) fail(e);
  } finally {
    if (current === mine) {
      await leaveRoom();
      // The connection stays a moment for the last acknowledgement, then closes.
      const pc = mine.pc;
      setTimeout(() => pc?.close(), 2000);
    }
  }
}

function receive(text) {
  let code;
  try {
    code = parseCode(text);
  } catch (e) {
    fail(e);
    return;
  }
  run("receive", async () => {
    state.code = formatCode(code);
    const link = await pairAsReceiver(code);
    state.route = await route(link.pc);
    show("transferring", `connected (${state.route || "?"})`);
    await receiveFiles(link);
    await finishChannel(link.dc);
  });
}

function send(files) {
  if (files.length === 0) {
    fail(new TransferError("usage", "pick at least one file"));
    return;
  }
  run("send", async () => {
    const link = await pairAsSender();
    state.route = await route(link.pc);
    show("transferring", `connected (${state.route || "?"})`);
    await sendFiles(link, files);
  });
}

// ------------------------------------------------------------------ wiring

$("#receive-form").addEventListener("submit", (e) => {
  e.preventDefault();
  receive($("#code").value);
});

$("#send-form").addEventListener("submit", (e) => {
  e.preventDefault();
  send([...$("#files").files]);
});

$("#cancel-button").addEventListener("click", () => {
  const c = current;
  if (!c) return;
  fail(new TransferError("usage", "cancelled"));
  current = null;
  c.room?.leave().catch(() => {});
  c.client?.disconnect();
  c.pc?.close();
});

$("#again-button").addEventListener("click", () => {
  reset();
  state.phase = "idle";
  $("#error").hidden = true;
  show("idle");
});

window.switchboardSend = Object.freeze({
  state: () => JSON.parse(JSON.stringify({ ...state, files: state.files.map(({ url, ...f }) => (void url, f)) })),
});

// A code in the address (?code= from a QR code or #code= from the sender's link) starts
// receiving at once. ?code= is taken out of the address (it reached the server's log already;
// the link this page shows uses the fragment, which browsers never send).
{
  const q = new URLSearchParams(location.search).get("code");
  const h = new URLSearchParams(location.hash.slice(1)).get("code");
  const text = h ?? q;
  if (q !== null || h !== null) history.replaceState(null, "", location.pathname);
  if (text) {
    $("#code").value = text;
    receive(text);
  } else {
    show("idle");
  }
}
