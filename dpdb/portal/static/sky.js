// The sky page: a HEALPix density map drawn from /api/sky; a click on a pixel runs a cone search
// over it on the query page (through the TAP service).
"use strict";
(function () {
  const el = document.getElementById("skymap");
  const params = new URLSearchParams({ release: el.dataset.release, table: el.dataset.table });
  // viridis, sampled
  const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
  const colour = (f) => VIRIDIS[Math.min(VIRIDIS.length - 1, Math.max(0, Math.floor(f * VIRIDIS.length)))];

  function coneQuery(sky, p) {
    const r = p.radius.toFixed(6), ra = p.ra.toFixed(6), dec = p.dec.toFixed(6);
    const [pos, cols] = sky.table === "Object"
      ? ["coord_ra, coord_dec", "objectId, coord_ra, coord_dec, refExtendedness, r_psfFlux, r_psfFluxErr"]
      : ["ra, dec", "diaObjectId, ra, dec, nDiaSources, r_psfFluxMean"];
    const where = sky.table === "DiaObject" && sky.catalog === "prompt" ? "validityEndMjdTai IS NULL AND " : "";
    return "SELECT TOP 1000 " + cols + "\nFROM " + sky.release + "." + sky.table + "\nWHERE " + where +
      "1 = CONTAINS(POINT('ICRS', " + pos + "), CIRCLE('ICRS', " + ra + ", " + dec + ", " + r + "))";
  }

  fetch("/api/sky?" + params).then(async (r) => {
    const sky = await r.json();
    if (!r.ok) { el.textContent = sky.error; el.classList.add("error"); return; }
    const xs = sky.pixels.flatMap((p) => p.outline.map((c) => c[0]));
    const ys = sky.pixels.flatMap((p) => p.outline.map((c) => c[1]));
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const cosd = Math.max(Math.cos(((y0 + y1) / 2) * Math.PI / 180), 0.05);
    const pad = 50, BAR = 110, maxW = Math.min(el.clientWidth || 900, 1000) - BAR, maxH = 640;
    const scale = Math.min((maxW - 2 * pad) / ((x1 - x0) * cosd || 1), (maxH - 2 * pad) / ((y1 - y0) || 1));
    const W = (x1 - x0) * cosd * scale + 2 * pad + BAR, H = Math.max(200, (y1 - y0) * scale + 2 * pad);
    const sx = (ra) => pad + (x1 - ra) * cosd * scale; // east to the left
    const sy = (dec) => H - pad - (dec - y0) * scale;
    const svg = svgEl("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, class: "sky" }, el);
    // colour bar: objects per deg²
    const bx = W - BAR + 20, bh = H - 2 * pad;
    VIRIDIS.forEach((c, i) => svgEl("rect", { x: bx, y: pad + bh - (i + 1) * bh / VIRIDIS.length, width: 16,
                                              height: bh / VIRIDIS.length + 0.5, fill: c }, svg));
    for (const t of ticks(0, sky.max_density, 5)) {
      if (t > sky.max_density) continue;
      svgEl("text", { x: bx + 22, y: pad + bh - (t / sky.max_density) * bh + 4 }, svg).textContent = String(t);
    }
    svgEl("text", { x: bx, y: pad - 10, class: "label" }, svg).textContent = "per deg²";
    const grid = svgEl("g", { class: "axes" }, svg);
    for (const t of ticks(x0, x1, 6)) {
      svgEl("line", { x1: sx(t), x2: sx(t), y1: pad, y2: H - pad, class: "grid" }, grid);
      svgEl("text", { x: sx(t), y: H - pad + 16, "text-anchor": "middle" }, grid).textContent = ((t % 360) + 360) % 360;
    }
    for (const t of ticks(y0, y1, 5)) {
      svgEl("line", { x1: pad, x2: W - BAR - pad, y1: sy(t), y2: sy(t), class: "grid" }, grid);
      svgEl("text", { x: pad - 6, y: sy(t) + 4, "text-anchor": "end" }, grid).textContent = t;
    }
    svgEl("text", { x: (W - BAR) / 2, y: H - 8, "text-anchor": "middle", class: "label" }, grid).textContent = "RA (deg)";
    svgEl("text", { x: 12, y: H / 2, class: "label", transform: "rotate(-90 12 " + H / 2 + ")", "text-anchor": "middle" }, grid).textContent = "Dec (deg)";
    const g = svgEl("g", { class: "pixels" }, svg);
    for (const p of sky.pixels) {
      const poly = svgEl("polygon", {
        points: p.outline.map((c) => sx(c[0]).toFixed(1) + "," + sy(c[1]).toFixed(1)).join(" "),
        fill: colour(p.density / sky.max_density), class: "pixel", "data-pixel": p.pixel, "data-count": p.count,
      }, g);
      svgEl("title", {}, poly).textContent = "pixel " + p.pixel + " (order " + sky.order + "): " + p.count +
        " objects, " + p.density + " per deg²\nRA " + p.ra.toFixed(4) + "°, Dec " + p.dec.toFixed(4) + "°\nclick: cone search of radius " + (p.radius * 60).toFixed(2) + "′";
      poly.addEventListener("click", () => {
        window.location.href = "/query?" + new URLSearchParams({ q: coneQuery(sky, p), run: "1" });
      });
    }
    document.getElementById("sky-caption").textContent = sky.catalog + (sky.release !== sky.catalog ? " (" + sky.release + ")" : "") +
      " " + sky.table + ": " + sky.total.toLocaleString("en") + " objects in " + sky.pixels.length + " HEALPix pixels of order " +
      sky.order + " (" + sky.pixel_area.toPrecision(3) + " deg² each); colour: objects per deg², up to " + Math.round(sky.max_density) +
      ". Click a pixel to cone-search it.";
    el.dataset.pixels = String(sky.pixels.length);
  });
})();
