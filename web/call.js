// The call page: WebRTC between the peers of one signaling room, built on the JavaScript SDK.
//
// Everything that speaks to the server goes through the SDK the binary serves at
// /sdk/switchboard.js (clients/js/switchboard.js, docs/clients.md): a `Client` on this origin
// (WebSocket /v1/ws) and `client.joinRoom()`, whose `Room` fetches the ICE servers
// (/v1/ice-servers, refreshed before they expire), joins the room, runs perfect negotiation with
// the roles the server assigns, trickles candidates, restarts ICE when it fails, and rejoins after
// a reconnect. This page keeps only what is its own: the form, the chat over the data channel
// "chat", local and remote video, the stats panel per peer (getStats() of the SDK's
// RTCPeerConnections), the error list, and the read-only test hook window.switchboardCall
// (docs/web.md).

import { Client, ClientCode, HubError } from "/sdk/switchboard.js";
import { $, el, human } from "./common.js";

const PING_MS = 10_000; // rooms drop a peer after 30 s of silence
const MAX_MESSAGES = 500;
const MAX_ERRORS = 100;

const state = {
  joined: false,
  room: "",
  peerId: "",
  polite: false,
  relay: false,
  media: false,
  messages: [],
  errors: [],
  status: "",
};

/** @type {Client|null} the page's connection (one per join) */
let client = null;
/** @type {import("/sdk/switchboard.js").Room|null} the SDK's room, once joined */
let room = null;
let localStream = null;
// Bumped by every join and every teardown: a join still awaiting something when the user
// leaves (or the hub drops it) sees that it is stale and stops instead of reviving the call.
let session = 0;
/** True while a join is under way or done (the Join button is off until teardown). */
let active = false;
/** True while Leave runs: errors of the connections being closed are not errors. */
let leaving = false;
/** The peers that were in the room when we (last) joined it: not announced as "joined". */
let members = new Set();

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

// ------------------------------------------------------------------ one peer's view

/**
 * What the page keeps beside one of the SDK's RoomPeers: its panel, its remote video and the
 * last stats read from its RTCPeerConnection.
 */
class PeerView {
  constructor(peer) {
    this.peer = peer;
    this.stats = { selectedPair: null, video: null };
    this.card = null;
    this.remoteVideo = null;
    this.watched = null; // the RTCPeerConnection whose ICE state changes are listened to
  }

  /** Listens to a new RTCPeerConnection of this peer (the SDK makes them lazily). */
  watch() {
    const pc = this.peer.pc;
    if (!pc || pc === this.watched) return;
    this.watched = pc;
    pc.addEventListener("iceconnectionstatechange", render);
    pc.addEventListener("signalingstatechange", render);
  }

  async refreshStats() {
    const pc = this.peer.pc;
    if (!pc) return;
    const stats = await pc.getStats();
    if (this.peer.pc !== pc) return; // closed meanwhile
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
    const p = this.peer;
    return {
      polite: p.polite,
      signalingState: p.pc?.signalingState ?? "new",
      iceConnectionState: p.pc?.iceConnectionState ?? "new",
      connectionState: p.pc?.connectionState ?? "new",
      dataChannelState: p.channel?.readyState ?? "none",
      selectedPair: this.stats.selectedPair,
      video: this.stats.video,
    };
  }
}

/** @type {WeakMap<object, PeerView>} */
const views = new WeakMap();

function view(peer) {
  let v = views.get(peer);
  if (!v) {
    v = new PeerView(peer);
    views.set(peer, v);
  }
  v.watch();
  return v;
}

/** The other peers of the room now (the SDK's map), with their views. */
function peerViews() {
  return room ? [...room.peers.values()].map(view) : [];
}

// ------------------------------------------------------------------ chat

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
  const sent = room && !leaving ? room.send(t) : 0;
  if (sent > 0) addMessage(state.peerId, t);
  else report(new Error("no open data channel"), "chat");
  return sent;
}

// ------------------------------------------------------------------ the room's events

/** Wires the SDK room `r` to the page; events of a room that is no longer the page's are dropped. */
function watchRoom(r) {
  const mine = (fn) => (ctx) => {
    if (room === r && !leaving) fn(ctx);
  };
  let joins = 0;
  r.on("joined", mine((j) => {
    joins += 1;
    state.polite = j.polite;
    members = new Set(j.members);
    if (joins > 1) {
      // After a reconnect, or when the room dropped us: the SDK joined again as a newcomer.
      addMessage(null, `joined ${j.room} again as a newcomer`);
    }
    if (j.members.length > 0) addMessage(null, `in the room: ${j.members.join(", ")}`);
    render();
  }));
  r.on("peerjoined", mine(({ peer }) => {
    if (!members.has(peer.id)) addMessage(null, `${peer.id} joined`);
    render();
  }));
  r.on("peerleft", mine(({ peer, timedOut }) => {
    members.delete(peer.id);
    addMessage(null, `${peer.id} ${timedOut ? "timed out" : "left"}`);
    render();
  }));
  r.on("bye", mine(({ peer, reason }) => {
    addMessage(null, `${peer.id} hung up${reason ? ` (${reason})` : ""}`);
    render();
  }));
  r.on("channelopen", mine(({ peer }) => {
    addMessage(null, `data channel to ${peer.id} open`);
    peer.channel?.addEventListener("close", render);
    render();
  }));
  r.on("message", mine(({ peer, data }) => {
    if (typeof data === "string") addMessage(peer.id, data);
  }));
  r.on("track", mine(({ peer, track, streams }) => {
    const v = view(peer);
    peerCard(v);
    const stream = streams[0] ?? new MediaStream([track]);
    if (v.remoteVideo && v.remoteVideo.srcObject !== stream) {
      v.remoteVideo.srcObject = stream;
      v.remoteVideo.closest("figure").hidden = false;
    }
  }));
  r.on("connectionstatechange", mine(({ peer, state: s }) => {
    if (s === "failed") {
      report(new Error("connection failed; restarting ICE"), `connection to ${peer.id}`);
    }
    render();
  }));
  r.on("error", mine(({ peer, error }) => {
    // A connection the SDK closed (bye, left) may still fail what it was doing; and while the
    // hub connection is down every command fails (that loss is reported once, by the client).
    if (peer && (r.peers.get(peer.id) !== peer || !peer.pc)) return;
    if (error?.code === ClientCode.NotConnected && client?.state !== "connected") return;
    report(error, peer ? `peer ${peer.id}` : "room");
  }));
}

// ------------------------------------------------------------------ join and leave

async function join(opts) {
  if (active || state.joined || client) return;
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
  members = new Set();
  leaving = false;
  $("#join-button").disabled = true;
  $("#leave-button").disabled = false;
  $("#join-form").hidden = true;
  $("#call").hidden = false;
  $("#chat").hidden = false;
  $("#log").replaceChildren();
  $("#room-name").textContent = opts.room;
  $("#me").textContent = `you are ${opts.peer}${opts.relay ? " · relay only" : ""}${opts.media ? " · camera and microphone" : ""}`;
  try {
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
    // One client per join, on this origin, WebSocket only (rooms need it; no SSE fallback).
    const c = new Client("/", {
      token: opts.token,
      name: "switchboard-call",
      transports: ["websocket"],
      pingInterval: PING_MS,
    });
    client = c;
    let refusal = null; // why the first connect failed, with the server's code
    let up = false; // connected now (a loss is reported once, not at every retry)
    c.on("error", ({ type, error }) => {
      if (client === c && type === "connect" && !state.joined) refusal = error;
    });
    c.on("connecting", ({ code, reason }) => {
      if (client !== c) return;
      const lost = up;
      up = false;
      if (!lost || !state.joined || leaving) return;
      // The SDK reconnects with backoff and joins the room again as a newcomer.
      report(new HubError(code, `connection to the hub lost: ${reason}; reconnecting`), "hub");
      setStatus("connection to the hub lost; reconnecting…");
    });
    c.on("connected", () => {
      if (client !== c) return;
      if (state.joined && !leaving) addMessage(null, "connected to the hub again");
      up = true;
    });
    c.on("disconnected", ({ code, reason }) => {
      if (client !== c || code === ClientCode.Called || !state.joined) return;
      // Stopped for good (the server refused or ended the connection and said not to retry).
      report(new HubError(code, `disconnected by the server${reason ? `: ${reason}` : ""}`), "hub");
      setStatus("disconnected");
      teardown();
    });
    c.connect();
    try {
      await c.ready();
    } catch (e) {
      throw refusal ?? e;
    }
    current();

    setStatus(`joining ${opts.room}…`);
    let r;
    try {
      r = await c.joinRoom(opts.room, {
        peerId: opts.peer,
        data: { media: opts.media, relay: opts.relay },
        relayOnly: opts.relay,
        stream: localStream ?? undefined,
        dataChannel: "chat",
      });
    } catch (e) {
      if (opts.relay && e?.code === 108 && /relayOnly/.test(e.message ?? "")) {
        throw new HubError(108, `${e.message} (start the server with --turn-realm and --turn-secret)`);
      }
      throw e;
    }
    if (mine !== session) {
      r.leave().catch(() => {}); // the client is disconnected: this only closes the connections
      return;
    }
    room = r;
    watchRoom(r);
    state.joined = true;
    state.polite = r.polite;
    render();
  } catch (e) {
    if (mine !== session) return; // left meanwhile: not an error, and already torn down
    report(e, "join");
    setStatus("not joined");
    teardown();
  }
}

/** Back to the state before Join: no connections, no peer panels, no chat, the form enabled. */
function teardown() {
  session += 1;
  active = false;
  const c = client;
  const r = room;
  client = null;
  room = null;
  members = new Set();
  state.joined = false;
  state.polite = false;
  // Disconnected first, so that the room's leave only closes its connections (no commands).
  if (c) c.disconnect();
  if (r) r.leave().catch(() => {});
  leaving = false;
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
  const r = room;
  const mine = session;
  $("#leave-button").disabled = true; // one Leave at a time
  if (r && state.joined) {
    setStatus("leaving…");
    leaving = true;
    try {
      await r.leave(); // bye to each peer, then roomLeave
    } catch (e) {
      // The hub went away meanwhile: leaving is done anyway.
      if (room === r) report(e, "leave");
    }
  }
  if (mine === session) {
    setStatus("left");
    teardown();
  }
}

// ------------------------------------------------------------------ rendering

function peerCard(v) {
  if (v.card) return v.card;
  const id = v.peer.id;
  const video = el("video", { autoplay: true, playsInline: true, muted: true });
  const unmute = el("button", { type: "button", className: "small" }, "unmute");
  unmute.addEventListener("click", () => {
    video.muted = !video.muted;
    unmute.textContent = video.muted ? "unmute" : "mute";
    video.play().catch(() => {});
  });
  const figure = el("figure", { hidden: true }, video, el("figcaption", {}, id, " ", unmute));
  v.remoteVideo = video;
  v.card = el("article", { className: "card peer", dataset: { peer: id } },
    el("h3", {}, id, " ", el("span", { className: "badge role" })),
    el("div", { className: "media" }, figure),
    el("table", { className: "stats" }, el("tbody")),
  );
  return v.card;
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
  const all = peerViews();
  if (state.joined && client?.state === "connected") {
    const n = all.length;
    const up = all.filter((v) => v.peer.pc?.connectionState === "connected").length;
    setStatus(n === 0
      ? "joined; waiting for others"
      : `in the room with ${n} other peer${n === 1 ? "" : "s"}, ${up} connected`);
  }
  const box = $("#peers");
  const seen = new Set();
  for (const v of all) {
    const card = peerCard(v);
    seen.add(card);
    if (card.parentNode !== box) box.append(card);
    const s = v.snapshot();
    const role = card.querySelector(".role");
    role.textContent = s.polite ? "polite" : "impolite";
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
    tbody.replaceChildren(...rows.map(([k, val]) => el("tr", {}, el("th", {}, k), el("td", {}, val))));
    card.classList.toggle("relay", pair?.local?.candidateType === "relay");
    card.classList.toggle("up", s.connectionState === "connected");
  }
  for (const card of [...box.children]) if (!seen.has(card)) card.remove();
}

async function statsTick() {
  for (const v of peerViews()) {
    try {
      await v.refreshStats();
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
      return Object.fromEntries(peerViews().map((v) => [v.peer.id, clone(v.snapshot())]));
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

  const formOpts = () => ({
    room: $("#room").value.trim(),
    peer: $("#peer").value.trim(),
    token: $("#token").value.trim(),
    relay: $("#relay").checked,
    media: $("#media").checked,
  });
  $("#join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const opts = formOpts();
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
    // Closes the WebSocket: the server takes the peer out of the room.
    if (client) client.disconnect();
  });
  setInterval(statsTick, 1000);

  if (flag("join") && params.get("room")) join(formOpts());
}

start();
