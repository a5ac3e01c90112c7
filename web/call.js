// The call page: WebRTC between the peers of one signaling room.
//
// Signaling rides on the hub's WebSocket (/v1/ws, subprotocol switchboard.json): connect, roomJoin,
// then offer/answer/candidate commands addressed to one peer, and roomJoin/roomLeave/signal
// pushes (docs/signaling.md). ICE servers (STUN and TURN with short-lived credentials) come from
// GET /v1/ice-servers. One RTCPeerConnection per other member, negotiated with the W3C "perfect
// negotiation" pattern: the room says who is polite (the later joiner, towards everyone already
// there). The newcomer creates each connection and the "chat" data channel and makes the first
// offer; members already in the room create theirs when that offer arrives.
//
// window.switchboardCall is a read-only view of the state for tests (docs/web.md).

import { $, el, human, wsUrl } from "./common.js";

const PING_MS = 10_000; // rooms drop a peer after 30 s of silence
const CALL_TIMEOUT_MS = 10_000;
const MAX_MESSAGES = 500;
const MAX_ERRORS = 100;

const state = {
  joined: false,
  room: "",
  peerId: "",
  polite: false,
  relay: false,
  media: false,
  /** @type {Map<string, Peer>} */
  peers: new Map(),
  messages: [],
  errors: [],
  status: "",
};

let hub = null;
let config = { iceServers: [] };
let localStream = null;
let pingTimer = 0;
// Bumped by every join and every teardown: a join still awaiting something when the user
// leaves (or the hub drops it) sees that it is stale and stops instead of reviving the call.
let session = 0;

// ------------------------------------------------------------------ errors and status

function report(error, context = "") {
  const entry = {
    code: typeof error?.code === "number" ? error.code : 0,
    message: String(error?.message ?? error),
    context,
    at: new Date().toISOString(),
  };
  state.errors.push(entry);
  if (state.errors.length > MAX_ERRORS) state.errors.shift();
  console.warn("switchboard call:", context, entry.code || "", entry.message);
  const list = $("#error-list");
  list.append(
    el("li", {},
      entry.code ? el("code", {}, entry.code) : "",
      entry.code ? " " : "",
      context ? el("b", {}, `${context}: `) : "",
      entry.message),
  );
  while (list.children.length > MAX_ERRORS) list.firstElementChild.remove();
  $("#errors").hidden = false;
}

function setStatus(text) {
  state.status = text;
  $("#status").textContent = text;
}

class HubError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// ------------------------------------------------------------------ the hub connection

/** One WebSocket to the hub speaking the JSON mapping of Command / ServerFrame. */
class Hub {
  constructor(url, onPush, onClose) {
    this.url = url;
    this.onPush = onPush;
    this.onClose = onClose;
    this.nextId = 0;
    this.waiting = new Map();
    this.ws = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, "switchboard.json");
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        if (ws.protocol !== "switchboard.json") {
          reject(new Error(`server chose subprotocol "${ws.protocol}"`));
          ws.close();
          return;
        }
        resolve();
      };
      ws.onmessage = (e) => this.receive(e.data);
      ws.onerror = () => {
        if (!opened) reject(new Error(`cannot open ${this.url}`));
      };
      ws.onclose = (e) => {
        for (const [, w] of this.waiting) w.reject(new Error(`connection closed (${e.code})`));
        this.waiting.clear();
        if (opened) this.onClose(e.code, e.reason);
      };
    });
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (e) {
      report(e, "unparsable frame from the server");
      return;
    }
    if (frame.reply) {
      const id = Number(frame.reply.id ?? 0);
      const w = this.waiting.get(id);
      if (!w) return;
      this.waiting.delete(id);
      clearTimeout(w.timer);
      if (frame.reply.error) {
        const err = frame.reply.error;
        w.reject(new HubError(err.code ?? 0, err.message ?? "error"));
      } else {
        w.resolve(frame.reply);
      }
    } else if (frame.push) {
      this.onPush(frame.push);
    }
  }

  /** Sends one command and resolves with its reply (rejects with a HubError on `error`). */
  call(method, body = {}) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected"));
        return;
      }
      const id = ++this.nextId;
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`${method}: no reply within ${CALL_TIMEOUT_MS / 1000} s`));
      }, CALL_TIMEOUT_MS);
      this.waiting.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ id, [method]: body }));
    });
  }

  close() {
    if (this.ws) this.ws.close(1000, "leaving");
  }
}

// ------------------------------------------------------------------ one peer

class Peer {
  constructor(id, polite, data) {
    this.id = id;
    this.polite = polite; // towards this peer
    this.data = data ?? null;
    this.pc = null;
    this.dc = null;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    this.pendingCandidates = [];
    this.endSent = new Set();
    this.queue = Promise.resolve(); // signals of this peer, handled one at a time
    this.stats = { selectedPair: null, video: null };
    this.card = null;
    this.remoteVideo = null;
    this.closed = false; // after close(): no new connection, signals ignored
  }

  /** Creates the RTCPeerConnection (and the data channel, for the side that offers first). */
  connection(createChannel) {
    if (this.pc || this.closed) return this.pc;
    const pc = new RTCPeerConnection(config);
    this.pc = pc;
    if (localStream) {
      for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
    }
    if (createChannel) this.attach(pc.createDataChannel("chat"));
    pc.ondatachannel = (e) => this.attach(e.channel);
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        await this.sendDescription(pc.localDescription);
      } catch (e) {
        if (!this.closed) report(e, `negotiation with ${this.id}`);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = (e) => this.sendCandidate(e.candidate);
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === "failed") {
        report(new Error("ICE failed; restarting ICE"), `connection to ${this.id}`);
        pc.restartIce();
      }
      render();
    };
    pc.onconnectionstatechange = render;
    pc.onsignalingstatechange = render;
    pc.ontrack = (e) => {
      const stream = e.streams[0] ?? new MediaStream([e.track]);
      if (this.remoteVideo && this.remoteVideo.srcObject !== stream) {
        this.remoteVideo.srcObject = stream;
        this.remoteVideo.closest("figure").hidden = false;
      }
    };
    render();
    return pc;
  }

  attach(dc) {
    if (dc.label !== "chat") return;
    this.dc = dc;
    dc.onopen = () => {
      addMessage(null, `data channel to ${this.id} open`);
      render();
    };
    dc.onclose = render;
    dc.onmessage = (e) => {
      if (typeof e.data === "string") addMessage(this.id, e.data);
    };
    render();
  }

  sendDescription(desc) {
    if (!desc || (desc.type !== "offer" && desc.type !== "answer")) return Promise.resolve();
    if (!hub) return Promise.reject(new Error("not connected"));
    return hub.call(desc.type, {
      room: state.room,
      to: this.id,
      description: { type: desc.type, sdp: desc.sdp },
    });
  }

  sendCandidate(candidate) {
    if (!hub || !state.joined || this.closed) return;
    const send = (c) =>
      hub.call("candidate", { room: state.room, to: this.id, candidate: c }).catch((e) =>
        report(e, `candidate to ${this.id}`),
      );
    if (candidate && candidate.candidate) {
      send(compact({
        candidate: candidate.candidate,
        sdpMid: candidate.sdpMid,
        sdpMLineIndex: candidate.sdpMLineIndex,
        usernameFragment: candidate.usernameFragment,
      }));
      return;
    }
    // End of candidates: an empty candidate per media section (once per section and ICE
    // generation), which ends gathering on the other side.
    const sdp = this.pc?.localDescription?.sdp ?? "";
    const ufrag = /^a=ice-ufrag:(\S+)/m.exec(sdp)?.[1];
    const mids = candidate?.sdpMid != null
      ? [candidate.sdpMid]
      : [...sdp.matchAll(/^a=mid:(\S+)/gm)].map((m) => m[1]);
    for (const mid of mids) {
      const key = `${ufrag}/${mid}`;
      if (this.endSent.has(key)) continue;
      this.endSent.add(key);
      send(compact({ candidate: "", sdpMid: mid, usernameFragment: ufrag }));
    }
  }

  /** Handles one signal push from this peer, after the previous one finished. */
  signal(s) {
    this.queue = this.queue
      .then(() => this.handle(s))
      .catch((e) => {
        if (!this.closed) report(e, `signal from ${this.id}`);
      });
  }

  async handle(s) {
    if (this.closed) return; // left, or replaced by a new Peer for the same id
    if (s.offer || s.answer) {
      const desc = s.offer ?? s.answer;
      const pc = this.connection(false);
      // Perfect negotiation (W3C webrtc-pc, "Perfect negotiation example").
      const readyForOffer =
        !this.makingOffer && (pc.signalingState === "stable" || this.settingRemoteAnswer);
      const collision = desc.type === "offer" && !readyForOffer;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      this.settingRemoteAnswer = desc.type === "answer";
      try {
        await pc.setRemoteDescription({ type: desc.type, sdp: desc.sdp });
      } finally {
        this.settingRemoteAnswer = false;
      }
      if (desc.type === "offer") {
        await pc.setLocalDescription();
        await this.sendDescription(pc.localDescription);
      }
      const pending = this.pendingCandidates.splice(0);
      for (const c of pending) await this.addCandidate(c);
    } else if (s.candidate) {
      const pc = this.connection(false);
      if (!pc.remoteDescription) {
        this.pendingCandidates.push(s.candidate);
        return;
      }
      await this.addCandidate(s.candidate);
    } else if ("bye" in s) {
      addMessage(null, `${this.id} hung up${s.bye ? ` (${s.bye})` : ""}`);
      this.close();
      render();
    }
  }

  async addCandidate(c) {
    try {
      await this.pc.addIceCandidate(compact({
        candidate: c.candidate ?? "",
        sdpMid: c.sdpMid,
        sdpMLineIndex: c.sdpMLineIndex,
        usernameFragment: c.usernameFragment,
      }));
    } catch (e) {
      if (!this.ignoreOffer && !this.closed) report(e, `candidate from ${this.id}`);
    }
  }

  close() {
    this.closed = true;
    if (this.dc) this.dc.close();
    if (this.pc) this.pc.close();
    this.pc = null;
    this.dc = null;
  }

  async refreshStats() {
    if (!this.pc) return;
    const stats = await this.pc.getStats();
    if (this.closed) return;
    let pair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) {
        pair = stats.get(s.selectedCandidatePairId) ?? pair;
      }
    });
    if (!pair) {
      stats.forEach((s) => {
        if (!pair && s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
      });
    }
    const cand = (id) => {
      const c = id ? stats.get(id) : null;
      if (!c) return null;
      return {
        candidateType: c.candidateType ?? null,
        // Chromium reports "" for its own mDNS-hidden host candidates (and a remote one may be
        // a "….local" name): no address is null, not "".
        address: c.address || c.ip || null,
        port: c.port ?? null,
        protocol: c.protocol ?? null,
        relayProtocol: c.relayProtocol ?? null,
      };
    };
    this.stats.selectedPair = pair
      ? {
          local: cand(pair.localCandidateId),
          remote: cand(pair.remoteCandidateId),
          rtt: pair.currentRoundTripTime ?? null,
          bytesSent: pair.bytesSent ?? 0,
          bytesReceived: pair.bytesReceived ?? 0,
        }
      : null;
    let video = null;
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        video = {
          framesDecoded: s.framesDecoded ?? 0,
          frameWidth: s.frameWidth ?? 0,
          frameHeight: s.frameHeight ?? 0,
          bytesReceived: s.bytesReceived ?? 0,
        };
      }
    });
    if (video && this.remoteVideo) {
      video.videoWidth = this.remoteVideo.videoWidth;
      video.videoHeight = this.remoteVideo.videoHeight;
    }
    this.stats.video = video;
  }

  snapshot() {
    return {
      polite: this.polite,
      signalingState: this.pc?.signalingState ?? "new",
      iceConnectionState: this.pc?.iceConnectionState ?? "new",
      connectionState: this.pc?.connectionState ?? "new",
      dataChannelState: this.dc?.readyState ?? "none",
      selectedPair: this.stats.selectedPair,
      video: this.stats.video,
    };
  }
}

/** Drops null and undefined fields (the JSON mapping wants them absent). */
function compact(o) {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null && v !== undefined));
}

// ------------------------------------------------------------------ room events

function peer(id, polite, data) {
  let p = state.peers.get(id);
  if (!p) {
    p = new Peer(id, polite, data);
    state.peers.set(id, p);
  }
  return p;
}

function onPush(push) {
  if (push.roomJoin) {
    const j = push.roomJoin;
    if (j.room !== state.room || !j.peer) return;
    // Normally a newcomer: it will offer and we are impolite towards it. `polite` is true only
    // when it joined at the same moment on another cluster node and neither join listed the
    // other: the room's tie-break then makes us the polite side, and we offer, as a newcomer.
    const id = j.peer.peerId;
    const polite = Boolean(j.polite);
    const old = state.peers.get(id);
    if (old && old.polite === polite && old.pc && old.pc.connectionState !== "failed" &&
        old.pc.connectionState !== "closed") {
      return; // already negotiating with it in this role
    }
    if (old) {
      old.close();
      state.peers.delete(id);
    }
    const p = peer(id, polite, j.peer.data);
    if (polite) p.connection(true);
    addMessage(null, `${id} joined`);
    render();
  } else if (push.roomLeave) {
    const l = push.roomLeave;
    if (l.room !== state.room) return;
    if (l.peerId === state.peerId) {
      report(new Error("the room dropped this peer (no sign of life for too long)"), "room");
      teardown();
      return;
    }
    const p = state.peers.get(l.peerId);
    if (p) {
      p.close();
      state.peers.delete(l.peerId);
    }
    addMessage(null, `${l.peerId} ${l.timedOut ? "timed out" : "left"}`);
    render();
  } else if (push.signal) {
    const s = push.signal;
    if (s.room !== state.room || !s.from) return;
    // Someone we do not know yet joined after us (its roomJoin push may still be on its way):
    // we are impolite towards it. A peer that hung up (bye) and calls again gets a fresh
    // connection, in the same role.
    const old = state.peers.get(s.from);
    if (old?.closed) state.peers.delete(s.from);
    peer(s.from, old ? old.polite : false).signal(s);
  } else if (push.disconnect) {
    const d = push.disconnect;
    report(new HubError(d.code ?? 0, d.reason ?? "disconnected"), "server disconnected");
  }
}

function addMessage(from, text) {
  const m = { from, text: String(text), at: Date.now() };
  if (from !== null) {
    state.messages.push({ from, text: m.text });
    if (state.messages.length > MAX_MESSAGES) state.messages.shift();
  }
  const log = $("#log");
  log.append(
    el("li", { className: from === null ? "event" : from === state.peerId ? "mine" : "" },
      el("time", {}, new Date(m.at).toLocaleTimeString()),
      " ",
      from === null ? "" : el("b", {}, from),
      from === null ? "" : ": ",
      m.text),
  );
  while (log.children.length > MAX_MESSAGES) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
}

/** Sends text on every open data channel; returns how many peers got it. */
function send(text) {
  const t = String(text);
  let sent = 0;
  for (const p of state.peers.values()) {
    if (p.dc && p.dc.readyState === "open") {
      p.dc.send(t);
      sent += 1;
    }
  }
  if (sent > 0) addMessage(state.peerId, t);
  else report(new Error("no open data channel"), "chat");
  return sent;
}

// ------------------------------------------------------------------ join and leave

async function fetchIceServers(token) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const r = await fetch("/v1/ice-servers", { headers, cache: "no-store" });
  let body = null;
  try {
    body = await r.json();
  } catch {
    body = null;
  }
  if (!r.ok) {
    if (r.status === 404) return []; // no STUN/TURN on this server: host candidates only
    const err = body?.error ?? {};
    throw new HubError(err.code ?? 0, `GET /v1/ice-servers: ${err.message ?? r.status}`);
  }
  return Array.isArray(body?.iceServers) ? body.iceServers : [];
}

/** True while a join is under way or done (the Join button is off until teardown). */
let active = false;

async function join(opts) {
  if (active || state.joined || hub) return;
  active = true;
  const mine = ++session;
  // Throws if the user left (or the hub dropped us) while this join was waiting.
  const current = () => {
    if (mine !== session) throw new Error("left before the join finished");
  };
  Object.assign(state, {
    room: opts.room,
    peerId: opts.peer,
    relay: opts.relay,
    media: opts.media,
    polite: false,
    messages: [],
  });
  $("#join-button").disabled = true;
  $("#leave-button").disabled = false;
  $("#join-form").hidden = true;
  $("#call").hidden = false;
  $("#chat").hidden = false;
  $("#log").replaceChildren();
  $("#room-name").textContent = opts.room;
  $("#me").textContent = `you are ${opts.peer}${opts.relay ? " · relay only" : ""}${opts.media ? " · camera and microphone" : ""}`;
  try {
    setStatus("fetching ICE servers…");
    const iceServers = await fetchIceServers(opts.token);
    current();
    const hasTurn = iceServers.some((s) =>
      [].concat(s.urls ?? []).some((u) => String(u).startsWith("turn")),
    );
    if (opts.relay && !hasTurn) {
      throw new Error("relay only needs TURN, and this server hands out no TURN credentials (start it with --turn-realm and --turn-secret)");
    }
    config = { iceServers, iceTransportPolicy: opts.relay ? "relay" : "all" };

    if (opts.media) {
      setStatus("opening camera and microphone…");
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: true,
        video: { width: { ideal: 640 }, height: { ideal: 360 } },
      });
      if (mine !== session) {
        for (const t of stream.getTracks()) t.stop();
        current();
      }
      localStream = stream;
      $("#local-video").srcObject = localStream;
      $("#local-media").hidden = false;
    }

    setStatus("connecting to the hub…");
    // Pushes and the close of a connection that is no longer the page's (left, then joined
    // again before the old socket finished closing) must not touch the new call.
    const h = new Hub(
      wsUrl("/v1/ws"),
      (push) => { if (hub === h) onPush(push); },
      (code, reason) => { if (hub === h) onClose(code, reason); },
    );
    hub = h;
    await h.open();
    current();
    await h.call("connect", compact({ token: opts.token || null, name: "switchboard-call" }));
    current();
    setStatus(`joining ${opts.room}…`);
    const reply = await h.call("roomJoin", {
      room: opts.room,
      peerId: opts.peer,
      data: { media: opts.media, relay: opts.relay },
    });
    current();
    const r = reply.roomJoin ?? {};
    state.joined = true;
    state.polite = Boolean(r.polite);
    pingTimer = setInterval(() => {
      hub?.call("ping", {}).catch((e) => report(e, "ping"));
    }, PING_MS);
    const members = r.members ?? [];
    // We are the newcomer: polite towards everyone here; we create the connection, the data
    // channel and the first offer.
    for (const m of members) peer(m.peerId, true, m.data).connection(true);
    render();
  } catch (e) {
    if (mine !== session) return; // left meanwhile: not an error, and already torn down
    report(e, "join");
    setStatus("not joined");
    teardown();
  }
}

function onClose(code, reason) {
  if (state.joined) {
    report(new HubError(code, `connection to the hub closed${reason ? `: ${reason}` : ""}`), "hub");
  }
  teardown();
}

/** Back to the state before Join: no connections, no peer panels, no chat, the form enabled. */
function teardown() {
  session += 1;
  active = false;
  clearInterval(pingTimer);
  pingTimer = 0;
  for (const p of state.peers.values()) p.close();
  state.peers.clear();
  state.joined = false;
  state.polite = false;
  const h = hub;
  hub = null;
  if (h) h.close();
  if (localStream) {
    for (const t of localStream.getTracks()) t.stop();
    localStream = null;
  }
  $("#local-video").srcObject = null;
  $("#local-media").hidden = true;
  $("#call").hidden = true;
  $("#chat").hidden = true;
  $("#chat-input").value = "";
  $("#join-form").hidden = false;
  $("#join-button").disabled = false;
  render();
}

async function leave() {
  const h = hub;
  const mine = session;
  $("#leave-button").disabled = true; // one Leave at a time
  if (h && state.joined) {
    setStatus("leaving…");
    const room = state.room;
    try {
      await Promise.all([...state.peers.keys()].map((to) =>
        h.call("bye", { room, to, reason: "left" }).catch(() => {})));
      await h.call("roomLeave", { room });
    } catch (e) {
      // The hub went away meanwhile: leaving is done anyway (onClose tore the call down).
      if (hub === h) report(e, "leave");
    }
  }
  if (mine === session) {
    setStatus("left");
    teardown();
  }
}

// ------------------------------------------------------------------ rendering

function peerCard(p) {
  if (p.card) return p.card;
  const video = el("video", { autoplay: true, playsInline: true, muted: true });
  const unmute = el("button", { type: "button", className: "small" }, "unmute");
  unmute.addEventListener("click", () => {
    video.muted = !video.muted;
    unmute.textContent = video.muted ? "unmute" : "mute";
    video.play().catch(() => {});
  });
  const figure = el("figure", { hidden: true }, video, el("figcaption", {}, p.id, " ", unmute));
  p.remoteVideo = video;
  p.card = el("article", { className: "card peer", dataset: { peer: p.id } },
    el("h3", {}, p.id, " ", el("span", { className: "badge role" })),
    el("div", { className: "media" }, figure),
    el("table", { className: "stats" }, el("tbody")),
  );
  return p.card;
}

/**
 * True for a host candidate whose address the browser hides behind an mDNS name: Chromium
 * reports its own as "" in getStats() (the SDP carries "<uuid>.local"), a remote one may show
 * the ".local" name itself.
 */
export function isMdnsHost(c) {
  if (!c || c.candidateType !== "host") return false;
  const a = c.address ?? "";
  return a === "" || /\.local\.?$/i.test(a);
}

/**
 * One candidate of the stats panel: "host 127.0.0.1:50000 udp", "relay [::1]:3478 udp (TURN over
 * tcp)", "mDNS host, port 50000 udp". Never an empty address in front of a port.
 */
export function candidateText(c) {
  if (!c) return "–";
  const port = c.port ?? "?";
  const a = c.address ?? "";
  let where;
  if (isMdnsHost(c)) where = `mDNS host, port ${port}`;
  else if (a === "") where = `${c.candidateType ?? "?"} (address hidden), port ${port}`;
  else where = `${c.candidateType ?? "?"} ${a.includes(":") ? `[${a}]` : a}:${port}`;
  const proto = c.protocol ? ` ${c.protocol}` : "";
  const relay = c.relayProtocol ? ` (TURN over ${c.relayProtocol})` : "";
  return `${where}${proto}${relay}`;
}

function render() {
  if (state.joined) {
    const n = state.peers.size;
    const up = [...state.peers.values()].filter((p) => p.pc?.connectionState === "connected").length;
    setStatus(n === 0
      ? "joined; waiting for others"
      : `in the room with ${n} other peer${n === 1 ? "" : "s"}, ${up} connected`);
  }
  const box = $("#peers");
  const seen = new Set();
  for (const p of state.peers.values()) {
    const card = peerCard(p);
    seen.add(card);
    if (card.parentNode !== box) box.append(card);
    const s = p.snapshot();
    const role = card.querySelector(".role");
    role.textContent = p.polite ? "polite" : "impolite";
    const pair = s.selectedPair;
    const rows = [
      ["connection", `${s.connectionState} (ICE ${s.iceConnectionState}, signaling ${s.signalingState})`],
      ["data channel", s.dataChannelState],
      ["local", candidateText(pair?.local)],
      ["remote", candidateText(pair?.remote)],
      ["RTT", pair?.rtt != null ? `${(pair.rtt * 1000).toFixed(1)} ms` : "–"],
      ["sent / received", pair ? `${human(pair.bytesSent, "B")} / ${human(pair.bytesReceived, "B")}` : "–"],
    ];
    if (s.video) {
      rows.push(["video in", `${s.video.frameWidth}×${s.video.frameHeight}, ${s.video.framesDecoded} frames decoded`]);
    }
    const tbody = card.querySelector("tbody");
    tbody.replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
    card.classList.toggle("relay", pair?.local?.candidateType === "relay");
    card.classList.toggle("up", s.connectionState === "connected");
  }
  for (const card of [...box.children]) if (!seen.has(card)) card.remove();
}

async function statsTick() {
  for (const p of state.peers.values()) {
    try {
      await p.refreshStats();
    } catch {
      // a connection closed while its stats were read
    }
  }
  render();
}

// ------------------------------------------------------------------ the test hook

const clone = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));

Object.defineProperty(window, "switchboardCall", {
  value: Object.freeze({
    get joined() { return state.joined; },
    get room() { return state.room; },
    get peerId() { return state.peerId; },
    get polite() { return state.polite; },
    get status() { return state.status; },
    get peers() {
      return Object.fromEntries([...state.peers.values()].map((p) => [p.id, clone(p.snapshot())]));
    },
    get messages() { return clone(state.messages); },
    get errors() { return clone(state.errors); },
    send,
  }),
  writable: false,
  configurable: false,
});

// ------------------------------------------------------------------ start

function randomId() {
  const b = new Uint8Array(4);
  crypto.getRandomValues(b);
  return `p-${[...b].map((x) => x.toString(16).padStart(2, "0")).join("")}`;
}

function start() {
  const params = new URLSearchParams(location.search);
  const flag = (name) => ["1", "true", "yes", "on"].includes((params.get(name) ?? "").toLowerCase());
  $("#room").value = params.get("room") ?? "demo";
  $("#peer").value = params.get("peer") ?? randomId();
  $("#token").value = params.get("token") ?? "";
  $("#relay").checked = flag("relay");
  $("#media").checked = flag("media");
  if (params.has("token")) {
    // Keep the token out of the history and out of copied links.
    params.delete("token");
    history.replaceState(null, "", `${location.pathname}?${params}`);
  }

  $("#join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const opts = {
      room: $("#room").value.trim(),
      peer: $("#peer").value.trim(),
      token: $("#token").value.trim(),
      relay: $("#relay").checked,
      media: $("#media").checked,
    };
    const q = new URLSearchParams({ room: opts.room, peer: opts.peer });
    if (opts.relay) q.set("relay", "1");
    if (opts.media) q.set("media", "1");
    history.replaceState(null, "", `${location.pathname}?${q}`);
    join(opts);
  });
  $("#leave-button").addEventListener("click", () => leave());
  $("#chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("#chat-input");
    if (input.value.trim() && send(input.value) > 0) input.value = "";
  });
  $("#clear-errors").addEventListener("click", () => {
    $("#error-list").replaceChildren();
    $("#errors").hidden = true;
  });
  window.addEventListener("pagehide", () => {
    if (hub) hub.close();
  });
  setInterval(statsTick, 1000);

  if (flag("join") && params.get("room")) {
    join({
      room: $("#room").value.trim(),
      peer: $("#peer").value.trim(),
      token: $("#token").value.trim(),
      relay: $("#relay").checked,
      media: $("#media").checked,
    });
  }
}

start();
