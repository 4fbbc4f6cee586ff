// The query page: ADQL through the TAP service's /tap/sync, results as a paged table.
"use strict";
(function () {
  const PAGE = 50;
  const form = document.getElementById("query-form");
  const tap = form.dataset.tap;
  const asOfParam = form.dataset.asOfParam || "ASOF";
  const adql = document.getElementById("adql");
  const maxrec = document.getElementById("maxrec");
  const asOf = document.getElementById("as-of");
  const state = { fields: [], rows: [], page: 0, params: null };

  function tapParams(format, pinned) {
    const p = new URLSearchParams({ REQUEST: "doQuery", LANG: "ADQL", QUERY: adql.value,
                                    MAXREC: maxrec.value || "1000", RESPONSEFORMAT: format });
    if (pinned !== null) p.set(asOfParam, String(pinned));
    return p;
  }

  // The instant the query is evaluated at: the as-of field, or now, pinned as MJD TAI so that
  // the permalink and the downloads give the same rows later (DPDD 2.5).
  async function pin() {
    const t = asOf.value.trim() || "now";
    const r = await fetch("/api/instant?t=" + encodeURIComponent(t));
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || ("as of: HTTP " + r.status));
    return body;
  }

  function parseVOTable(text) {
    const doc = new DOMParser().parseFromString(text, "application/xml");
    const infos = Array.from(doc.getElementsByTagNameNS("*", "INFO"));
    const status = infos.find((i) => i.getAttribute("name") === "QUERY_STATUS");
    const fields = Array.from(doc.getElementsByTagNameNS("*", "FIELD")).map((f) => {
      const d = f.getElementsByTagNameNS("*", "DESCRIPTION")[0];
      return { name: f.getAttribute("name"), unit: f.getAttribute("unit") || "", ucd: f.getAttribute("ucd") || "",
               datatype: f.getAttribute("datatype") || "", description: d ? d.textContent.trim() : "" };
    });
    const rows = Array.from(doc.getElementsByTagNameNS("*", "TR")).map((tr) =>
      Array.from(tr.getElementsByTagNameNS("*", "TD")).map((td) => td.textContent));
    return { status: status ? status.getAttribute("value") : "", message: status ? status.textContent.trim() : "",
             infos: infos.map((i) => [i.getAttribute("name"), i.getAttribute("value")]), fields, rows };
  }

  function showError(status, message) {
    document.getElementById("result").hidden = true;
    const box = document.getElementById("query-error");
    box.hidden = false;
    document.getElementById("error-status").textContent = status ? "HTTP " + status : "";
    document.getElementById("query-error-message").textContent = message;
    // ADQL errors name a position ("line 1, column 8" or "at 1:8"): point at it under the editor
    const m = /line\s+(\d+)\D+(?:column|col\.?)\s+(\d+)/i.exec(message) || /\bat\s+(\d+):(\d+)/.exec(message);
    const marker = document.getElementById("error-marker");
    if (m) {
      const line = adql.value.split("\n")[Number(m[1]) - 1] || "";
      marker.textContent = line + "\n" + " ".repeat(Math.max(Number(m[2]) - 1, 0)) + "^ " + message;
      marker.hidden = false;
    } else {
      marker.hidden = true;
    }
  }

  function isObjectId(name, value) {
    return /^(diaobjectid|ssobjectid|objectid|parentobjectid|nearbyobj\d)$/i.test(name) && /^[1-9]\d{17,18}$/.test(value);
  }

  function render() {
    const pages = Math.max(1, Math.ceil(state.rows.length / PAGE));
    state.page = Math.min(Math.max(state.page, 0), pages - 1);
    const shown = state.rows.slice(state.page * PAGE, (state.page + 1) * PAGE);
    fillTable(document.getElementById("results"), state.fields, shown, (td, v, field) => {
      if (isObjectId(field ? field.name : "", v)) {
        const a = document.createElement("a");
        a.href = "/object/" + v;
        a.textContent = v;
        td.appendChild(a);
      } else {
        td.textContent = v === "" ? "NULL" : v;
        if (v === "") td.className = "null";
      }
    });
    document.getElementById("page-info").textContent =
      "page " + (state.page + 1) + " of " + pages + " (rows " + (state.rows.length ? state.page * PAGE + 1 : 0) +
      "–" + Math.min((state.page + 1) * PAGE, state.rows.length) + " of " + state.rows.length + ")";
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page >= pages - 1;
  }

  async function run(ev) {
    if (ev) ev.preventDefault();
    const button = document.getElementById("run");
    button.disabled = true;
    document.getElementById("status").textContent = "running…";
    try {
      let instant;
      try {
        instant = await pin();
      } catch (e) {
        showError(400, e.message);
        return;
      }
      const params = tapParams("votable/td", instant.mjd_tai);
      const r = await fetch(tap + "/sync", { method: "POST", body: params });
      const text = await r.text();
      let parsed;
      try {
        parsed = parseVOTable(text);
      } catch (e) {
        parsed = { status: "ERROR", message: text.slice(0, 500) };
      }
      if (!r.ok || parsed.status === "ERROR") {
        const busy = r.status === 503 ? " (the service is busy: try again in a few seconds)" : "";
        showError(r.status, (parsed.message || text.slice(0, 500) || "HTTP " + r.status) + busy);
        return;
      }
      document.getElementById("query-error").hidden = true;
      document.getElementById("error-marker").hidden = true;
      state.fields = parsed.fields;
      state.rows = parsed.rows;
      state.page = 0;
      const overflow = parsed.status === "OVERFLOW" ? " — more rows exist (MAXREC " + maxrec.value + " reached)" : "";
      document.getElementById("status").textContent = parsed.rows.length + " rows" + overflow;
      document.getElementById("status").dataset.rows = String(parsed.rows.length);
      document.getElementById("instant").textContent =
        "Evaluated as of " + instant.iso + " UTC (MJD " + instant.mjd_tai + " TAI): the permalink and the downloads give these rows at any later time.";
      for (const [id, fmt] of [["dl-votable", "votable"], ["dl-csv", "csv"], ["dl-parquet", "parquet"]]) {
        const a = document.getElementById(id);
        a.href = tap + "/sync?" + tapParams(fmt, instant.mjd_tai).toString();
        a.setAttribute("download", "result." + (fmt === "votable" ? "xml" : fmt));
      }
      state.params = tapParams("votable", instant.mjd_tai);
      document.getElementById("citation-box").hidden = true;
      const link = "/query?" + new URLSearchParams({ q: adql.value, as_of: String(instant.mjd_tai),
                                                     maxrec: maxrec.value, run: "1" }).toString();
      document.getElementById("permalink").href = link;
      history.replaceState(null, "", link);
      asOf.value = String(instant.mjd_tai);
      document.getElementById("result").hidden = false;
      render();
    } catch (e) {
      showError(0, String(e));
    } finally {
      button.disabled = false;
      if (document.getElementById("status").textContent === "running…") document.getElementById("status").textContent = "";
    }
  }

  // Cite exactly what is shown: the same ADQL, MAXREC and pinned instant as the result above.
  document.getElementById("cite").addEventListener("click", async () => {
    if (!state.params) return;
    const button = document.getElementById("cite");
    button.disabled = true;
    try {
      await citeQuery(state.params, document.getElementById("citation-box"));
    } finally {
      button.disabled = false;
    }
  });

  form.addEventListener("submit", run);
  adql.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(e); });
  document.getElementById("prev").addEventListener("click", () => { state.page -= 1; render(); });
  document.getElementById("next").addEventListener("click", () => { state.page += 1; render(); });
  const examples = document.getElementById("examples");
  examples.addEventListener("change", () => { if (examples.value) adql.value = examples.value; });

  // The service's DALI examples (/tap/examples: XHTML with RDFa), replacing the built-in ones.
  fetch(tap + "/examples").then((r) => (r.ok ? r.text() : Promise.reject(r.status))).then((text) => {
    const doc = new DOMParser().parseFromString(text, "text/html");
    const found = Array.from(doc.querySelectorAll("[typeof='example']")).map((el) => {
      const q = el.querySelector("[property='query']");
      const n = el.querySelector("[property='name']") || el.querySelector("h2, h3") || el;
      return q ? [n.textContent.trim(), q.textContent.trim()] : null;
    }).filter(Boolean);
    if (!found.length) return;
    examples.innerHTML = '<option value="">(choose an example)</option>';
    for (const [name, q] of found) {
      const o = document.createElement("option");
      o.value = q;
      o.textContent = name;
      examples.appendChild(o);
    }
    examples.dataset.source = "tap";
  }).catch(() => {});

  if (form.dataset.run === "true") run();
})();
