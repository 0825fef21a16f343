// pde-zoo explore: draws what the server computed with pde_zoo. No maths here beyond colouring.
"use strict";

// Everything the page holds, for people (the console) and for the tests.
const explore = {
  model: null,        // name of the selected model
  summary: null,      // /api/model
  forward: null,      // /api/forward (states as base64 float32)
  states: [],         // Float32Array per state (the channel shown)
  index: 0,           // the state under the slider
  physics: null,      // /api/block of the block under the slider
  timings: [],        // [{what, ms}] of every API round trip
  busy: 0,
  input: { index: 0 },
  // the counterpart shown side by side (pdenet free against stable=True): same input, state and block
  compare: { name: null, on: false, summary: null, forward: null, states: [], physics: null },
  compareValues(i) { return Array.from(this.compare.states[i === undefined ? this.index : i] || []); },
  stateValues(i) { return Array.from(this.states[i === undefined ? this.index : i]); },
  shownValues() { return Array.from(this.shown || []); },
};
window.explore = explore;

const $ = (id) => document.getElementById(id);
const SVGNS = "http://www.w3.org/2000/svg";

// ----------------------------------------------------------------- helpers

function decode(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

// viridis, 9 stops (matplotlib's), linearly interpolated
const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
function viridis(u) {
  u = Math.min(1, Math.max(0, isFinite(u) ? u : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(u)), f = u - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
}
function diverging(u) { // u in [-1, 1]: blue - white - red
  u = Math.min(1, Math.max(-1, isFinite(u) ? u : 0));
  return u < 0 ? [Math.round(255 * (1 + u)), Math.round(255 * (1 + u)), 255] : [255, Math.round(255 * (1 - u)), Math.round(255 * (1 - u))];
}

// Draw a (h, w) array on a canvas, scaled with nearest-neighbour pixels.
function drawArray(canvas, values, h, w, { lo, hi, diverge = false } = {}) {
  if (lo === undefined) { lo = Infinity; hi = -Infinity; for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; } }
  const off = document.createElement("canvas");
  off.width = w; off.height = h;
  const ctx = off.getContext("2d");
  const img = ctx.createImageData(w, h);
  const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
  for (let i = 0; i < h * w; i++) {
    const c = diverge ? diverging(values[i] / m) : viridis(hi > lo ? (values[i] - lo) / (hi - lo) : 0);
    img.data.set([c[0], c[1], c[2], 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  const out = canvas.getContext("2d");
  out.imageSmoothingEnabled = false;
  out.clearRect(0, 0, canvas.width, canvas.height);
  out.drawImage(off, 0, 0, canvas.width, canvas.height);
}

function fmt(x, digits = 4) {
  if (x === null || x === undefined) return "–";
  if (typeof x !== "number" || Number.isInteger(x)) return String(x);
  if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e4)) return x.toExponential(digits - 1);
  return x.toPrecision(digits);
}

function setStatus(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

async function api(what, url, options) {
  const t0 = performance.now();
  explore.busy++;
  try {
    const response = await fetch(url, options);
    const body = await response.json();
    const ms = performance.now() - t0;
    explore.timings.push({ what, url: url.split("?")[0], ms, server_ms: body.compute_ms });
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  } finally {
    explore.busy--;
  }
}

function el(tag, attrs = {}, text) {
  const node = tag === "svg" || ["rect", "line", "text", "circle", "polyline", "g", "title"].includes(tag)
    ? document.createElementNS(SVGNS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// ----------------------------------------------------------------- models

async function loadModels() {
  const { models, default: first } = await api("models", "/api/models");
  const select = $("model");
  for (const m of models) {
    const acc = m.test_accuracy ? ` — ${(100 * m.test_accuracy).toFixed(2)}%` : "";
    select.append(el("option", { value: m.name }, `${m.name}${acc}`));
  }
  const wanted = new URLSearchParams(location.search).get("model");
  select.value = wanted && models.some((m) => m.name === wanted) ? wanted : first;
  await selectModel(select.value);
}

async function selectModel(name) {
  setStatus(`loading ${name} (first time: a few seconds)…`);
  explore.model = name;
  explore.physics = null;
  const summary = await api("model", `/api/model?name=${encodeURIComponent(name)}`);
  if (explore.model !== name) return;
  explore.summary = summary;
  const bits = [summary.kind, `${summary.n_blocks || summary.pieces || 0} ${summary.pieces ? "pieces" : "blocks"}`,
    (summary.block_types || []).join(", "), `${summary.params.toLocaleString()} params`];
  if (summary.metrics && summary.metrics.test_accuracy) bits.push(`test acc ${(100 * summary.metrics.test_accuracy).toFixed(2)}%`);
  $("model-info").textContent = bits.join(" · ");
  $("channel").value = 0;
  $("grid-toggle").checked = false;
  const c = explore.compare;
  c.name = summary.counterpart || null;
  c.on = Boolean(c.name) && $("compare-toggle").checked;
  c.summary = c.on ? await api("model", `/api/model?name=${encodeURIComponent(c.name)}`) : null;
  $("compare-row").hidden = !c.name;
  $("compare-name").textContent = c.name || "";
  await runForward();
  drawStability();
  if (summary.stability && summary.stability.pending) pollStability(name);
}

async function pollStability(name) {
  await new Promise((r) => setTimeout(r, 5000));
  if (explore.model !== name) return;
  const summary = await api("model", `/api/model?name=${encodeURIComponent(name)}`);
  explore.summary = summary;
  drawStability();
  if (summary.stability && summary.stability.pending) pollStability(name);
  else updatePhysics(true);
}

// ----------------------------------------------------------------- forward

function channelParam() { return $("grid-toggle").checked ? "all" : String(Math.max(0, parseInt($("channel").value || "0", 10))); }

async function runForward() {
  const name = explore.model;
  const channel = channelParam();
  let body;
  try {
    if (explore.input.pixels) {
      body = await api("forward", "/api/forward", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name, pixels: explore.input.pixels, channel }) });
    } else {
      body = await api("forward", `/api/forward?name=${encodeURIComponent(name)}&index=${explore.input.index}&channel=${channel}`);
    }
  } catch (err) {
    setStatus(err.message, true);
    return;
  }
  if (name !== explore.model) return;
  const c = explore.compare;
  if (c.on) {
    const other = explore.input.pixels
      ? await api("forward", "/api/forward", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name: c.name, pixels: explore.input.pixels, channel }) })
      : await api("forward", `/api/forward?name=${encodeURIComponent(c.name)}&index=${explore.input.index}&channel=${channel}`);
    if (name !== explore.model) return;
    c.forward = other;
    c.states = other.states.map((s) => decode(s.data));
  } else {
    c.forward = null;
    c.states = [];
  }
  explore.forward = body;
  explore.states = body.states.map((s) => decode(s.data));
  const slider = $("depth-slider");
  const last = body.states.length - 1;
  const keep = Math.min(parseInt(slider.value, 10) || 0, last);
  slider.max = last;
  slider.value = explore.index = (slider.dataset.model === name ? keep : last);
  slider.dataset.model = name;
  const multi = Math.max(...body.widths) > 1;
  $("channel-row").hidden = !multi;
  drawPrediction(body);
  drawStrip();
  drawInput(body);
  drawOde(body);
  await showState(explore.index);
  const t = explore.timings[explore.timings.length - 1];
  setStatus(`${name}: ${body.states.length} states, predicted ${body.prediction} · round trip ${t.ms.toFixed(1)} ms (server ${body.compute_ms} ms${body.cached ? ", cached" : ""})`);
}

function drawInput(body) {
  if (body.input.source !== "test") return;
  drawArray($("input-canvas"), decode(body.image), 28, 28, { lo: 0, hi: 1 });
}

function drawPrediction(body) {
  $("predicted").textContent = body.prediction;
  $("truth").textContent = body.input.label === null || body.input.label === undefined ? "(drawing)" : `label ${body.input.label}`;
  const svg = $("probabilities");
  svg.replaceChildren();
  body.probabilities.forEach((p, k) => {
    const y = 4 + k * 14;
    svg.append(el("text", { x: 2, y: y + 10, "font-size": 11 }, String(k)));
    svg.append(el("rect", { x: 16, y, width: Math.max(1, 200 * p), height: 11, fill: k === body.prediction ? "#e4572e" : "#4c78a8" }));
    svg.append(el("text", { x: 222, y: y + 10, "font-size": 10 }, (100 * p).toFixed(1) + "%"));
  });
  svg.dataset.prediction = body.prediction;
}

function drawStrip() {
  const strip = $("strip");
  strip.replaceChildren();
  const n = explore.states.length;
  const picks = [...new Set(Array.from({ length: Math.min(n, 10) }, (_, i) => Math.round(i * (n - 1) / Math.max(1, Math.min(n, 10) - 1))))];
  for (const i of picks) {
    const s = explore.forward.states[i];
    if (s.channel === "all") continue;
    const c = el("canvas", { width: 34, height: 34, title: s.label, "data-index": i });
    drawArray(c, explore.states[i], s.shape[0], s.shape[1]);
    c.addEventListener("click", () => { $("depth-slider").value = i; showState(i); });
    strip.append(c);
  }
}

async function showState(i) {
  explore.index = i;
  const s = explore.forward.states[i];
  $("state-label").textContent = `${i}/${explore.states.length - 1}: ${s.label}`;
  const grid = $("grid");
  if (s.channel === "all") {
    const [C, h, w] = s.shape;
    $("psi-canvas").hidden = true;
    grid.hidden = false;
    grid.replaceChildren();
    const size = C > 64 ? 20 : 34;
    for (let c = 0; c < C; c++) {
      const cv = el("canvas", { width: size, height: size, title: `channel ${c}` });
      drawArray(cv, explore.states[i].subarray(c * h * w, (c + 1) * h * w), h, w, { lo: s.min, hi: s.max });
      grid.append(cv);
    }
    explore.shown = explore.states[i];
  } else {
    $("psi-canvas").hidden = false;
    grid.hidden = true;
    drawArray($("psi-canvas"), explore.states[i], s.shape[0], s.shape[1]);
    explore.shown = explore.states[i];
  }
  const c = explore.compare;
  const other = c.on && c.forward && c.forward.states[i];
  $("psi-compare").hidden = !other || s.channel === "all";
  $("psi-caption").textContent = c.on ? `${explore.model}: predicts ${explore.forward.prediction}` : "";
  if (other && s.channel !== "all") {
    drawArray($("psi-canvas-b"), c.states[i], other.shape[0], other.shape[1]);
    $("psi-caption-b").textContent = `${c.name}: predicts ${c.forward.prediction} · ${other.label}`;
  }
  $("psi-canvas").dataset.stateIndex = i;
  let lo = Infinity, hi = -Infinity;
  for (const v of explore.states[i]) { if (v < lo) lo = v; if (v > hi) hi = v; }
  $("psi-range").textContent = `shown: min ${fmt(lo)} · max ${fmt(hi)}` + (s.channels > 1 ? ` · channel ${s.channel} of ${s.channels}` : "");
  for (const c of $("strip").children) c.classList.toggle("current", Number(c.dataset.index) === i);
  await updatePhysics();
}

function drawOde(body) {
  const box = $("ode-panel");
  box.hidden = !body.ode;
  if (!body.ode) return;
  const info = $("ode-info");
  info.replaceChildren();
  for (const o of body.ode) {
    const own = o.model_forward_stats || {};
    info.append(el("div", {}, `${o.name}: ${o.method}, rtol ${fmt(o.rtol)}, atol ${fmt(o.atol)}${o.step_size ? ", step " + o.step_size : ""}`));
    info.append(el("div", {}, `model's own solve: NFE ${fmt(own.nfe, 6)}, accepted steps ${fmt(own.steps, 6)}, rejected ${fmt(own.rejected, 6)}`));
    info.append(el("div", {}, `output-time solve (${o.output_times_per_segment} per segment): NFE ${o.nfe}, steps ${o.steps}, rejected ${o.rejected}; ψ(t1) vs the model: max |Δ| ${fmt(o.max_abs_diff_vs_model_forward)}`));
    const table = el("table");
    table.append(el("tr", {}, ""));
    table.firstChild.append(el("th", {}, "segment"), el("th", {}, "NFE"), el("th", {}, "steps"), el("th", {}, "rejected"), el("th", {}, "mean step"));
    for (const seg of o.segments) {
      const tr = el("tr");
      tr.append(el("td", {}, `[${seg.t0}, ${seg.t1}]`), el("td", {}, seg.nfe), el("td", {}, seg.steps), el("td", {}, seg.rejected),
        el("td", {}, fmt((seg.t1 - seg.t0) / Math.max(1, seg.steps), 3)));
      table.append(tr);
    }
    info.append(table);
    info.append(drawStepSizes(o));
  }
}

// The accepted step sizes of the model's own solve (solve_steps, segment by segment): one bar per
// step over [t, t + h], its height h (shared scale); rejected attempts counted under the chart.
function drawStepSizes(o) {
  const W = 420, H = 90, L = 38, B = 18, T = 6;
  const svg = el("svg", { width: W, height: H, class: "step-sizes", role: "img", "aria-label": `accepted step sizes of ${o.name}` });
  const segs = o.segments.filter((s) => s.own_steps);
  if (!segs.length) return svg;
  const t0 = segs[0].t0, t1 = segs[segs.length - 1].t1;
  const hmax = Math.max(...segs.flatMap((s) => s.own_steps.sizes)) || 1;
  const x = (t) => L + (W - L - 6) * (t - t0) / ((t1 - t0) || 1);
  const y = (h) => T + (H - T - B) * (1 - h / hmax);
  let accepted = 0, rejected = 0;
  for (const s of segs) {
    s.own_steps.starts.forEach((t, k) => {
      const h = s.own_steps.sizes[k];
      const r = el("rect", { x: x(t), y: y(h), width: Math.max(0.5, x(t + h) - x(t) - 0.5), height: Math.max(0.5, y(0) - y(h)), fill: "#4c78a8" });
      r.append(el("title", {}, `step ${accepted + k + 1}: t = ${fmt(t, 4)}, h = ${fmt(h, 4)}`));
      svg.append(r);
    });
    accepted += s.own_steps.sizes.length;
    rejected += s.own_steps.rejected_sizes.length;
    svg.append(el("line", { x1: x(s.t1), x2: x(s.t1), y1: T, y2: y(0), stroke: "#bbb", "stroke-dasharray": "2 2" }));
  }
  svg.append(el("text", { x: 2, y: y(hmax) + 8, "font-size": 10 }, fmt(hmax, 3)));
  svg.append(el("text", { x: 2, y: y(0), "font-size": 10 }, "h = 0"));
  svg.append(el("text", { x: L, y: H - 4, "font-size": 10 }, `accepted step sizes h, t = ${fmt(t0, 3)} … ${fmt(t1, 3)}: ${accepted} accepted, ${rejected} rejected`));
  svg.dataset.accepted = accepted;
  return svg;
}

// ----------------------------------------------------------------- physics

let physicsToken = 0;
async function updatePhysics(force = false) {
  const s = explore.forward && explore.forward.states[explore.index];
  const summary = explore.summary;
  const nBlocks = summary.n_blocks || summary.pieces || 0;
  if (!s || !nBlocks || s.block === null || s.block === undefined) {
    $("physics-title").textContent = "this model has no blocks with a stencil (no PDE to show)";
    explore.physics = null;
    return;
  }
  const block = Math.min(Math.max(1, s.block), nBlocks);
  const channel = s.channel === "all" ? 0 : s.channel;
  if (!force && explore.physics && explore.physics.block === block && explore.physics.channel === channel % explore.physics.channels && explore.physics.model === explore.model) {
    drawStability();
    return;
  }
  const token = ++physicsToken;
  let ph;
  try {
    ph = await api("block", `/api/block?name=${encodeURIComponent(explore.model)}&block=${block}&channel=${channel}`);
  } catch (err) {
    setStatus(err.message, true);
    return;
  }
  const c = explore.compare;
  let other = null;
  if (c.on) {
    try {
      other = await api("block", `/api/block?name=${encodeURIComponent(c.name)}&block=${block}&channel=${channel}`);
    } catch (err) {
      setStatus(err.message, true);
    }
  }
  if (token !== physicsToken) return;
  explore.physics = ph;
  c.physics = other;
  drawPhysics(ph);
  drawComparePhysics(other);
  drawStability();
}

function drawPhysics(ph) {
  $("physics-title").textContent = `block ${ph.block}: ${ph.name} (${ph.type})` + (ph.channels > 1 ? ` · channel ${ph.channel} of ${ph.channels}` : "");
  const e = ph.channel_entry || {};
  const coefficients = $("coefficients");
  coefficients.replaceChildren();
  const head = el("tr");
  const rowC = el("tr");
  if (e.coefficients) {
    for (const [k, sym] of [["alpha", "α"], ["beta", "β"], ["sigma", "σ"], ["rho", "ρ"], ["gamma", "γ"]]) {
      head.append(el("th", {}, sym));
      rowC.append(el("td", {}, fmt(e.coefficients[k])));
    }
    coefficients.append(head, rowC);
  }
  if (e.fit) {
    const h2 = el("tr"), r2 = el("tr");
    for (const k of ["Dxx", "Dx", "Dyy", "Dy", "I"]) { h2.append(el("th", {}, k)); r2.append(el("td", {}, fmt(e.fit[k]))); }
    h2.append(el("th", {}, "residual"));
    r2.append(el("td", {}, fmt(e.residual, 3)));
    coefficients.append(h2, r2);
  }
  const st = $("stencil");
  st.replaceChildren();
  const k = ph.stencil;
  const m = Math.max(...k.flat().map(Math.abs)) || 1;
  for (let r = 0; r < 3; r++) {
    const tr = el("tr");
    for (let c = 0; c < 3; c++) {
      const td = el("td", {}, fmt(k[r][c]));
      const col = diverging(k[r][c] / m);
      td.style.backgroundColor = `rgb(${col[0]},${col[1]},${col[2]})`;  // CSSOM: allowed by the page's CSP
      tr.append(td);
    }
    st.append(tr);
  }
  const vn = e.von_neumann;
  $("von-neumann").textContent = vn ? `von Neumann: G(0) = ${fmt(vn.G_zero)}, G(π,π) = ${fmt(vn.G_pi)}, diffusion number ${fmt(vn.diffusion_number)}, drift number ${fmt(vn.drift_number)}, max|G| = ${fmt(vn.max_abs_G, 6)} (${vn.stable ? "stable" : "amplifying"})` : "";
  // |G(p)|
  const sym = ph.symbol;
  $("symbol-title").textContent = ph.symbol_kind;
  const values = decode(sym.data);
  drawArray($("symbol-canvas"), values, sym.shape[0], sym.shape[1], { lo: sym.min, hi: sym.max });
  const marker = $("symbol-marker");
  marker.replaceChildren();
  const cell = 195 / sym.shape[0];
  marker.append(el("circle", { cx: (sym.argmax.col + 0.5) * cell, cy: (sym.argmax.row + 0.5) * cell, r: 6, fill: "none", stroke: "#ff2d55", "stroke-width": 2 }));
  marker.append(el("line", { x1: 97.5, y1: 0, x2: 97.5, y2: 195, stroke: "#ffffff80", "stroke-width": 0.5 }));
  marker.append(el("line", { x1: 0, y1: 97.5, x2: 195, y2: 97.5, stroke: "#ffffff80", "stroke-width": 0.5 }));
  $("symbol-info").textContent = `p ∈ [−π, π]² (px → right, py ↓); grid max ${fmt(sym.max, 6)} at p = (${fmt(sym.argmax.px, 3)}, ${fmt(sym.argmax.py, 3)}) ○; refined max ${fmt(e.max_abs_G, 8)}; min ${fmt(sym.min, 4)}`;
  // propagator
  const prop = ph.propagator || {};
  const pc = $("propagator-canvas");
  if (prop.data) {
    drawArray(pc, decode(prop.data), prop.shape[0], prop.shape[1], { lo: Math.min(0, prop.min), hi: prop.max, diverge: prop.min < 0 });
    $("propagator-info").textContent = `${prop.steps} blocks, ${prop.shape[0]}×${prop.shape[1]} offsets; ΣP = ${fmt(prop.sum, 6)}, max ${fmt(prop.max)}, min ${fmt(prop.min)}`;
    pc.hidden = false;
  } else {
    pc.hidden = true;
    $("propagator-info").textContent = prop.skipped ? `not shown: ${prop.skipped}` : "";
  }
  const mix = ph.mixing;
  $("mixing-box").hidden = !mix;
  if (mix) {
    drawArray($("mixing-canvas"), decode(mix.data), mix.shape[0], mix.shape[1], { lo: mix.min, hi: mix.max, diverge: true });
    $("mixing-info").textContent = `Γ[c, c'] (output, input), min ${fmt(mix.min)}, max ${fmt(mix.max)}; red > 0 > blue`;
  }
}

function drawComparePhysics(ph) {
  $("symbol-compare").hidden = !ph;
  if (!ph) return;
  const sym = ph.symbol, e = ph.channel_entry || {};
  $("symbol-title-b").textContent = `${explore.compare.name}: ${ph.symbol_kind}`;
  // one colour scale for both maps, so the two parametrizations compare at a glance
  const mine = explore.physics && explore.physics.symbol;
  const lo = Math.min(sym.min, mine ? mine.min : sym.min), hi = Math.max(sym.max, mine ? mine.max : sym.max);
  drawArray($("symbol-canvas-b"), decode(sym.data), sym.shape[0], sym.shape[1], { lo, hi });
  if (mine) drawArray($("symbol-canvas"), decode(mine.data), mine.shape[0], mine.shape[1], { lo, hi });
  const g = ph.stability && ph.stability.block_max_abs_G;
  $("symbol-info-b").textContent = `block ${ph.block} (${ph.type}), channel ${ph.channel}: grid max ${fmt(sym.max, 6)}, refined max ${fmt(e.max_abs_G, 8)}` +
    (g !== undefined ? `; the block's max_p ‖G(p)‖₂ ${fmt(g, 8)}` : "") + `; shared colour scale [${fmt(lo, 4)}, ${fmt(hi, 4)}]`;
}

function drawStability() {
  const svg = $("stability");
  svg.replaceChildren();
  const st = explore.summary && explore.summary.stability;
  const info = $("stability-info");
  if (!st) { info.textContent = "no blocks"; return; }
  if (st.pending) { info.textContent = `computing… (${st.source})`; return; }
  const g = st.layer_max;
  const W = 640, H = 170, L = 44, B = 22, T = 8;
  const hi = Math.max(1.05, ...g) * 1.05, lo = Math.min(0.9, ...g) * 0.95;
  const x = (i) => L + (i + 0.5) * (W - L - 8) / g.length;
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  svg.append(el("line", { x1: L, x2: W - 8, y1: y(1), y2: y(1), stroke: "#999", "stroke-dasharray": "4 3" }));
  svg.append(el("text", { x: 2, y: y(1) + 4, "font-size": 10 }, "|G| = 1"));
  for (const v of [lo, hi]) svg.append(el("text", { x: 2, y: y(v) + 4, "font-size": 10 }, fmt(v, 3)));
  const current = explore.physics ? explore.physics.block - 1 : -1;
  const bw = Math.max(1, (W - L - 8) / g.length - 1);
  g.forEach((v, i) => {
    const r = el("rect", { x: x(i) - bw / 2, y: Math.min(y(v), y(1)), width: bw, height: Math.max(1, Math.abs(y(v) - y(1))),
      fill: i === current ? "#e4572e" : (v > 1 + 1e-9 ? "#f2a541" : "#4c78a8"), "data-block": i + 1 });
    r.append(el("title", {}, `block ${i + 1}: max|G| ${v}`));
    svg.append(r);
  });
  const cs = explore.compare.on && explore.compare.summary && explore.compare.summary.stability;
  if (cs && cs.layer_max && cs.layer_max.length === g.length) {  // the counterpart's max|G| per block, as dots
    cs.layer_max.forEach((v, i) => svg.append(el("circle", { cx: x(i), cy: y(Math.min(hi, Math.max(lo, v))), r: 2.5, fill: "#2ca02c", "data-compare-block": i + 1 })));
  }
  svg.append(el("text", { x: L, y: H - 6, "font-size": 10 }, `block 1 … ${g.length}   (orange: amplifying, red: under the slider${cs ? ", green dots: " + explore.compare.name : ""})`));
  const product = st.product;
  const cur = current >= 0 ? ` · block ${current + 1}: max|G| ${fmt(g[current], 8)}, product over blocks 1..${current + 1} = 10^${fmt(st.log10_cumulative[current], 4)}` : "";
  info.textContent = `product over the stack Π max|G| = ${fmt(product, 6)} (log10 ${fmt(st.log10_bound, 4)}); relative to the mean mode: log10 ${fmt(st.log10_relative_bound, 4)}${cur}. Source: ${st.source || ""}${st.note ? " — " + st.note : ""}`;
}

// ----------------------------------------------------------------- drawing

const drawing = { grid: new Float32Array(784), down: false, last: null };

function stamp(x, y) { // a soft round brush on the 28x28 grid, in canvas pixels / 8
  for (let i = Math.floor(y - 2); i <= Math.ceil(y + 2); i++) {
    for (let j = Math.floor(x - 2); j <= Math.ceil(x + 2); j++) {
      if (i < 0 || j < 0 || i >= 28 || j >= 28) continue;
      const d2 = (i + 0.5 - y) ** 2 + (j + 0.5 - x) ** 2;
      const v = Math.max(0, 1 - d2 / 2.6);
      drawing.grid[i * 28 + j] = Math.min(1, Math.max(drawing.grid[i * 28 + j], v));
    }
  }
}

function drawStroke(event) {
  const canvas = $("draw-canvas");
  const r = canvas.getBoundingClientRect();
  const x = (event.clientX - r.left) * 28 / r.width, y = (event.clientY - r.top) * 28 / r.height;
  const last = drawing.last || { x, y };
  const n = Math.max(1, Math.ceil(Math.hypot(x - last.x, y - last.y) * 3));
  for (let k = 1; k <= n; k++) stamp(last.x + (x - last.x) * k / n, last.y + (y - last.y) * k / n);
  drawing.last = { x, y };
  drawArray(canvas, drawing.grid, 28, 28, { lo: 0, hi: 1 });
}

function setupDrawing() {
  const canvas = $("draw-canvas");
  drawArray(canvas, drawing.grid, 28, 28, { lo: 0, hi: 1 });
  canvas.addEventListener("pointerdown", (e) => { drawing.down = true; drawing.last = null; canvas.setPointerCapture(e.pointerId); drawStroke(e); });
  canvas.addEventListener("pointermove", (e) => { if (drawing.down) drawStroke(e); });
  const end = () => {
    if (!drawing.down) return;
    drawing.down = false;
    useDrawing();
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("clear-drawing").addEventListener("click", () => {
    drawing.grid.fill(0);
    drawArray(canvas, drawing.grid, 28, 28, { lo: 0, hi: 1 });
  });
}

function useDrawing() {
  explore.input = { pixels: Array.from(drawing.grid) };
  runForward();
}

// ----------------------------------------------------------------- wiring

function setTab(draw) {
  $("tab-test").classList.toggle("active", !draw);
  $("tab-draw").classList.toggle("active", draw);
  $("test-input").hidden = draw;
  $("draw-input").hidden = !draw;
  if (draw) {
    if (drawing.grid.some((v) => v > 0)) useDrawing();
  } else {
    explore.input = { index: parseInt($("image-index").value || "0", 10) };
    runForward();
  }
}

function setIndex(i) {
  i = Math.min(9999, Math.max(0, i | 0));
  $("image-index").value = i;
  explore.input = { index: i };
  runForward();
}

window.addEventListener("DOMContentLoaded", () => {
  $("model").addEventListener("change", (e) => selectModel(e.target.value));
  $("depth-slider").addEventListener("input", (e) => showState(parseInt(e.target.value, 10)));
  $("image-index").addEventListener("change", (e) => setIndex(parseInt(e.target.value, 10)));
  $("prev-image").addEventListener("click", () => setIndex(parseInt($("image-index").value, 10) - 1));
  $("next-image").addEventListener("click", () => setIndex(parseInt($("image-index").value, 10) + 1));
  $("channel").addEventListener("change", () => runForward());
  $("grid-toggle").addEventListener("change", () => runForward());
  $("compare-toggle").addEventListener("change", () => selectModel(explore.model));
  $("tab-test").addEventListener("click", () => setTab(false));
  $("tab-draw").addEventListener("click", () => setTab(true));
  setupDrawing();
  loadModels().catch((err) => setStatus(err.message, true));
});
