// Small helpers shared by the console and the call page. No dependencies, no build step.

/** document.querySelector shorthand. */
export const $ = (selector, root = document) => root.querySelector(selector);

/**
 * Creates an element: el("td", {className: "x", title: "t"}, "text", child, ...).
 * Text is always set as text (never parsed as HTML), so values from the network are safe.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else node[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

/** 1234567 -> "1.2 M", for counters and rates. */
export function human(n, unit = "") {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const abs = Math.abs(n);
  const steps = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [f, s] of steps) {
    if (abs >= f) return `${(n / f).toFixed(abs >= 10 * f ? 0 : 1)} ${s}${unit}`;
  }
  if (Number.isInteger(n)) return `${n}${unit ? " " + unit : ""}`;
  return `${n.toFixed(abs >= 10 ? 0 : 1)}${unit ? " " + unit : ""}`;
}
