"""The watch page: one hand-written HTML page whose script draws a run's curves on canvas, no library, no CDN.

Served (:mod:`gradlens.watch.server`), the script asks ``data?since=STEP`` every ``every`` seconds (STEP: one
before the newest step it holds, which may have been partial) and appends the new points only; as a file
(:mod:`gradlens.watch.files`), the same page carries its data inline and the browser reloads it. What it
holds is ``window.gradlens``: ``scalars`` (name -> points), ``globalNorm``,
``layers`` (per-layer ‖g‖ blocks), ``state`` (the last answer's status, step, flush), ``headline``,
``doctor``, ``live`` (see :mod:`gradlens.watch.verdict`) and ``updates`` (answers taken in). Points are
``first``/``last`` steps, ``count``, ``mean``, ``min``, ``max`` per block of records; past ``MAX_POINTS``
points (``MAX_COLUMNS`` for the heat strip) a series merges neighbours in pairs (count-weighted mean, min of
mins, max of maxes), so the page costs the same at any run length.
"""

from __future__ import annotations

import html
import json

MAX_POINTS = 4000  # points a curve keeps
MAX_COLUMNS = 1000  # columns the heat strip keeps (× parameters cells)

STYLE = """body{font-family:sans-serif;max-width:1240px;margin:1em auto;color:#222;font-size:14px}
#verdict{padding:0.6em 1em;border:1px solid #999;border-radius:4px;font-size:16px}
#verdict.severe{background:#fdd;border-color:#b00} #verdict.warning{background:#fed;border-color:#a60}
#verdict.running,#verdict.unknown{background:#eef} #verdict.healthy{background:#efe;border-color:#383}
.severe{color:#b00;font-weight:bold} .warning{color:#a60;font-weight:bold} .info{color:#467}
.caption{color:#444;font-size:13px} canvas{border:1px solid #ddd;display:block;margin:0.3em 0}
h2{font-size:17px;margin:1em 0 0.2em} li{margin:0.15em 0} #state{color:#444;margin:0.4em 0}"""

SCRIPT = r"""
const EMBEDDED = __DATA__, EVERY_MS = __EVERY_MS__, MAX_POINTS = __MAX_POINTS__, MAX_COLUMNS = __MAX_COLUMNS__;
const G = window.gradlens = {since: null, scalars: {}, globalNorm: null, layers: null, state: null,
                             headline: null, doctor: null, live: [], updates: 0, error: null};
const num = v => typeof v === "number" ? v : Number(v);
const FIELDS = ["first", "last", "count", "mean", "min", "max"];
function extent(values) {  // [min, max] of the finite values (a loop: a spread of 10^5 arguments overflows)
  let lo = Infinity, hi = -Infinity;
  for (const v of values) if (isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return lo <= hi ? [lo, hi] : [0, 1];
}
function fmin(a, b) { return isNaN(a) ? b : isNaN(b) ? a : Math.min(a, b); }
function fmax(a, b) { return isNaN(a) ? b : isNaN(b) ? a : Math.max(a, b); }
function merge2(x, y, cx, cy, f) {  // two blocks' values: count-weighted mean, min of mins, max of maxes
  if (Array.isArray(x)) return x.map((v, i) => merge2(v, y[i], cx, cy, f));
  return f === "min" ? fmin(x, y) : f === "max" ? fmax(x, y) : (x * cx + y * cy) / (cx + cy);
}
function decimate(s) {
  const out = {first: [], last: [], count: [], mean: [], min: [], max: []};
  for (let i = 0; i < s.first.length; i += 2) {
    if (i + 1 === s.first.length) { FIELDS.forEach(f => out[f].push(s[f][i])); break; }
    const cx = s.count[i], cy = s.count[i + 1];
    out.first.push(s.first[i]); out.last.push(s.last[i + 1]); out.count.push(cx + cy);
    for (const f of ["mean", "min", "max"]) out[f].push(merge2(s[f][i], s[f][i + 1], cx, cy, f));
  }
  return Object.assign(s, out);
}
function append(store, blocks, cap) {  // new points only: anything at or before the store's last step is dropped
  if (!blocks) return store;
  store = store || {first: [], last: [], count: [], mean: [], min: [], max: []};
  const end = store.last.length ? store.last[store.last.length - 1] : -Infinity;
  const fix = v => Array.isArray(v) ? v.map(num) : num(v);
  for (let i = 0; i < blocks.first.length; i++) {
    if (blocks.first[i] <= end) continue;
    store.first.push(blocks.first[i]); store.last.push(blocks.last[i]); store.count.push(blocks.count[i]);
    const mean = fix(blocks.mean[i]);
    store.mean.push(mean);
    for (const f of ["min", "max"]) store[f].push(blocks[f] ? fix(blocks[f][i]) : mean);
  }
  for (const k of ["probe", "names"]) if (blocks[k] !== undefined) store[k] = blocks[k];
  while (store.first.length > cap) decimate(store);
  return store;
}
function ingest(d) {
  if (d.status === "waiting") { G.state = d; render(); return; }
  for (const [name, blocks] of Object.entries(d.scalars)) G.scalars[name] = append(G.scalars[name], blocks, MAX_POINTS);
  G.globalNorm = append(G.globalNorm, d.global_norm, MAX_POINTS);
  G.layers = append(G.layers, d.layers, MAX_COLUMNS);
  if (d.step !== null && d.step !== undefined) G.since = G.since === null ? d.step : Math.max(G.since, d.step);
  G.state = d; G.headline = d.headline; G.doctor = d.doctor; G.live = d.live || []; G.updates += 1;
  render();
}
function esc(t) { const e = document.createElement("span"); e.textContent = String(t); return e.innerHTML; }
function fmt(v) { return !isFinite(v) ? String(v) : (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3))
  ? v.toExponential(2) : String(+v.toPrecision(4)); }
function axes(ctx, w, h, m, x0, x1, y0, y1, log, ylabel) {
  ctx.strokeStyle = "#888"; ctx.fillStyle = "#333"; ctx.font = "12px sans-serif";
  ctx.strokeRect(m.l, m.t, w - m.l - m.r, h - m.t - m.b);
  for (let k = 0; k <= 4; k++) {
    const y = m.t + (h - m.t - m.b) * (1 - k / 4), v = y0 + (y1 - y0) * k / 4;
    ctx.fillText(log ? "1e" + v.toFixed(1) : fmt(v), 2, y + 4);
    const x = m.l + (w - m.l - m.r) * k / 4;
    ctx.fillText(String(Math.round(x0 + (x1 - x0) * k / 4)), x - 16, h - m.b + 14);
  }
  ctx.fillText("optimizer step", w / 2 - 40, h - 3);
  ctx.save(); ctx.translate(12, m.t + 4); ctx.fillText(ylabel, 50, -2); ctx.restore();
}
function curve(id, s, log, ylabel) {
  const c = document.getElementById(id); if (!c || !s || !s.first.length) return;
  const ctx = c.getContext("2d"), w = c.width, h = c.height, m = {l: 70, r: 40, t: 18, b: 34};
  ctx.clearRect(0, 0, w, h);
  const tf = v => log ? (v > 0 ? Math.log10(v) : NaN) : v;
  const xs = s.first.map((f, i) => (f + s.last[i]) / 2);
  let [y0, y1] = extent([...s.min, ...s.max, ...s.mean].map(tf));
  const x0 = s.first[0], x1 = Math.max(x0 + 1, s.last[s.last.length - 1]);
  if (y1 - y0 < 1e-12) { y0 -= 0.5; y1 += 0.5; }
  const X = x => m.l + (x - x0) / (x1 - x0) * (w - m.l - m.r);
  const Y = y => m.t + (1 - (y - y0) / (y1 - y0)) * (h - m.t - m.b);
  if (s.count.some(n => n > 1)) {  // min-max band of the blocks
    ctx.fillStyle = "rgba(70,110,200,0.2)";
    s.first.forEach((f, i) => {
      const a = tf(s.min[i]), b = tf(s.max[i]);
      if (isFinite(a) && isFinite(b)) {
        ctx.fillRect(X(f), Y(b), Math.max(1, X(s.last[i]) - X(f)), Math.max(1, Y(a) - Y(b)));
      }
    });
  }
  ctx.strokeStyle = "#1f4fa8"; ctx.lineWidth = 1.5; ctx.beginPath(); let pen = false;
  xs.forEach((x, i) => {
    const y = tf(s.mean[i]);
    if (!isFinite(y)) { pen = false; ctx.fillStyle = "#c00"; ctx.fillRect(X(x) - 1, m.t, 2, 6); return; }
    if (pen) ctx.lineTo(X(x), Y(y)); else ctx.moveTo(X(x), Y(y));
    pen = true;
  });
  ctx.stroke(); axes(ctx, w, h, m, x0, x1, y0, y1, log, ylabel);
}
function colour(t) {  // t in [0, 1]: dark blue -> green -> yellow (viridis-like)
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const u = Math.min(1, Math.max(0, t)) * (stops.length - 1), k = Math.min(stops.length - 2, Math.floor(u)), f = u - k;
  return "rgb(" + stops[k].map((a, j) => Math.round(a + (stops[k + 1][j] - a) * f)).join(",") + ")";
}
function cell(v, lo, span) {  // grey: NaN (no gradient or non-finite), blue: exactly 0, red: infinite
  return isNaN(v) ? "#999" : v === 0 ? "#36c" : !isFinite(v) ? "#c00" : colour((Math.log10(v) - lo) / span);
}
function strip(id, s) {
  const c = document.getElementById(id); if (!c || !s || !s.first.length) return;
  const L = s.mean[0].length, row = Math.max(2, Math.min(10, Math.floor(360 / L)));
  const m = {l: 70, r: 40, t: 6, b: 34}; c.height = L * row + m.t + m.b;
  const ctx = c.getContext("2d"), w = c.width, h = c.height; ctx.clearRect(0, 0, w, h);
  const [lo, hi] = extent(s.mean.flat().map(v => v > 0 ? Math.log10(v) : NaN)), span = Math.max(hi - lo, 1e-9);
  const x0 = s.first[0], x1 = Math.max(x0 + 1, s.last[s.last.length - 1] + 1);
  const X = x => m.l + (x - x0) / (x1 - x0) * (w - m.l - m.r);
  s.mean.forEach((col, i) => {
    const xa = X(s.first[i]), xb = Math.max(xa + 1, X(s.last[i] + 1));
    col.forEach((v, j) => { ctx.fillStyle = cell(v, lo, span); ctx.fillRect(xa, m.t + j * row, xb - xa, row); });
  });
  ctx.fillStyle = "#333"; ctx.font = "12px sans-serif";
  ctx.fillText("first", 2, m.t + 10); ctx.fillText("last", 2, h - m.b);
  for (let k = 0; k <= 4; k++) {
    ctx.fillText(String(Math.round(x0 + (x1 - x0) * k / 4)), m.l + (w - m.l - m.r) * k / 4 - 16, h - m.b + 14);
  }
  ctx.fillText("optimizer step", w / 2 - 40, h - 3);
  const ends = s.names ? s.names[0] + " on top, " + s.names[L - 1] + " at the bottom" : "";
  document.getElementById(id + "-legend").textContent = "colour: log10 of the mean ‖g‖ per block, from 1e" +
    lo.toFixed(2) + " (dark) to 1e" + hi.toFixed(2) + " (yellow); grey: NaN (no gradient, or a non-finite one); " +
    "blue: exactly 0; red: infinite. Rows: the " + L + " parameters of probe '" + s.probe + "' in recording order, " +
    ends + ".";
}
function item(f, note) {  // one finding as a list item: severity, title, onset, layers, first fix
  const where = (f.step !== null ? " — from step " + f.step : "") +
    (f.layers.length ? ", in " + esc(f.layers.slice(0, 3).join(", ")) : "");
  const fix = f.fixes && f.fixes.length ? "<br><span class='caption'>fix: " + esc(f.fixes[0].action) + "</span>" : "";
  return "<li><span class='" + f.severity + "'>" + f.severity.toUpperCase() + "</span> " + note + esc(f.title) +
    where + fix + "</li>";
}
function render() {
  const v = document.getElementById("verdict"), st = G.state;
  if (!st) return;
  if (st.status === "waiting") { v.className = "unknown"; v.textContent = st.message; return; }
  v.className = G.headline.level; v.textContent = G.headline.text;
  const when = st.last_flush ? new Date(st.last_flush * 1000).toISOString().slice(11, 19) + " UTC" : "none yet";
  const how = EMBEDDED ? "this file is rewritten and reloads every " + EVERY_MS / 1000 + " s"
    : "new points every " + EVERY_MS / 1000 + " s (" + G.updates + " updates)";
  document.getElementById("state").textContent = st.path + " — status " + st.status + ", last step " + st.step +
    ", last flush " + when + "; " + how;
  document.getElementById("describe").textContent = st.describe;
  const items = ((G.doctor && G.doctor.findings) || []).map(f => item(f, ""));
  for (const f of G.live) items.push(item(f, "(live doctor, found after step " + f.found_at + ") "));
  for (const n of (G.doctor && G.doctor.not_checked) || []) {
    items.push("<li class='info'>not checked: " + esc(n.what) + "</li>");
  }
  document.getElementById("findings").innerHTML = items.join("");
  const doc = !G.doctor ? "the post-hoc doctor has not finished reading the run yet"
    : G.doctor.error ? "the doctor failed: " + G.doctor.error
    : "post-hoc doctor on the records up to step " + G.doctor.step + " (took " + G.doctor.seconds + " s)";
  document.getElementById("doctor-note").textContent = doc +
    "; live findings: the events of kind 'finding' written while training (attach(live=N)).";
  const box = document.getElementById("scalars");
  for (const name of Object.keys(G.scalars)) {
    const id = "scalar-" + name.replace(/[^A-Za-z0-9_-]/g, "_");
    if (!document.getElementById(id)) {
      box.insertAdjacentHTML("beforeend", "<h2>" + esc(name) + " (logged scalar, linear scale)</h2>" +
        "<div class='caption'>mean per block of records (every record while they fit " + MAX_POINTS +
        " points), band: min–max of the block</div><canvas id='" + id + "' width='1200' height='220'></canvas>");
    }
    curve(id, G.scalars[name], false, name);
  }
  curve("global-norm", G.globalNorm, true, "‖g‖ (log scale)");
  strip("layers", G.layers);
  document.getElementById("no-grad").style.display = G.layers ? "none" : "block";
}
async function poll() {
  try {
    // the newest step may have been partial (records of one step land in one or two flushes): ask for it again
    const r = await fetch("data" + (G.since === null ? "" : "?since=" + (G.since - 1)), {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status + ": " + (await r.text()));
    ingest(await r.json()); G.error = null;
  } catch (e) {
    G.error = String(e);
    document.getElementById("state").textContent = "the watch server does not answer (" + G.error + "); trying again";
  }
  setTimeout(poll, EVERY_MS);
}
if (EMBEDDED) ingest(EMBEDDED); else poll();
"""

BODY = """<h1 style="font-size:20px">gradlens watch: __TITLE__</h1>
<div id="verdict" class="unknown">loading the run…</div>
<div id="state"></div><div id="describe" class="caption"></div>
<ul id="findings"></ul><div id="doctor-note" class="caption"></div>
<div id="scalars"></div>
<h2>global gradient norm √(Σ_ℓ ‖g_ℓ‖²) (log scale)</h2>
<div class="caption">from the first GradStats probe's per-parameter norms: every record, or the record ending each
block of records on long runs; parameters without a gradient add 0; a red tick marks a NaN or infinite norm</div>
<canvas id="global-norm" width="1200" height="220"></canvas>
<h2>per-parameter gradient norm ‖g_ℓ‖ (heat strip, log colour scale)</h2>
<div id="no-grad" class="caption">no GradStats probe in this run: no gradient norms to draw</div>
<canvas id="layers" width="1200" height="100"></canvas><div id="layers-legend" class="caption"></div>"""


def page_html(title: str, every: float, data: dict | None = None) -> str:
    """The page. ``data`` None: it polls ``data?since=`` every ``every`` seconds; else it draws ``data`` (a
    snapshot with ``headline``, ``doctor``, ``live``) and reloads itself every ``every`` seconds."""
    embedded = "null" if data is None else json.dumps(data, allow_nan=False).replace("</", "<\\/")
    script = (SCRIPT.replace("__DATA__", embedded).replace("__EVERY_MS__", str(int(round(every * 1000))))
              .replace("__MAX_POINTS__", str(MAX_POINTS)).replace("__MAX_COLUMNS__", str(MAX_COLUMNS)))
    refresh = "" if data is None else f"<meta http-equiv='refresh' content='{every:g}'>"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'>{refresh}<title>gradlens watch: {html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>{BODY.replace('__TITLE__', html.escape(title))}"
            f"<script>{script}</script></body></html>")
