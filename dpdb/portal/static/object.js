// The object page: light curve, version history and the time slider (the object as of any instant).
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("object-data").textContent);
  const histEl = document.getElementById("history-data");
  const history = histEl ? JSON.parse(histEl.textContent) : null;
  const lc = document.getElementById("lightcurve");
  const view = { hidden: new Set(), zoom: null };

  function show(d) {
    drawLightCurve(lc, d.lightcurve, view);
    document.getElementById("lightcurve-note").textContent = d.lightcurve.points.length
      ? d.lightcurve.points.length + " points: filled " + d.lightcurve.detection_table + " detections" +
        (d.lightcurve.forced_table ? ", open " + d.lightcurve.forced_table + " forced measurements" : "") +
        "; click a legend entry to hide it, drag across the plot to zoom in on time, double-click to zoom out"
      : d.lightcurve.note;
    document.getElementById("object-state").textContent = d.state;
    if (history) drawHistory(document.getElementById("history-plot"), history, d.as_of);
    for (const tr of document.querySelectorAll("#versions tbody tr")) {
      tr.classList.toggle("on", Number(tr.dataset.version) === d.version_index);
    }
    for (const tr of document.querySelectorAll("#object-row tbody tr")) {
      const td = tr.querySelector(".value");
      const v = d.values ? d.values[tr.dataset.col] : undefined;
      const text = v === undefined ? "—" : v === null ? "NULL" : typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(7)).toString() : String(v);
      const changed = td.dataset.value !== (v === null || v === undefined ? "" : String(v));
      td.dataset.value = v === null || v === undefined ? "" : String(v);
      if (!td.querySelector("a")) td.textContent = text;
      td.classList.toggle("changed", changed);
    }
  }
  show(data);

  const filter = document.getElementById("column-filter");
  filter.addEventListener("input", () => {
    const f = filter.value.toLowerCase();
    for (const tr of document.querySelectorAll("#object-row tbody tr")) {
      tr.hidden = f && !tr.dataset.col.toLowerCase().includes(f);
    }
  });

  // Cite the light curve as shown: its ADQL through the TAP service, as of the page's instant.
  document.getElementById("cite").addEventListener("click", async (ev) => {
    const button = ev.currentTarget;
    const asOf = document.body.dataset.asOf !== undefined ? document.body.dataset.asOf
      : (data.as_of === null ? "" : String(data.as_of));
    const params = { REQUEST: "doQuery", LANG: "ADQL", QUERY: button.dataset.adql, MAXREC: "100000",
                     RESPONSEFORMAT: "votable" };
    if (asOf) params.ASOF = asOf;
    button.disabled = true;
    try {
      await citeQuery(params, document.getElementById("citation-box"));
    } finally {
      button.disabled = false;
    }
  });

  const slider = document.getElementById("as-of-slider");
  if (!slider) return;
  const label = document.getElementById("as-of-label");
  let pending = 0;
  async function load(asOf) {
    const ticket = ++pending;
    const url = "/api/object/" + data.id + (asOf === null ? "" : "?as_of=" + asOf);
    const r = await fetch(url);
    const d = await r.json();
    if (ticket !== pending) return; // a later move won
    if (!r.ok) { document.getElementById("object-state").textContent = d.error; return; }
    label.textContent = d.as_of === null ? "now" : d.as_of_iso + " UTC (MJD " + d.as_of + " TAI)";
    show(d);
    document.body.dataset.asOf = d.as_of === null ? "" : String(d.as_of);
    history_replace(d.as_of);
  }
  function history_replace(asOf) {
    const u = new URL(window.location.href);
    if (asOf === null) u.searchParams.delete("as_of"); else u.searchParams.set("as_of", String(asOf));
    window.history.replaceState(null, "", u.toString());
  }
  let timer = null;
  slider.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => load(Number(slider.value)), 120);
  });
  slider.addEventListener("change", () => { clearTimeout(timer); load(Number(slider.value)); });
  document.getElementById("as-of-now").addEventListener("click", () => { slider.value = slider.max; load(null); });
})();
