#!/usr/bin/env node
// web/spake2.js (the /send page's SPAKE2, sealing and codes) against the Rust side's fixed
// vectors, crates/transfer/src/seal_vectors.json (written and checked by seal.rs's
// fixed_vectors_match_the_file): the password scalar, both SPAKE2 messages from the same fixed
// randomness, the shared secret of each side, every sealed message sealed again here and byte
// for byte equal, opened here in order (and refused out of order or tampered with), the
// envelope, and a wrong code giving another secret whose messages do not open. Plus codes:
// parse, normalize, refuse. And the incremental SHA-256 against Node's. Node ≥ 20, no
// dependencies.
//
// usage: node spake2_vectors.mjs      (prints "ok N checks" and exits 0, or throws)

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const js = await import(path.join(ROOT, "web/spake2.js"));
const { Pake, Sealer, Side, SealError, fromHex, toHex, envelope, unenvelope, parseCode } = js;

const vectors = JSON.parse(fs.readFileSync(path.join(ROOT, "crates/transfer/src/seal_vectors.json"), "utf8"));
const utf8 = new TextEncoder();
let checks = 0;
const eq = (a, b, what) => {
  assert.equal(a, b, what);
  checks++;
};

// The spake2 crate's own password-to-scalar vector.
const pw = vectors.password_scalar;
eq((await js.passwordScalar(utf8.encode(pw.password))).toString(), pw.decimal, "password scalar");

for (const [i, ex] of vectors.exchanges.entries()) {
  const what = `exchange ${i} (${ex.code_a} / ${ex.code_b})`;
  const codeA = parseCode(ex.code_a);
  const codeB = parseCode(ex.code_b);
  const a = await Pake.start(codeA, Side.Sender, fromHex(ex.rng_a));
  const b = await Pake.start(codeB, Side.Receiver, fromHex(ex.rng_b));
  eq(toHex(a.message), ex.msg_a, `${what}: message A`);
  eq(toHex(b.message), ex.msg_b, `${what}: message B`);
  eq(toHex(await a.pake.secret(b.message)), ex.secret_a, `${what}: secret A`);
  eq(toHex(await b.pake.secret(a.message)), ex.secret_b, `${what}: secret B`);
  eq(ex.room, js.roomOf(codeA), `${what}: room`);

  const sender = await Sealer.fromSecret(fromHex(ex.secret_a), Side.Sender, ex.room);
  const receiver = await Sealer.fromSecret(fromHex(ex.secret_b), Side.Receiver, ex.room);
  // Sealing again gives the very bytes Rust sealed (same keys, nonces and associated data).
  for (const m of ex.r2s) eq(toHex(await receiver.seal(utf8.encode(m.plain))), m.sealed, `${what}: r2s #${m.counter}`);
  for (const m of ex.s2r) eq(toHex(await sender.seal(utf8.encode(m.plain))), m.sealed, `${what}: s2r #${m.counter}`);
  eq(envelope(fromHex(ex.r2s[0].sealed)), ex.envelope, `${what}: envelope`);
  eq(toHex(unenvelope(ex.envelope)), ex.r2s[0].sealed, `${what}: unenvelope`);

  const same = ex.secret_a === ex.secret_b;
  const opener = await Sealer.fromSecret(fromHex(ex.secret_a), Side.Sender, ex.room);
  if (same) {
    // Out of order: refused, and the counter does not move.
    await assert.rejects(opener.open(fromHex(ex.r2s[1].sealed)), SealError);
    const tampered = fromHex(ex.r2s[0].sealed);
    tampered[tampered.length - 1] ^= 1;
    await assert.rejects(opener.open(tampered), SealError);
    for (const m of ex.r2s) {
      eq(new TextDecoder().decode(await opener.open(fromHex(m.sealed))), m.plain, `${what}: open r2s #${m.counter}`);
    }
    // A replay and a reflection are refused.
    await assert.rejects(opener.open(fromHex(ex.r2s[0].sealed)), SealError);
    await assert.rejects(opener.open(fromHex(ex.s2r[0].sealed)), SealError);
    checks += 4;
  } else {
    assert.notEqual(ex.secret_a, ex.secret_b, what);
    await assert.rejects(opener.open(fromHex(ex.r2s[0].sealed)), SealError);
    checks += 2;
  }
}

// Fresh (random) exchanges agree with each other, and a wrong code does not.
const code = parseCode("42-amber-crane-otter");
const a = await Pake.start(code, Side.Sender);
const b = await Pake.start(code, Side.Receiver);
eq(toHex(await a.pake.secret(b.message)), toHex(await b.pake.secret(a.message)), "random exchange");
const c = await Pake.start(parseCode("42-amber-crane-tulip"), Side.Receiver);
assert.notEqual(toHex(await a.pake.secret(c.message)), toHex(await c.pake.secret(a.message)));
// Malformed peer messages: wrong length, wrong side byte, not a point.
await assert.rejects(a.pake.secret(a.message), SealError);
await assert.rejects(a.pake.secret(b.message.subarray(1)), SealError);
let notPoint = null;
for (let y = 2; !notPoint; y++) {
  const e = new Uint8Array(32);
  e[0] = y;
  if (!js.decompress(e)) notPoint = e;
}
await assert.rejects(a.pake.secret(new Uint8Array([0x42, ...notPoint])), SealError);
checks += 4;

// Codes, as code.rs parses them.
eq(js.WORDS.length, 256, "256 words");
eq(new Set(js.WORDS).size, 256, "distinct words");
eq(js.formatCode(parseCode(" 42 Amber  crane-OTTER ")), "42-amber-crane-otter", "normalize");
for (const bad of ["amber-crane", "0-amber-crane", "1000-amber-crane", "5-amber", "5-amber-zzz", "x5-amber-crane"]) {
  assert.throws(() => parseCode(bad), js.CodeError, bad);
  checks++;
}
for (let i = 0; i < 200; i++) {
  const r = js.randomCode();
  assert.ok(r.number >= 1 && r.number <= 999 && r.words.length === 3);
  eq(js.formatCode(parseCode(js.formatCode(r))), js.formatCode(r), "round trip");
}

// The incremental SHA-256 the page hashes whole files with, against Node's, fed in odd pieces.
{
  const { createHash } = await import("node:crypto");
  for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 65536 * 3 + 17]) {
    const data = new Uint8Array(n);
    for (let i = 0; i < n; i++) data[i] = (i * 131 + n) & 0xff;
    const h = new js.Sha256();
    for (let at = 0, step = 1; at < n; at += step, step = (step * 7 + 3) % 5000 + 1) {
      h.update(data.subarray(at, Math.min(n, at + step)));
    }
    assert.equal(toHex(h.digest()), createHash("sha256").update(data).digest("hex"), `sha256 of ${n} bytes`);
    checks++;
  }
}
console.log(`ok ${checks} checks`);
