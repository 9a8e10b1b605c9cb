// BlastScope page: preview, Analyze, upload, result card, history. No external scripts.
"use strict";
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
const names = window.LABEL_NAMES;

async function api(path, options = {}) {
  const headers = Object.assign({ "X-CSRF-Token": csrf }, options.headers || {});
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (response.status === 401) { window.location = "/login"; throw new Error("logged out"); }
  if (!response.ok) throw new Error((body && body.error) || `request failed (${response.status})`);
  return body;
}

function show(el, on) { el.hidden = !on; }

// A calibrated probability is never certainty: never show 0% or 100%.
function percent(p) { return p >= 0.995 ? ">99%" : p < 0.005 ? "<1%" : `${(100 * p).toFixed(0)}%`; }

function renderCard(r) {
  const card = $("card");
  show(card, true);
  const call = $("call");
  if (r.classified) {
    $("label").textContent = r.label_name;
    call.textContent = r.call === "positive" ? "Screen positive" : r.call === "negative" ? "Screen negative" : "Uncertain";
    call.className = "chip " + r.call;
    $("malignant").textContent = `Probability of B-ALL: ${percent(r.malignant_probability)}`;
  } else {
    $("label").textContent = "Field rejected";
    call.textContent = "Not classified";
    call.className = "chip rejected";
    $("malignant").textContent = "Fix the field and analyse again.";
  }
  const bars = $("bars");
  bars.replaceChildren();
  if (r.classified) {
    for (const [label, p] of Object.entries(r.probabilities)) {
      const row = document.createElement("div");
      row.className = "bar";
      row.innerHTML = `<span></span><span class="track"><span class="fill"></span></span><span></span>`;
      row.children[0].textContent = names[label] || label;
      row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
      row.children[2].textContent = percent(p);
      bars.appendChild(row);
    }
  }
  const reasons = $("reasons");
  reasons.replaceChildren(...r.reasons.map((text) => { const li = document.createElement("li"); li.textContent = text; return li; }));
  $("overlay").src = `/api/results/${r.id}/overlay`;
  const when = new Date(r.created * 1000).toLocaleString();
  const ms = Object.values(r.timings_ms).reduce((a, b) => a + b, 0);
  $("meta").textContent = `#${r.id} · ${when} · ${r.backend || "not run"} · ${ms.toFixed(0)} ms · ${r.cell_count} cells · model ${r.model_id}`;
  card.scrollIntoView({ behavior: "smooth", block: "start" });
}

async function run(action) {
  show($("error"), false);
  show($("busy"), true);
  $("analyze").disabled = true;
  try {
    renderCard(await action());
    loadHistory();
  } catch (e) {
    $("error").textContent = e.message;
    show($("error"), true);
  } finally {
    show($("busy"), false);
    $("analyze").disabled = false;
  }
}

$("analyze").addEventListener("click", () => run(() => api("/api/capture", { method: "POST" })));
$("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  run(() => api("/api/classify", { method: "POST", body: form }));
  event.target.value = "";
});

async function loadHistory() {
  const { results } = await api("/api/results?limit=20");
  const list = $("history");
  list.replaceChildren(...results.map((r) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    const what = r.classified ? r.label_name : "Rejected";
    b.innerHTML = "<span></span><span class='chip'></span>";
    b.children[0].textContent = `#${r.id} ${new Date(r.created * 1000).toLocaleTimeString()} · ${what}`;
    b.children[1].textContent = r.classified ? r.call : "rejected";
    b.children[1].className = "chip " + (r.classified ? r.call : "rejected");
    b.addEventListener("click", () => renderCard(r));
    li.appendChild(b);
    return li;
  }));
}

async function refreshStatus() {
  try {
    const s = await api("/api/status");
    const chip = $("health");
    chip.textContent = `${s.status === "ok" ? "OK" : "Degraded"} · ${s.backend.active.toUpperCase()}`;
    chip.className = "chip " + s.status;
    $("degraded").textContent = s.degraded_reasons.join(" · ");
    show($("degraded"), s.degraded_reasons.length > 0);
  } catch (e) { /* shown on the next action */ }
}

function refreshPreview() {
  if (document.hidden) return;
  const img = new Image();
  img.onload = () => { $("preview").src = img.src; show($("preview-error"), false); };
  img.onerror = () => { $("preview-error").textContent = "No live view: camera not delivering frames."; show($("preview-error"), true); };
  img.src = `/api/preview.jpg?t=${Date.now()}`;
}

refreshPreview();
refreshStatus();
loadHistory();
setInterval(refreshPreview, 1000);
setInterval(refreshStatus, 5000);
