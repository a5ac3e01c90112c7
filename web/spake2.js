// The cryptography of `switchboard send` / `receive` for the browser (the /send page), written
// to match the Rust side byte for byte (crates/transfer/src/{code.rs,seal.rs}; docs/send.md):
//
// * transfer codes: NUMBER-word-word-word, the number naming the room send-NUMBER, the words
//   from the same 256-word list (code.rs; a Rust test checks the two lists are equal);
// * SPAKE2 over the Ed25519 group exactly as the `spake2` crate 0.4 does it (sender = side A,
//   receiver = side B, identities "switchboard-send" / "switchboard-receive", the normalized code
//   as the password): the password scalar is HKDF-SHA256(salt "", info "SPAKE2 pw", 48 bytes)
//   read big-endian mod l; a message is the side byte ('A' or 'B') and the compressed point
//   x·G + pw·M (side A) or y·G + pw·N (side B); the key is SHA-256 of sha256(pw) ‖ sha256(idA) ‖
//   sha256(idB) ‖ X ‖ Y ‖ K, with K = x·(Y − pw·N) (A) or y·(X − pw·M) (B);
// * sealing: HKDF-SHA256 (salt "switchboard send v1") of the SPAKE2 key gives one AES-256-GCM key
//   per direction ("sender to receiver", "receiver to sender"); a sealed message is the 8-byte
//   big-endian counter, then ciphertext and tag, under the nonce 0000 ‖ counter and the
//   associated data "switchboard send v1|ROOM|s2r" (or r2s); counters must arrive in order;
// * the envelope: sealed bytes as a minimal SDP with an a=x-switchboard-sealed: attribute
//   (base64 without padding), since the room relays offers and answers only when they are SDP.
//
// Field and group arithmetic use BigInt (not constant time: an attacker in the page's own
// process is out of scope; each exchange uses a fresh scalar). SHA-256, HKDF, AES-GCM and
// randomness come from WebCrypto. No dependencies; runs in browsers and in Node.js ≥ 20.
// Tested against crates/transfer/src/seal_vectors.json (tests/browser/spake2_vectors.mjs) and
// against the CLI in Chromium (tests/browser/send_e2e.mjs).

const subtle = globalThis.crypto.subtle;
const utf8 = new TextEncoder();

// ------------------------------------------------------------------ codes

/** 256 short, distinct words: one byte each (the list of crates/transfer/src/code.rs). */
export const WORDS = Object.freeze([
  "acid", "acorn", "actor", "adobe", "agent", "album", "alpha", "amber", "angle", "apple", "apron",
  "arena", "armor", "arrow", "aspen", "atlas", "attic", "award", "bacon", "badge", "bagel",
  "baker", "bamboo", "banjo", "barn", "basil", "batch", "beach", "beard", "bench", "berry",
  "bison", "blade", "blank", "blaze", "bloom", "board", "boat", "bonus", "boot", "brave", "bread",
  "brick", "bridge", "brook", "brush", "bucket", "bugle", "cabin", "cable", "cactus", "camel",
  "candle", "canoe", "canyon", "cargo", "carpet", "castle", "cedar", "chalk", "cherry", "chess",
  "chief", "cider", "cinema", "circle", "citrus", "clay", "cliff", "clock", "cloud", "clover",
  "coast", "cobalt", "cocoa", "comet", "copper", "coral", "cotton", "cradle", "crane", "crater",
  "crayon", "cream", "cricket", "crown", "cube", "cycle", "daisy", "dance", "delta", "denim",
  "desert", "diary", "dingo", "dolphin", "donut", "dragon", "drum", "dune", "eagle", "easel",
  "echo", "eclipse", "elbow", "elder", "ember", "engine", "falcon", "fable", "feather", "fence",
  "fern", "ferry", "fiddle", "field", "flame", "flask", "flint", "flute", "forest", "fossil",
  "fox", "frost", "fudge", "galaxy", "garden", "garlic", "gecko", "geyser", "ginger", "glacier",
  "globe", "goose", "granite", "grape", "gravel", "guitar", "hammer", "harbor", "hazel", "helmet",
  "heron", "hiker", "honey", "hornet", "husky", "igloo", "index", "island", "ivory", "jacket",
  "jaguar", "jasmine", "jelly", "jigsaw", "juice", "jungle", "kayak", "kettle", "kiwi", "koala",
  "ladder", "lagoon", "lantern", "laser", "lemon", "lilac", "linen", "lizard", "lobster", "locket",
  "lotus", "magnet", "mango", "maple", "marble", "meadow", "melon", "meteor", "mint", "mirror",
  "mitten", "monkey", "mosaic", "muffin", "nectar", "needle", "nickel", "noodle", "oasis", "ocean",
  "olive", "onion", "opal", "orbit", "orchid", "otter", "oyster", "paddle", "panda", "papaya",
  "parrot", "peach", "pebble", "pepper", "piano", "pickle", "pilot", "pixel", "planet", "plaza",
  "pocket", "polar", "poppy", "prism", "puzzle", "quartz", "quill", "rabbit", "radar", "raven",
  "reef", "ribbon", "river", "robin", "rocket", "saddle", "salmon", "sandal", "satin", "scarf",
  "shadow", "silver", "sketch", "sparrow", "spice", "spiral", "sponge", "spruce", "squid",
  "statue", "summit", "sunset", "tango", "teapot", "thunder", "tiger", "timber", "toast", "topaz",
  "tulip", "tundra", "turtle", "velvet", "violin",
]);

/** How many words a new code has, and the largest room number. */
export const WORD_COUNT = 3;
export const MAX_NUMBER = 999;

/** Why a code does not parse. */
export class CodeError extends Error {}

/**
 * Parses `7-amber-crane-otter` leniently (any case, dashes or spaces), as code.rs does:
 * `{number, words}`, or throws a CodeError saying what is wrong.
 */
export function parseCode(text) {
  const parts = String(text).split(/[\s-]+/).filter(Boolean);
  const first = parts.shift() ?? "";
  const number = /^\d{1,3}$/.test(first) ? Number(first) : NaN;
  if (!(number >= 1 && number <= MAX_NUMBER)) {
    throw new CodeError("a code starts with a number (like 7-amber-crane-otter)");
  }
  const words = parts.map((w) => w.toLowerCase());
  for (const w of words) {
    if (!WORDS.includes(w)) throw new CodeError(`"${w}" is not a code word (typo?)`);
  }
  if (words.length < 2 || words.length > 4) {
    throw new CodeError("a code has a number and two or three words (like 7-amber-crane-otter)");
  }
  return { number, words };
}

/** The normalized text of a code (also the PAKE password). */
export function formatCode(code) {
  return [String(code.number), ...code.words].join("-");
}

/** The room the two sides of a code meet in. */
export function roomOf(code) {
  return `send-${code.number}`;
}

/** A fresh random code (number 1..=999, WORD_COUNT words). */
export function randomCode(words = WORD_COUNT) {
  const b = globalThis.crypto.getRandomValues(new Uint8Array(2 + words));
  const number = 1 + ((b[0] | (b[1] << 8)) % MAX_NUMBER);
  return { number, words: [...b.subarray(2)].map((i) => WORDS[i]) };
}

// ------------------------------------------------------------------ bytes

/** Lower-case hex of bytes. */
export function toHex(bytes) {
  return [...bytes].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** Bytes of a hex string. */
export function fromHex(text) {
  if (text.length % 2 !== 0 || /[^0-9a-fA-F]/.test(text)) throw new Error("not hex");
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Standard base64 without padding (as the Rust side writes it); decoding takes either. */
export function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s).replace(/=+$/, "");
}

/** Bytes of standard base64 (padding optional); throws on anything else. */
export function unbase64(text) {
  const t = String(text).trim();
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(t)) throw new Error("not base64");
  const s = atob(t);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export async function sha256(bytes) {
  return new Uint8Array(await subtle.digest("SHA-256", bytes));
}

async function hkdf(ikm, salt, info, bytes) {
  const key = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const bits = await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, key, bytes * 8);
  return new Uint8Array(bits);
}

function bytesToBigLE(b) {
  let n = 0n;
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]);
  return n;
}

function bytesToBigBE(b) {
  let n = 0n;
  for (const x of b) n = (n << 8n) | BigInt(x);
  return n;
}

function bigToBytesLE(n, len) {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

// ------------------------------------------------------------------ Ed25519 group

const P = (1n << 255n) - 19n;
/** The order of the prime-order subgroup (l). */
export const L = (1n << 252n) + 27742317777372353535851937790883648493n;

const mod = (a, m = P) => {
  const r = a % m;
  return r < 0n ? r + m : r;
};

function pow(b, e, m = P) {
  let r = 1n;
  b = mod(b, m);
  while (e > 0n) {
    if (e & 1n) r = (r * b) % m;
    b = (b * b) % m;
    e >>= 1n;
  }
  return r;
}

const inv = (a) => pow(a, P - 2n);
const D = mod(-121665n * inv(121666n));
const D2 = mod(2n * D);
const SQRT_M1 = pow(2n, (P - 1n) / 4n);

// Points in extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z.
const IDENTITY = Object.freeze([0n, 1n, 1n, 0n]);

/** The unified addition of twisted Edwards curves with a = −1 (also doubles). */
function add(p, q) {
  const [x1, y1, z1, t1] = p;
  const [x2, y2, z2, t2] = q;
  const a = mod((y1 - x1) * (y2 - x2));
  const b = mod((y1 + x1) * (y2 + x2));
  const c = mod(t1 * D2 * t2);
  const d = mod(2n * z1 * z2);
  const e = b - a;
  const f = d - c;
  const g = d + c;
  const h = b + a;
  return [mod(e * f), mod(g * h), mod(f * g), mod(e * h)];
}

/** n·p for 0 ≤ n (the integer n, as curve25519-dalek multiplies by a reduced scalar). */
function multiply(p, n) {
  let r = IDENTITY;
  for (let i = BigInt(n.toString(2).length) - 1n; i >= 0n; i--) {
    r = add(r, r);
    if ((n >> i) & 1n) r = add(r, p);
  }
  return r;
}

/** The 32-byte compressed form: y little-endian, the low bit of x in the top bit. */
export function compress(p) {
  const zi = inv(p[2]);
  const x = mod(p[0] * zi);
  const y = mod(p[1] * zi);
  const out = bigToBytesLE(y, 32);
  out[31] |= Number(x & 1n) << 7;
  return out;
}

/**
 * A point from its compressed form, or null, as curve25519-dalek's `decompress` (the top bit is
 * x's sign; y is taken mod p even when not canonical; a y with no x on the curve is refused).
 */
export function decompress(bytes) {
  if (!(bytes instanceof Uint8Array) || bytes.length !== 32) return null;
  const sign = bytes[31] >> 7;
  const b = bytes.slice();
  b[31] &= 0x7f;
  const y = mod(bytesToBigLE(b));
  const yy = mod(y * y);
  const u = mod(yy - 1n);
  const v = mod(D * yy + 1n);
  const w = mod(u * inv(v));
  let x = pow(w, (P + 3n) / 8n);
  if (mod(x * x) !== w) {
    if (mod(x * x) !== mod(-w)) return null;
    x = mod(x * SQRT_M1);
  }
  if (x & 1n) x = P - x; // the non-negative root
  if (sign) x = mod(-x);
  return [x, y, 1n, mod(x * y)];
}

const BASE = decompress(fromHex("5866666666666666666666666666666666666666666666666666666666666666"));
// The spake2 crate's M and N (as python-spake2's ParamsEd25519).
const M = decompress(fromHex("15cfd18e385952982b6a8f8c7854963b58e34388c8e6dae891db756481a02312"));
const N = decompress(fromHex("f04f2e7eb734b2a8f8b472eaf9c3c632576ac64aea650b496a8a20ff00e583c3"));

/** The password scalar: HKDF-SHA256(salt "", info "SPAKE2 pw", 48 bytes), big-endian, mod l. */
export async function passwordScalar(password) {
  const okm = await hkdf(password, new Uint8Array(0), utf8.encode("SPAKE2 pw"), 48);
  return bytesToBigBE(okm) % L;
}

/** A scalar from 64 random bytes (little-endian mod l, as curve25519-dalek's Scalar::random). */
export function scalarFrom64(bytes) {
  if (bytes.length !== 64) throw new Error("64 bytes make a scalar");
  return bytesToBigLE(bytes) % L;
}

// ------------------------------------------------------------------ SPAKE2

export const ID_SENDER = utf8.encode("switchboard-send");
export const ID_RECEIVER = utf8.encode("switchboard-receive");

/** Which end of a transfer: the sender is SPAKE2's side A, the receiver side B. */
export const Side = Object.freeze({ Sender: "sender", Receiver: "receiver" });

/** Why a key exchange or a sealed message failed. */
export class SealError extends Error {}

/**
 * A started SPAKE2 exchange: `Pake.start(code, side)` gives `{pake, message}`; send `message`,
 * then `await pake.finish(theirs)` gives a Sealer (throws SealError on a malformed message).
 */
export class Pake {
  constructor(side, password, scalar, pw, element, room) {
    this.side = side;
    this._password = password;
    this._scalar = scalar;
    this._pw = pw;
    this._element = element; // our 32 bytes
    this.room = room;
  }

  /**
   * Starts the exchange for `code` ({number, words}) on `side`; `random` (64 bytes) replaces
   * fresh randomness (test vectors only).
   */
  static async start(code, side, random = null) {
    if (side !== Side.Sender && side !== Side.Receiver) throw new Error(`unknown side ${side}`);
    const password = utf8.encode(formatCode(code));
    const scalar = scalarFrom64(random ?? globalThis.crypto.getRandomValues(new Uint8Array(64)));
    const pw = await passwordScalar(password);
    const blind = side === Side.Sender ? M : N;
    const element = compress(add(multiply(BASE, scalar), multiply(blind, pw)));
    const pake = new Pake(side, password, scalar, pw, element, roomOf(code));
    const message = concat(new Uint8Array([side === Side.Sender ? 0x41 : 0x42]), element);
    return { pake, message };
  }

  /** The shared 32-byte key from the peer's message (the same on both sides only with the same code). */
  async secret(theirs) {
    if (!(theirs instanceof Uint8Array) || theirs.length !== 33) {
      throw new SealError("the peer's key exchange message is malformed");
    }
    const expected = this.side === Side.Sender ? 0x42 : 0x41;
    if (theirs[0] !== expected) throw new SealError("the peer's key exchange message is malformed");
    const element = theirs.subarray(1);
    const point = decompress(element);
    if (!point) throw new SealError("the peer's key exchange message is malformed");
    const unblind = this.side === Side.Sender ? N : M;
    const k = multiply(add(point, multiply(unblind, (L - this._pw) % L)), this._scalar);
    const [x, y] = this.side === Side.Sender ? [this._element, element] : [element, this._element];
    const transcript = concat(
      await sha256(this._password),
      await sha256(ID_SENDER),
      await sha256(ID_RECEIVER),
      x,
      y,
      compress(k),
    );
    return sha256(transcript);
  }

  /** Finishes with the peer's message: the Sealer for both directions. */
  async finish(theirs) {
    return Sealer.fromSecret(await this.secret(theirs), this.side, this.room);
  }
}

// ------------------------------------------------------------------ sealing

const SALT = utf8.encode("switchboard send v1");

function nonce(n) {
  const b = new Uint8Array(12);
  new DataView(b.buffer).setBigUint64(4, BigInt(n));
  return b;
}

/** Seals what this side sends and opens what the peer sends (AES-256-GCM, counter nonces). */
export class Sealer {
  constructor(send, recv, sendAad, recvAad) {
    this._send = send;
    this._recv = recv;
    this._sendAad = sendAad;
    this._recvAad = recvAad;
    this.sent = 0;
    this.received = 0;
  }

  /** From the SPAKE2 secret. */
  static async fromSecret(secret, side, room) {
    const key = async (info) =>
      subtle.importKey("raw", await hkdf(secret, SALT, utf8.encode(info), 32), "AES-GCM", false, [
        "encrypt",
        "decrypt",
      ]);
    const toReceiver = await key("sender to receiver");
    const toSender = await key("receiver to sender");
    const aad = (dir) => utf8.encode(`switchboard send v1|${room}|${dir}`);
    return side === Side.Sender
      ? new Sealer(toReceiver, toSender, aad("s2r"), aad("r2s"))
      : new Sealer(toSender, toReceiver, aad("r2s"), aad("s2r"));
  }

  /** Seals `plain` (bytes): the 8-byte counter, then ciphertext and tag. */
  async seal(plain) {
    const n = this.sent++;
    const body = await subtle.encrypt(
      { name: "AES-GCM", iv: nonce(n), additionalData: this._sendAad },
      this._send,
      plain,
    );
    const out = new Uint8Array(8 + body.byteLength);
    new DataView(out.buffer).setBigUint64(0, BigInt(n));
    out.set(new Uint8Array(body), 8);
    return out;
  }

  /** Opens the peer's next message (its counter must be exactly the next one); throws SealError. */
  async open(sealed) {
    if (!(sealed instanceof Uint8Array) || sealed.length < 8 + 16) {
      throw new SealError("a sealed message did not open (wrong code, or tampered with)");
    }
    const n = new DataView(sealed.buffer, sealed.byteOffset, 8).getBigUint64(0);
    if (n !== BigInt(this.received)) {
      throw new SealError("a sealed message did not open (wrong code, or tampered with)");
    }
    let plain;
    try {
      plain = await subtle.decrypt(
        { name: "AES-GCM", iv: nonce(n), additionalData: this._recvAad },
        this._recv,
        sealed.subarray(8),
      );
    } catch {
      throw new SealError("a sealed message did not open (wrong code, or tampered with)");
    }
    this.received++;
    return new Uint8Array(plain);
  }
}

// ------------------------------------------------------------------ the envelope

const ATTR = "a=x-switchboard-sealed:";

/** Sealed bytes as an SDP the server's validator accepts (seal.rs `envelope`, byte for byte). */
export function envelope(sealed) {
  return (
    "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" +
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n" +
    `a=mid:0\r\n${ATTR}${base64(sealed)}\r\n`
  );
}

/** The sealed bytes of an envelope; throws SealError when it is not one. */
export function unenvelope(sdp) {
  const line = String(sdp)
    .split(/\r?\n/)
    .find((l) => l.startsWith(ATTR));
  if (line === undefined) throw new SealError("not a sealed message");
  try {
    return unbase64(line.slice(ATTR.length).trim());
  } catch {
    throw new SealError("not a sealed message");
  }
}

// ------------------------------------------------------------------ incremental SHA-256

const K256 = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/**
 * SHA-256 fed piece by piece (WebCrypto only digests a whole buffer at once): the /send page
 * hashes whole files of any size through it without holding them in memory.
 */
export class Sha256 {
  constructor() {
    this._h = new Uint32Array([
      0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ]);
    this._block = new Uint8Array(64);
    this._fill = 0;
    this._bytes = 0;
    this._w = new Uint32Array(64);
  }

  /** Adds bytes (a Uint8Array). */
  update(data) {
    let i = 0;
    this._bytes += data.length;
    if (this._fill > 0) {
      const take = Math.min(64 - this._fill, data.length);
      this._block.set(data.subarray(0, take), this._fill);
      this._fill += take;
      i = take;
      if (this._fill < 64) return this;
      this._compress(this._block, 0);
      this._fill = 0;
    }
    for (; i + 64 <= data.length; i += 64) this._compress(data, i);
    if (i < data.length) {
      this._block.set(data.subarray(i), 0);
      this._fill = data.length - i;
    }
    return this;
  }

  /** The 32-byte digest (the hash cannot be fed after this). */
  digest() {
    const bits = this._bytes * 8;
    const pad = new Uint8Array((this._fill < 56 ? 64 : 128) - this._fill);
    pad[0] = 0x80;
    const view = new DataView(pad.buffer);
    view.setUint32(pad.length - 8, Math.floor(bits / 2 ** 32));
    view.setUint32(pad.length - 4, bits >>> 0);
    this.update(pad);
    const out = new Uint8Array(32);
    const o = new DataView(out.buffer);
    for (let j = 0; j < 8; j++) o.setUint32(4 * j, this._h[j]);
    return out;
  }

  _compress(b, at) {
    const w = this._w;
    for (let j = 0; j < 16; j++) {
      const k = at + 4 * j;
      w[j] = (b[k] << 24) | (b[k + 1] << 16) | (b[k + 2] << 8) | b[k + 3];
    }
    for (let j = 16; j < 64; j++) {
      const x = w[j - 15];
      const y = w[j - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[j] = (w[j - 16] + s0 + w[j - 7] + s1) | 0;
    }
    const h = this._h;
    let a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (let j = 0; j < 64; j++) {
      const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + s1 + ch + K256[j] + w[j]) | 0;
      const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & bb) ^ (a & c) ^ (bb & c);
      const t2 = (s0 + maj) | 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = bb;
      bb = a;
      a = (t1 + t2) | 0;
    }
    h[0] += a;
    h[1] += bb;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
}
