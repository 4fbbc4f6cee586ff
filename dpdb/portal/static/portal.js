// Shared by the portal's pages: small SVG plots (no library), drawn from the JSON the portal serves.
"use strict";
const SVGNS = "http://www.w3.org/2000/svg";
const BAND_COLOURS = { u: "#56b4e9", g: "#009e73", r: "#d55e00", i: "#cc79a7", z: "#7f7f7f", y: "#e69f00" };
const BANDS = ["u", "g", "r", "i", "z", "y"];

function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (parent) parent.appendChild(el);
  return el;
}

// "Nice" tick values covering [lo, hi].
function ticks(lo, hi, count) {
  if (!(hi > lo)) { hi = lo + 1; lo = lo - 1; }
  const raw = (hi - lo) / (count || 5);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

// Axes in an SVG of width x height; returns scale functions and the plotting group.
function axes(svg, xr, yr, opts) {
  const W = opts.width, H = opts.height, m = { l: 70, r: 16, t: 12, b: 40 };
  const sx = (x) => m.l + ((x - xr[0]) / (xr[1] - xr[0])) * (W - m.l - m.r);
  const sy = (y) => H - m.b - ((y - yr[0]) / (yr[1] - yr[0])) * (H - m.t - m.b);
  const g = svgEl("g", { class: "axes" }, svg);
  for (const t of ticks(xr[0], xr[1], 6)) {
    svgEl("line", { x1: sx(t), x2: sx(t), y1: m.t, y2: H - m.b, class: "grid" }, g);
    svgEl("text", { x: sx(t), y: H - m.b + 16, "text-anchor": "middle" }, g).textContent = String(t);
  }
  for (const t of ticks(yr[0], yr[1], 5)) {
    svgEl("line", { x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t), class: "grid" }, g);
    svgEl("text", { x: m.l - 6, y: sy(t) + 4, "text-anchor": "end" }, g).textContent = String(t);
  }
  svgEl("rect", { x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b, class: "frame" }, g);
  svgEl("text", { x: (W + m.l) / 2, y: H - 6, "text-anchor": "middle", class: "label" }, g).textContent = opts.xlabel;
  const yl = svgEl("text", { x: 14, y: (H - m.b) / 2, "text-anchor": "middle", class: "label",
                             transform: "rotate(-90 14 " + (H - m.b) / 2 + ")" }, g);
  yl.textContent = opts.ylabel;
  return { sx, sy, g: svgEl("g", { class: "data" }, svg) };
}

function range(values, pad) {
  const finite = values.filter((v) => Number.isFinite(v));
  if (!finite.length) return [0, 1];
  let lo = Math.min(...finite), hi = Math.max(...finite);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const p = (hi - lo) * (pad || 0.05);
  return [lo - p, hi + p];
}

// A light curve: psfFlux with error bars over time, per band; detections filled, forced open.
// Clicking a legend entry hides or shows a band; hovering a point shows its values; dragging across
// the plot zooms in on that time range, a double click zooms back out.
function drawLightCurve(el, curve, view) {
  view = view || {};
  view.hidden = view.hidden || new Set();
  el.innerHTML = "";
  const all = curve.points;
  const W = Math.max(el.clientWidth || 800, 400), H = 320, LEGEND = 200;
  const svg = svgEl("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, class: "lightcurve" }, el);
  if (!all.length) {
    svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, svg).textContent =
      curve.note || "no measurement visible at this instant";
    el.dataset.points = "0";
    return;
  }
  const xr = view.zoom || range(all.map((p) => p.t), 0.03);
  const pts = all.filter((p) => p.t >= xr[0] && p.t <= xr[1]);
  const yr = range((pts.length ? pts : all).flatMap((p) => [p.flux - (p.err || 0), p.flux + (p.err || 0)]), 0.06);
  const { sx, sy, g } = axes(svg, xr, yr, { width: W - LEGEND, height: H, xlabel: "time (MJD TAI)", ylabel: "psfFlux (nJy)" });
  let shown = 0;
  // forced measurements first (open, larger), detections on top (filled, smaller): both stay visible
  for (const p of pts.filter((q) => q.forced).concat(pts.filter((q) => !q.forced))) {
    if (view.hidden.has(p.band) || view.hidden.has(p.forced ? "forced" : "detection")) continue;
    const colour = BAND_COLOURS[p.band] || "#333";
    const x = sx(p.t), y = sy(p.flux);
    if (p.err) svgEl("line", { x1: x, x2: x, y1: sy(p.flux - p.err), y2: sy(p.flux + p.err), stroke: colour, class: "err" }, g);
    const c = svgEl("circle", { cx: x, cy: y, r: p.forced ? 5.5 : 3.5, stroke: colour, fill: p.forced ? "white" : colour,
                                "fill-opacity": p.forced ? 0 : 1,
                                class: "pt " + (p.forced ? "forced" : "detection"), "data-band": p.band,
                                "data-t": p.t, "data-flux": p.flux, "data-err": p.err === null ? "" : p.err }, g);
    svgEl("title", {}, c).textContent = (p.forced ? curve.forced_table + " (forced)" : curve.detection_table + " (detection)") +
      "\nband " + p.band + "\nMJD " + p.t.toFixed(5) + " TAI\npsfFlux " + p.flux.toFixed(1) +
      (p.err !== null ? " ± " + p.err.toFixed(1) : "") + " nJy";
    shown += 1;
  }
  el.dataset.points = String(shown);
  // legend: bands present, then detection / forced; click toggles
  const legend = svgEl("g", { class: "legend" }, svg);
  const present = BANDS.filter((b) => all.some((p) => p.band === b))
    .concat([...new Set(all.map((p) => p.band))].filter((b) => !BANDS.includes(b)));
  const entries = present.map((b) => [b, b + " band", BAND_COLOURS[b] || "#333", true]);
  entries.push(["detection", curve.detection_table, "#333", true]);
  if (curve.forced_table && all.some((p) => p.forced)) entries.push(["forced", curve.forced_table + " (forced)", "#333", false]);
  entries.forEach(([key, label, colour, filled], i) => {
    const row = svgEl("g", { transform: "translate(" + (W - LEGEND + 12) + "," + (24 + i * 20) + ")",
                             class: "entry" + (view.hidden.has(key) ? " off" : ""), "data-key": key }, legend);
    svgEl("circle", { cx: 6, cy: -4, r: 5, stroke: colour, fill: filled ? colour : "white" }, row);
    svgEl("text", { x: 16, y: 0 }, row).textContent = label;
    row.addEventListener("click", () => {
      if (view.hidden.has(key)) view.hidden.delete(key); else view.hidden.add(key);
      drawLightCurve(el, curve, view);
    });
  });
  if (view.zoom) {
    svgEl("text", { x: W - LEGEND + 12, y: H - 20, class: "hint" }, svg).textContent = "double-click: zoom out";
  }
  // drag to zoom on time
  const inverse = (px) => xr[0] + ((px - sx(xr[0])) / (sx(xr[1]) - sx(xr[0]))) * (xr[1] - xr[0]);
  let from = null;
  const band = svgEl("rect", { y: 12, height: H - 52, width: 0, class: "brush", visibility: "hidden" }, svg);
  const local = (ev) => ev.clientX - svg.getBoundingClientRect().left;
  svg.addEventListener("mousedown", (ev) => { from = local(ev); band.setAttribute("x", from); band.setAttribute("width", 0); band.setAttribute("visibility", "visible"); });
  svg.addEventListener("mousemove", (ev) => {
    if (from === null) return;
    const x = local(ev);
    band.setAttribute("x", Math.min(from, x));
    band.setAttribute("width", Math.abs(x - from));
  });
  svg.addEventListener("mouseup", (ev) => {
    if (from === null) return;
    const to = local(ev);
    const a = from;
    from = null;
    band.setAttribute("visibility", "hidden");
    if (Math.abs(to - a) < 6) return;
    view.zoom = [inverse(Math.min(a, to)), inverse(Math.max(a, to))];
    drawLightCurve(el, curve, view);
  });
  svg.addEventListener("dblclick", () => { view.zoom = null; drawLightCurve(el, curve, view); });
}

// A DiaObject's versions: nDiaSources (steps) and per-band mean psfFlux at each version start,
// with a vertical line at the instant shown.
function drawHistory(el, h, asOf) {
  el.innerHTML = "";
  const W = Math.max(el.clientWidth || 500, 320), H = 220;
  const svg = svgEl("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H }, el);
  const close = h.end[h.end.length - 1] !== null ? h.end[h.end.length - 1] : h.latest;
  const xr = range(h.start.concat([close]), 0.03);
  const yr = [0, Math.max(...h.n) * 1.15 + 0.5];
  const { sx, sy, g } = axes(svg, xr, yr, { width: W, height: H, xlabel: "processing time (MJD TAI)", ylabel: "nDiaSources" });
  let d = "";
  h.start.forEach((t, i) => {
    const next = i + 1 < h.start.length ? h.start[i + 1] : close;
    d += (i ? "L" : "M") + sx(t) + "," + sy(h.n[i]) + "L" + sx(next) + "," + sy(h.n[i]);
  });
  svgEl("path", { d, class: "steps" }, g);
  h.start.forEach((t, i) => {
    const c = svgEl("circle", { cx: sx(t), cy: sy(h.n[i]), r: 3, class: "version" }, g);
    svgEl("title", {}, c).textContent = "version " + (i + 1) + ": " + h.n[i] + " DiaSources from MJD " + t.toFixed(5);
  });
  if (asOf !== null && asOf !== undefined && asOf >= xr[0] && asOf <= xr[1]) {
    svgEl("line", { x1: sx(asOf), x2: sx(asOf), y1: sy(yr[0]), y2: sy(yr[1]), class: "now" }, g);
  }
}

// "Cite this query": the TAP service cites a query's result on request (CITE=true on /tap/sync, the
// identifier comes back in the X-Dpdb-Citation header and a dpdb_citation INFO). The portal itself
// writes nothing; `box` shows the identifier with a link to its landing page (/cite/ID).
async function citeQuery(params, box) {
  const p = new URLSearchParams(params);
  p.set("CITE", "true");
  box.hidden = false;
  box.className = "cite-result";
  box.textContent = "citing…";
  try {
    const r = await fetch("/tap/sync", { method: "POST", body: p });
    const text = await r.text();
    let handle = r.headers.get("X-Dpdb-Citation");
    let message = "";
    if (!handle || !r.ok) {
      const doc = new DOMParser().parseFromString(text, "application/xml");
      const infos = Array.from(doc.getElementsByTagNameNS("*", "INFO"));
      const cited = infos.find((i) => i.getAttribute("name") === "dpdb_citation");
      const status = infos.find((i) => i.getAttribute("name") === "QUERY_STATUS");
      handle = r.ok && cited ? cited.getAttribute("value") : null;
      message = status ? status.textContent.trim() : text.slice(0, 300);
    }
    if (!handle) {
      box.className = "cite-result error";
      box.textContent = "Cannot cite this query: " + (message || "the TAP service returned no citation (HTTP " + r.status + ")");
      return null;
    }
    const id = handle.slice(handle.lastIndexOf("dpdb.") + 5);
    box.textContent = "Cited as doi ";
    const a = document.createElement("a");
    a.href = "/cite/" + id;
    a.id = "citation-link";
    a.dataset.id = id;
    a.textContent = handle;
    box.appendChild(a);
    box.appendChild(document.createTextNode(" — its landing page shows the metadata and re-runs the query to verify it."));
    return id;
  } catch (e) {
    box.className = "cite-result error";
    box.textContent = "Cannot cite this query: " + e;
    return null;
  }
}

// A result table: headers with the unit shown and description, unit and UCD on hover, then the rows;
// cell(td, value, field) fills one cell (its text by default).
function fillTable(table, fields, rows, cell) {
  const thead = table.querySelector("thead");
  const tbody = table.querySelector("tbody");
  thead.innerHTML = "";
  tbody.innerHTML = "";
  const hr = document.createElement("tr");
  for (const f of fields) {
    const th = document.createElement("th");
    th.textContent = f.name;
    th.title = [f.description, f.unit ? "unit: " + f.unit : "", f.ucd ? "UCD: " + f.ucd : ""].filter(Boolean).join("\n");
    th.dataset.unit = f.unit || "";
    if (f.unit) {
      const u = document.createElement("span");
      u.className = "unit";
      u.textContent = f.unit;
      th.appendChild(u);
    }
    hr.appendChild(th);
  }
  thead.appendChild(hr);
  for (const row of rows) {
    const tr = document.createElement("tr");
    row.forEach((v, i) => {
      const td = document.createElement("td");
      if (cell) cell(td, v, fields[i]);
      else td.textContent = String(v);
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
  }
}
