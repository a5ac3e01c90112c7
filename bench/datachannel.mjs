// Chromium -> Chromium data-channel throughput on this machine, the anchor of bench/send.sh:
// one headless Debian Chromium, one page, two RTCPeerConnections connected over host candidates
// (the SCTP association runs over real UDP sockets through the kernel, as between two
// browsers), one reliable ordered data channel, SIZE_MB MB sent in 64 KiB messages (the CLI's
// chunk size) with back-pressure on bufferedAmount. The receiver counts bytes (no hashing, no
// disk: Chromium's data channel alone).
//
// Prints one line: "MB/s CPU-seconds-per-MiB" (CPU of every Chromium process, user + sys, from
// the first message to the last byte received).
//
// Usage: node bench/datachannel.mjs [--size-mb 200] [--chromium /usr/bin/chromium]

import fs from "node:fs";
import { BASE_ARGS, loadChromium, parseOrExit, requireChromium } from "../tests/browser/chromium.mjs";

const opts = parseOrExit("datachannel.mjs", (argv) => {
  const o = { sizeMb: 200, chromium: "/usr/bin/chromium" };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    if (argv[i] === "--size-mb" && v) o.sizeMb = Number(v), i++;
    else if (argv[i] === "--chromium" && v) o.chromium = v, i++;
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  if (!(o.sizeMb > 0)) throw new Error("--size-mb must be positive");
  return o;
});
requireChromium(opts.chromium);

/** user + sys clock ticks of all descendants of `root` (not `root` itself). */
function treeTicks(root) {
  const children = new Map();
  const ticks = new Map();
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${d}/stat`, "utf8");
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const pid = Number(d);
    const ppid = Number(f[1]);
    ticks.set(pid, Number(f[11]) + Number(f[12]));
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(pid);
  }
  let sum = -(ticks.get(root) ?? 0);
  const todo = [root];
  while (todo.length) {
    const p = todo.pop();
    sum += ticks.get(p) ?? 0;
    todo.push(...(children.get(p) ?? []));
  }
  return sum;
}

const chromium = await loadChromium();
const browser = await chromium.launch({
  executablePath: opts.chromium,
  headless: true,
  args: [...BASE_ARGS, "--disable-features=WebRtcHideLocalIpsWithMdns"],
});
// Chromium's processes are this script's descendants; its own CPU is left out.
const pid = process.pid;
try {
  const page = await browser.newPage();
  const bytes = Math.round(opts.sizeMb * 1e6);
  // Connect first (outside the measurement), then time only the data.
  await page.evaluate(async () => {
    const a = new RTCPeerConnection();
    const b = new RTCPeerConnection();
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    const ch = a.createDataChannel("bench", { ordered: true });
    ch.binaryType = "arraybuffer";
    const incoming = new Promise((r) => (b.ondatachannel = (e) => r(e.channel)));
    await a.setLocalDescription();
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription();
    await a.setRemoteDescription(b.localDescription);
    await new Promise((r, j) => {
      ch.onopen = r;
      setTimeout(() => j(new Error("the data channel did not open in 20 s")), 20000);
    });
    const rx = await incoming;
    rx.binaryType = "arraybuffer";
    window.bench = { a, b, ch, rx };
  });
  const before = treeTicks(pid);
  const seconds = await page.evaluate(async (total) => {
    const { ch, rx } = window.bench;
    const chunk = new Uint8Array(65536);
    crypto.getRandomValues(chunk);
    const t0 = performance.now();
    const done = new Promise((resolve) => {
      let got = 0;
      rx.onmessage = (e) => {
        got += e.data.byteLength;
        if (got >= total) resolve(performance.now());
      };
    });
    const high = 4 << 20;
    ch.bufferedAmountLowThreshold = 1 << 20;
    let sent = 0;
    while (sent < total) {
      if (ch.bufferedAmount > high) {
        await new Promise((r) => (ch.onbufferedamountlow = r));
      }
      const n = Math.min(chunk.length, total - sent);
      ch.send(n === chunk.length ? chunk : chunk.subarray(0, n));
      sent += n;
    }
    const t1 = await done;
    return (t1 - t0) / 1000;
  }, bytes);
  const after = treeTicks(pid);
  const hz = 100; // USER_HZ on Linux
  const mib = bytes / 1048576;
  console.log(`${(bytes / seconds / 1e6).toFixed(3)} ${((after - before) / hz / mib).toFixed(5)}`);
} finally {
  await browser.close();
}
