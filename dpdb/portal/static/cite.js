// A citation's landing page: re-run the query as of its instant through the portal and show the
// verification outcome (verified, or what differs) with the first rows.
"use strict";
(function () {
  const article = document.getElementById("citation");
  const id = article.dataset.id;
  const button = document.getElementById("rerun");
  const status = document.getElementById("verify-status");

  function table(fields, data) {
    fillTable(document.getElementById("rows"), fields, data, (td, v) => {
      td.textContent = v === null ? "NULL" : String(v);
      if (v === null) td.className = "null";
    });
  }

  async function verify() {
    button.disabled = true;
    status.textContent = "re-running the query…";
    const verdict = document.getElementById("verdict");
    const list = document.getElementById("differences");
    delete verdict.dataset.outcome;
    try {
      const r = await fetch("/api/cite/" + encodeURIComponent(id) + "/verify");
      const body = await r.json();
      document.getElementById("outcome").hidden = false;
      list.innerHTML = "";
      if (!r.ok) {
        verdict.className = "verdict differs";
        verdict.dataset.outcome = "error";
        verdict.textContent = "cannot verify (HTTP " + r.status + "): " + body.error;
        document.getElementById("row-downloads").hidden = true;
        return;
      }
      verdict.className = "verdict " + (body.verified ? "verified" : "differs");
      verdict.dataset.outcome = body.verified ? "verified" : "differs";
      verdict.dataset.rows = String(body.rows);
      verdict.dataset.sha256 = body.sha256;
      verdict.textContent = body.verified ? body.outcome : "differs: the re-run found " + body.rows + " rows, sha256 " + body.sha256;
      for (const d of body.differences) {
        const li = document.createElement("li");
        li.textContent = d;
        list.appendChild(li);
      }
      document.getElementById("row-downloads").hidden = !body.verified;
      document.getElementById("preview-note").textContent =
        "Re-run in " + body.seconds + " s" + (body.source !== "database" ? " from the " + body.source : "") +
        "; " + (body.preview_rows < body.rows ? "the first " + body.preview_rows + " of " + body.rows + " rows" : body.rows + " rows") + ":";
      table(body.fields, body.data);
    } catch (e) {
      verdict.textContent = "cannot verify: " + e;
    } finally {
      button.disabled = false;
      status.textContent = "";
    }
  }

  button.addEventListener("click", verify);
  if (article.dataset.autoVerify === "true") verify();
})();
