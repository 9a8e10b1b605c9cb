// BlastScope page: the active case, preview, Analyze, upload, the field card, the case card,
// reviews, cases history with paging. No external scripts; everything comes from the device.
"use strict";
window.addEventListener("pageshow", (e) => { if (e.persisted) window.location.reload(); });
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
const names = JSON.parse(document.body.dataset.labelNames);  // no inline script: the CSP forbids it
// a cell's class in the differential (edge/analysis/labels.py CELL_NAMES)
const cellNames = JSON.parse(document.body.dataset.cellNames);
// "Pre-B blast 12, Neutrophil 3": a differential count in words, most first
function differentialText(counts) {
  return Object.entries(counts || {}).map(([k, v]) => `${cellNames[k] || k} ${v}`).join(", ");
}
const CALL_TEXT = { positive: "▲ Screen positive", negative: "● Screen negative", uncertain: "◆ Uncertain",
                    pending: "◌ More fields needed", rejected: "✕ Not classified" };
const PAGE = 10;
let status = null;       // the last /api/status
let activeCase = null;   // the case this phone has open (never another phone's), as the API returns it
let shownCase = null;    // the case in the case card
let shownResult = null;  // the result in the field card
let reviewTarget = null; // {kind: "result"|"case", id}
let historyOffset = 0;
let offline = false;

class Offline extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({ "X-CSRF-Token": csrf }, options.headers || {});
  let response;
  try {
    response = await fetch(path, Object.assign({ credentials: "same-origin" }, options, { headers }));
  } catch (e) {
    // a field sent when the link dropped may never have reached the device: say so, never "not lost"
    const field = (options.method || "GET") === "POST" && /\/(classify|capture)$/.test(path);
    setOffline(true, field);
    throw new Offline(field ? "The device cannot be reached: this field was not saved. Check the Wi-Fi, then analyse it again."
      : "The device cannot be reached. Check the Wi-Fi and try again.");
  }
  setOffline(false);
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (response.status === 401) {
    // the session ended (a shift is 12 h; a PIN change or deactivation ends it too): say so on
    // the login page, and reopen this case after the login (issue 35)
    const open = (shownCase && shownCase.id) || (activeCase && activeCase.id);
    if (open) sessionStorage.setItem("reopenCase", String(open));
    window.location = "/login?expired=1";
    throw new Error("logged out");
  }
  if (!response.ok) {
    const error = new Error((body && body.error) || `request failed (${response.status})`);
    error.status = response.status;
    throw error;
  }
  return body;
}

// (an SVG element has no "hidden" property: the attribute is set for it)
function show(el, on) { if (on) el.removeAttribute("hidden"); else el.setAttribute("hidden", ""); }

// a field lost on the way stays said until the device is back: the next poll, which lost no
// field, must not overwrite it (issue 35)
let fieldLostSaid = false;
function setOffline(on, fieldLost = false) {
  if (on) fieldLostSaid = fieldLostSaid || fieldLost;
  else fieldLostSaid = false;
  if (on) $("offline-text").textContent = "The device cannot be reached. Check the clinic Wi-Fi. " +
    (fieldLostSaid ? "The field being sent was not saved: analyse it again once the device is back. " : "") +
    "Fields the device answered are saved on it.";
  if (on === offline) return;
  offline = on;
  show($("offline"), on);
  if (on) { const chip = $("health"); chip.textContent = "Offline"; chip.className = "chip offline-chip"; }
}

// "Saved: ..." after a review, an exclusion or a sign-out, at the bottom of the screen for a few seconds.
let savedTimer = null;
function saved(text) {
  const el = $("saved");
  el.textContent = text;
  show(el, true);
  clearTimeout(savedTimer);
  savedTimer = setTimeout(() => show(el, false), 5000);
}

// A refusal reads "plain words (the measurement)": the two parts, for the page to show apart.
function splitReason(text) {
  const cut = text.lastIndexOf(" (");
  return cut > 0 && text.endsWith(")") ? [text.slice(0, cut), text.slice(cut + 2, -1)] : [text, ""];
}

// A calibrated probability is never certainty: never show 0% or 100%.
function percent(p) { return p >= 0.995 ? ">99%" : p < 0.005 ? "<1%" : `${(100 * p).toFixed(0)}%`; }

function chip(el, call) {
  el.textContent = CALL_TEXT[call] || call;
  el.className = "chip " + call;
  show(el, true);
}

// What the operating point means for this field, in words.
function operatingPoint(r) {
  const c = status && status.model.calibration;
  const m = `Probability of B-ALL ${percent(r.malignant_probability)}`;
  if (!c) return m;
  // the band is what screen() uses: uncertain from uncertain_low up to uncertain_high
  const lo = percent(c.uncertain_low), hi = percent(c.uncertain_high);
  // the cell-count rule: a negative call also needs that many white cells (fieldNext says why)
  const clear = c.min_cells_to_clear > 1 ? ` with at least ${c.min_cells_to_clear} white cells` : "";
  if (c.uncertain_high > c.uncertain_low) return `${m}. Negative below ${lo}${clear}, uncertain from ${lo} to ${hi}, positive from ${hi}.`;
  return `${m}. Positive from ${percent(c.malignant_threshold)}.`;
}

const FIELD_NEXT = {
  positive: "This field shows a B-ALL pattern. Keep analysing fields of this slide; the case call decides.",
  negative: "No B-ALL pattern in this field. Keep analysing fields of this slide.",
  uncertain: "The model cannot place this field. Analyse other fields, or ask for an expert read.",
};

// What to do next with a field; when the count rule held it back (the server's call_reason),
// why, with the counts behind it.
function fieldNext(r) {
  if (!r.call_reason) return FIELD_NEXT[r.call] || "";
  const c = status && status.model.calibration;
  const needed = c && c.min_cells_to_clear > 1 ? `, ${c.min_cells_to_clear} needed` : "";
  const read = `${r.white_cells} white cell${r.white_cells === 1 ? "" : "s"} read${needed}`;
  return `${r.call_reason[0].toUpperCase()}${r.call_reason.slice(1)} (${read}).`;
}

function renderCard(r) {
  shownResult = r;
  show($("card"), true);
  // where the field was stored, from the server's answer, not from what the page assumed
  $("card-case").textContent = r.case_id != null ? `Saved in case ${r.case_code || "#" + r.case_id}` :
    "Saved without a case: it gets no case call";
  if (r.classified) {
    $("label").textContent = r.label_name;
    chip($("call"), r.call);
    $("malignant").textContent = operatingPoint(r);
    $("next-step").textContent = fieldNext(r);
    if (r.excluded) {
      // an excluded field's call no longer counts in the case: the card must not still say it does
      $("call").textContent = `Excluded from the case (read as: ${$("call").textContent})`;
      $("next-step").textContent = `Not counted in the case: ${r.excluded.reason}.`;
    }
  } else {
    $("label").textContent = "Field rejected";
    chip($("call"), "rejected");
    $("malignant").textContent = "This field was not classified:";
    $("next-step").textContent = "";
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
  // plain words first; the measurement behind them is in brackets at the end
  $("reasons").replaceChildren(...r.reasons.map((text) => {
    const li = document.createElement("li");
    const [words, measured] = splitReason(text);
    li.textContent = words;
    if (measured) {  // the measurement shown under the words (a title shows nothing on a phone)
      const figure = document.createElement("span");
      figure.className = "figure";
      figure.textContent = measured;
      li.append(figure);
    }
    return li;
  }));
  renderCells(r);
  $("overlay").src = `/api/results/${r.id}/overlay`;
  const when = new Date(r.created * 1000).toLocaleString();
  const ms = Object.values(r.timings_ms || {}).reduce((a, b) => a + b, 0);
  const source = r.source && r.source.startsWith("upload:") ? `uploaded file ${r.source.slice(7)}` : "camera";
  $("meta").textContent = `Field #${r.id} · ${when} · from ${source} · ${r.backend === "edgetpu" ? "Edge TPU" : r.backend ? "CPU" : "not run"}` +
    ` · ${ms.toFixed(0)} ms · ${r.cell_count} cells · model ${r.model_id}` +
    (r.review ? ` · reviewed by ${r.review.reviewer}: ${r.review.call}` : "") + (r.excluded ? ` · excluded: ${r.excluded.reason}` : "");
  show($("exclude-field"), r.case_id != null && !r.excluded);
  // a repeat of a field already in the case (or a reviewer's exclusion): count it again
  const repeat = r.excluded && r.excluded.duplicate_of != null;
  show($("include-field"), r.case_id != null && !!r.excluded && (repeat || document.body.dataset.role !== "technician"));
  $("include-field").textContent = repeat ? "Count this field anyway (the stage moved)" : "Include in the case again";
}

// A cell model's reading, cell by cell: what a hematologist counts, and the boxes' legend.
function renderCells(r) {
  const cells = r.cells || [];
  show($("cells-line"), cells.length > 0);
  show($("cell-list"), cells.length > 0);
  if (!cells.length) { $("cell-list").replaceChildren(); return; }
  const counted = cells.filter((c) => c.familiar && c.label !== "not_a_white_cell");
  const notCounted = cells.length - counted.length;
  const share = counted.length ? ` (${Math.round(100 * r.blasts / counted.length)}%)` : "";
  const diff = differentialText(r.differential);
  $("cells-line").textContent = `${r.blasts} blast${r.blasts === 1 ? "" : "s"} among ${counted.length} white cell${counted.length === 1 ? "" : "s"}${share}` +
    (diff ? `: ${diff}` : "") + (notCounted ? `; ${notCounted} not counted (grey boxes)` : "") +
    ". Red boxes: blasts; green: benign lymphoid; blue: other white cells.";
  $("cell-list").replaceChildren(...cells.map((c) => {
    const li = document.createElement("li");
    const p = c.probabilities[c.label];
    li.textContent = !c.familiar ? `not recognised: unlike the training cells, ${c.diameter_um} µm`
      : `${cellNames[c.label] || c.label} (${percent(p)}), ${c.diameter_um} µm` +
        (c.label === "not_a_white_cell" ? ": not counted" : "");
    return li;
  }));
}

// Bring the result's label and call into view below the top of the screen (not past it).
$("see-field").addEventListener("click", () => revealCard());
function revealCard() {
  const head = $("card").querySelector(".card-head");
  const top = head.getBoundingClientRect().top + window.scrollY - 8;
  window.scrollTo({ top: Math.max(0, top), behavior: "auto" });
}

function renderCaseBar(c) {
  // a field card of another case (or of none) never stays under a newly opened case
  if (shownResult && (c ? shownResult.case_id !== c.id : shownResult.case_id != null)) {
    show($("card"), false);
    shownResult = null;
  }
  activeCase = c;
  $("case-code").textContent = c ? c.code : "none: start a case for each slide";
  const call = c && c.case_call;
  if (call) {
    chip($("case-chip"), call.call);
    const target = call.fields + call.fields_needed;  // "3 of 5 fields": how far the slide is
    if (call.call === "pending" && call.cells_needed) {  // the count rule waits for white cells, not fields
      const white = call.cells ? call.cells.white_cells : 0;
      $("case-chip").textContent = `◌ ${white} of ${white + call.cells_needed} white cells`;
    } else if (call.call === "pending") $("case-chip").textContent = `◌ ${call.fields} of ${target} fields`;
    else $("case-chip").textContent += ` · ${call.fields} fields`;
  } else show($("case-chip"), false);
  // while fields are still needed the chip says how many ("◌ 3 of 5 fields"): no second line for it
  $("case-next").textContent = call ? (call.call === "pending" && !call.cells_needed ? "" : call.next_step)
    : c ? "" : "Fields analysed without a case are kept, but get no case call.";
  // always laid out, its height fixed: Analyze must not jump down when the call appears (issue 35)
  show($("case-next"), true);
  $("case-next").title = $("case-next").textContent;
  $("show-case").disabled = !c;
  // a signed-out case takes no field: every phone shows the lock within the 2-second sync, with
  // the reason in view next to the buttons it disables (issue 35)
  const locked = !!(c && c.signed);
  $("scan").disabled = !c || locked;
  $("analyze").disabled = locked || $("busy").textContent === "Analysing…";
  if (locked) {
    $("case-next").textContent = `Signed out by ${c.signed.reviewer}: this case is locked and takes no field. ` +
      "Start a new case for the next slide; a reviewer amends it, with a reason, to change it.";
    show($("case-next"), true);
    $("case-next").title = $("case-next").textContent;
  }
}

// Hands-free scanning (edge/device/scan.py): the device takes a field by itself each time the
// stage pauses over a new, sharp area, until the case rule has its fields; this page starts
// and stops it and shows what the scanner sees. Space, Enter and PageDown still analyse.
const SCAN_WORDS = { moving: "stage moving", settling: "settling", capture: "field taken", seen: "area seen already",
  out_of_focus: "out of focus: turn the fine focus", poor_view: "view not usable", starting: "starting", off: "off" };
let scanTimer = null;
// The slide map: the tracked stage path and each field taken (a square of the field's size),
// so a reviewer sees that the fields came from different areas of the smear.
const SVG = "http://www.w3.org/2000/svg";
function drawScanMap(s) {
  const map = $("scan-map");
  const points = s.path.concat(s.fields.map((f) => [f[0], f[1]]));
  show(map, points.length > 1);
  if (points.length < 2) return;
  const side = s.fields.length ? s.fields[0][2] : 100;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs) - side / 2, y0 = Math.min(...ys) - side / 2;
  const w = Math.max(...xs) - x0 + side, h = Math.max(...ys) - y0 + side;
  map.setAttribute("viewBox", `${x0} ${y0} ${w} ${h}`);
  const path = document.createElementNS(SVG, "polyline");
  path.setAttribute("points", s.path.map((p) => p.join(",")).join(" "));
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "#8a94a6");
  path.setAttribute("stroke-width", String(Math.max(w, h) / 150));
  const squares = s.fields.map((f, i) => {
    const r = document.createElementNS(SVG, "rect");
    r.setAttribute("x", f[0] - f[2] / 2);
    r.setAttribute("y", f[1] - f[2] / 2);
    r.setAttribute("width", f[2]);
    r.setAttribute("height", f[2]);
    r.setAttribute("fill", "rgba(11, 99, 197, 0.25)");
    r.setAttribute("stroke", "#0b63c5");
    r.setAttribute("stroke-width", String(Math.max(w, h) / 150));
    r.setAttribute("class", "scan-field");
    const title = document.createElementNS(SVG, "title");
    title.textContent = `field ${i + 1}`;
    r.append(title);
    return r;
  });
  map.replaceChildren(path, ...squares);
}
function renderScan(s) {
  const running = s && s.running;
  $("scan").textContent = running ? "Stop scanning" : "Scan hands-free";
  $("scan").setAttribute("aria-pressed", running ? "true" : "false");
  show($("scan-status"), !!s && (running || !!s.ended));
  if (!s) return;
  drawScanMap(s);
  const call = activeCase && activeCase.case_call;
  const target = call ? ` · ${call.fields} usable field${call.fields === 1 ? "" : "s"}` +
    (call.fields_needed ? `, ${call.fields_needed} more needed` : "") : "";
  $("scan-status").textContent = running
    ? `Scanning: ${SCAN_WORDS[s.state] || s.state}${s.reason && s.state !== "capture" ? ` (${s.reason})` : ""} · ${s.taken} taken${target}`
    : `Scan ended: ${s.ended} · ${s.taken} field${s.taken === 1 ? "" : "s"} taken`;
}
async function pollScan() {
  if (!activeCase) return;
  try {
    const s = await api(`/api/cases/${activeCase.id}/scan`);
    const before = activeCase.case_call && activeCase.case_call.fields;
    if (s.taken) renderCaseBar(await api(`/api/cases/${activeCase.id}`));
    renderScan(s);
    if (!s.running) {
      clearInterval(scanTimer);
      scanTimer = null;
      if (s.ended && s.ended.startsWith("enough fields") && navigator.vibrate) navigator.vibrate([200, 100, 200]);
      loadHistory().catch(() => {});
    } else if (activeCase.case_call && activeCase.case_call.fields !== before) loadHistory().catch(() => {});
  } catch (e) { /* the status chip and the offline banner say when the device cannot be reached */ }
}
$("scan").addEventListener("click", async () => {
  if (!activeCase) return;
  const running = $("scan").getAttribute("aria-pressed") === "true";
  try {
    const s = await api(`/api/cases/${activeCase.id}/scan`, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ action: running ? "stop" : "start" }) });
    renderScan(s);
    if (s.running && !scanTimer) scanTimer = setInterval(pollScan, 1000);
    // at 360 px the status and the map sat below the fold: bring them up under the Stop button
    if (s.running) $("scan").scrollIntoView({ block: "start", behavior: "smooth" });
  } catch (e) {
    $("error").textContent = e.message;
    show($("error"), true);
  }
});

// The case's cells grouped by class (CellaVision's way): tap one, then its class. The
// reviewer's class is kept beside the model's, and the blast count follows it.
let cellChoice = null;
async function loadCells(c) {
  if (!$("cells-section").open) return;
  const data = await api(`/api/cases/${c.id}/cells`);
  const counts = data.cells;
  $("cells-count").textContent = counts ? (counts.reviewed_text ? `${counts.text}; ${counts.reviewed_text}.` : `${counts.text}.`) : "";
  $("cell-groups").replaceChildren(...data.groups.filter((g) => g.cells.length).map((g) => {
    const group = document.createElement("div");
    group.className = "cell-group";
    const title = document.createElement("h3");
    title.textContent = `${g.name} (${g.cells.length})`;
    const grid = document.createElement("div");
    grid.className = "cell-grid";
    for (const cell of g.cells) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "cell-thumb" + (cell.review ? " reviewed" : "");
      b.dataset.cell = `${cell.result_id}-${cell.cell}`;
      const what = cell.review ? `reviewed by ${cell.review.reviewer} (model: ${cellNames[cell.model_label] || cell.model_label})`
                               : `model: ${cellNames[cell.model_label] || cell.model_label}`;
      b.setAttribute("aria-label", `Cell ${cell.cell} of field ${cell.result_id}, ${what}`);
      const img = document.createElement("img");
      img.src = cell.image;
      img.alt = "";
      b.appendChild(img);
      b.addEventListener("click", () => pickCell(cell, b, what));
      grid.appendChild(b);
    }
    group.append(title, grid);
    return group;
  }));
}
function pickCell(cell, button, what) {
  document.querySelectorAll(".cell-thumb.selected").forEach((el) => el.classList.remove("selected"));
  button.classList.add("selected");
  cellChoice = cell;
  // the cell itself goes with the picker: at 360 px the gallery's thumbnail scrolls away (issue 35)
  const thumb = button.querySelector("img");
  $("cell-picker-image").src = thumb ? thumb.src : "";
  if (document.body.dataset.role === "technician") {
    // a technician is not offered a picker the device would then refuse (issue 35)
    $("cell-picker-title").textContent = `Cell ${cell.cell} of field #${cell.result_id}, ${what}. A reviewer reclassifies cells.`;
    $("cell-picker-buttons").replaceChildren();
    show($("cell-picker"), true);
    $("cell-picker").scrollIntoView({ block: "nearest" });
    return;
  }
  $("cell-picker-title").textContent = `Cell ${cell.cell} of field #${cell.result_id}, ${what}. Its class:`;
  const classes = Object.keys(cellNames);
  $("cell-picker-buttons").replaceChildren(...classes.map((label) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "secondary mid";
    b.dataset.label = label;
    b.textContent = cellNames[label];
    b.addEventListener("click", () => reclassify(label));
    return b;
  }));
  show($("cell-picker"), true);
  $("cell-picker").scrollIntoView({ block: "start" });
}
async function reclassify(label) {
  try {  // the device records the class under the logged-in user's name
    await api(`/api/results/${cellChoice.result_id}/cells/${cellChoice.cell}/review`, { method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ label, revision: cellChoice.field_revision }) });
    show($("cell-picker"), false);
    const text = `Saved: cell ${cellChoice.cell} of field #${cellChoice.result_id} is now ${cellNames[label]}.`;
    renderCaseCard(await api(`/api/cases/${shownCase.id}`));
    saved(text);
  } catch (e) {
    $("error").textContent = e.message;
    show($("error"), true);
    if (e.status === 409) syncCase(true);
  }
}
$("cell-picker-cancel").addEventListener("click", () => show($("cell-picker"), false));
$("cells-section").addEventListener("toggle", () => { if (shownCase) loadCells(shownCase).catch(() => {}); });

// The Pi's GPIO button (edge/device/button.py) feeds only the case a phone armed it for.
function renderButton(c) {
  const hasButton = !!(status && status.button && status.button.gpio !== null);
  show($("cc-button"), hasButton && !c.signed);
  if (!hasButton) return;
  $("cc-button-text").textContent = c.button ? `The Pi's button analyses a field into this case (armed by ${c.button.armed_by}).`
    : "The Pi's button does not feed this case.";
  $("button-arm").textContent = c.button ? "Stop using the Pi's button" : "Use the Pi's button for this case";
}
$("button-arm").addEventListener("click", async () => {
  const c = shownCase;
  if (!c) return;
  try {
    await api(`/api/cases/${c.id}/button`, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ action: c.button ? "disarm" : "arm" }) });
    renderCaseCard(await api(`/api/cases/${c.id}`));
    saved(shownCase.button ? `Saved: the Pi's button now analyses into case ${c.code}.` : "Saved: the Pi's button is off for this case.");
  } catch (e) { $("error").textContent = e.message; show($("error"), true); }
});

// Every field of the case, newest last: thumbnail, what it was called (or why it was refused),
// excluded or reviewed; a tap opens it in the field card, where it is reviewed or excluded.
function renderFieldList(c) {
  const fields = c.fields || [];
  $("fields-summary").textContent = `Fields (${fields.length}): tap one to see, review or exclude it`;
  // rebuilt only when a field changed: a row replaced under a thumb loses the tap
  const key = JSON.stringify([c.id, fields.map((f) => [f.id, f.revision, f.excluded, f.review])]);
  if ($("cc-fields").dataset.key === key) return;
  $("cc-fields").dataset.key = key;
  $("cc-fields").replaceChildren(...fields.map((f, i) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "field-row" + (f.excluded ? " excluded" : "");
    b.dataset.id = f.id;
    const img = document.createElement("img");
    img.src = `/api/results/${f.id}/overlay`;
    img.alt = `field ${i + 1}`;
    img.loading = "lazy";
    const text = document.createElement("span");
    const what = f.classified ? `${f.label_name || names[f.label] || f.label}, ${CALL_TEXT[f.call] || f.call}`
      : `not classified: ${splitReason(f.reasons[0] || "")[0]}`;
    text.textContent = `${i + 1}. #${f.id} ${what}` + (f.excluded ? ` · excluded: ${f.excluded.reason}` : "") +
      (f.review ? ` · reviewed by ${f.review.reviewer}: ${f.review.call}` : "");
    b.append(img, text);
    b.addEventListener("click", () => {
      renderCard(Object.assign({ case_code: c.code }, f));
      revealCard();
    });
    li.append(b);
    return li;
  }));
}

function renderCaseCard(c) {
  shownCase = c;
  renderButton(c);
  renderFieldList(c);
  loadCells(c).catch(() => {});
  show($("case-card"), true);
  $("cc-code").textContent = c.code;
  $("cc-district").textContent = c.district ? `District: ${c.district.text}` : "";
  show($("cc-district"), !!c.district);
  // the district's second reads: an addendum by a named remote reader, never over the sign-out
  const reads = $("cc-second-reads");
  reads.replaceChildren(...(c.second_reads || []).map((r) => {
    const li = document.createElement("li");
    li.textContent = r.text;
    return li;
  }));
  if (c.second_read_differs) {
    const li = document.createElement("li");
    li.className = "warn";
    li.textContent = "The latest second read differs from this case's call: amend the case if you agree with it.";
    reads.append(li);
  }
  show(reads, (c.second_reads || []).length > 0);
  const call = c.case_call;
  if (call) {
    chip($("cc-call"), call.call);
    $("cc-next").textContent = call.next_step;
    const counts = Object.entries(call.counts).map(([k, v]) => `${names[k] || "Uncertain"} ${v}`).join(", ");
    $("cc-counts").textContent = `${call.fields} usable fields (${counts || "none yet"}); ${call.rejected} rejected; ${call.excluded} excluded.`;
    const diff = call.cells ? differentialText(call.cells.differential) : "";
    const reviewedDiff = call.cells && call.cells.reviewed_differential ? differentialText(call.cells.reviewed_differential) : "";
    $("cc-pattern").textContent = (call.cells ? `${call.cells.text}${call.cells.reviewed_text ? "; " + call.cells.reviewed_text : ""}. ` : "") +
      (diff ? `Differential (model): ${diff}. ` : "") + (reviewedDiff ? `After review: ${reviewedDiff}. ` : "") +
      (call.subtype_pattern ? `Positive fields point to: ${call.subtype_pattern}.` : "");
    $("cc-rule").textContent = call.rule;
  } else {
    show($("cc-call"), false);
    $("cc-next").textContent = "This model bundle has no case rule: review the fields one by one.";
  }
  $("cc-review").textContent = c.signed
    ? `Signed out by ${c.signed.reviewer}: ${c.signed.call} (${c.signed.reason}), version ${c.version}. Locked: amend it to change it.`
    : (c.review
      ? `Reviewed by ${c.review.reviewer}: ${c.review.call} (${c.review.reason}).` +
        (c.changed_since_review ? ` Changed since the review: ${c.changed.what}. Review it again.` : "")
      : "Not reviewed yet.") + " Not signed out.";
  // a signed-out case is locked: no review, no sign-out again, only an amendment
  show($("review-case"), !c.signed);
  show($("sign-case"), !c.signed);
  show($("amend-case"), !!c.signed);
  for (const [id, path] of [["cc-report", "report"], ["cc-csv", "export.csv"], ["cc-json", "export.json"], ["cc-fhir", "fhir"]]) {
    $(id).href = `/api/cases/${c.id}/${path}`;
  }
  show($("activate-case"), !c.active);
  renderSlide(c);
}

// A known slide of a site verification: its truth is not shown until the slide is done.
function renderSlide(c) {
  const slide = c.verification_slide;
  show($("cc-slide"), !!slide);
  if (!slide) return;
  const call = c.case_call ? c.case_call.call : c.call;
  if (slide.done) {
    $("cc-slide-text").textContent = `Verification #${slide.verification_id} slide, done. Truth: ${slide.truth}` +
      `${slide.kind ? " (" + slide.kind + ")" : ""}; the device called it ${slide.call}: ` +
      (slide.agrees ? "agrees." : "does NOT agree.");
    show($("slide-done"), false);
  } else {
    $("cc-slide-text").textContent = `Verification #${slide.verification_id} slide: its truth is hidden until it is done. ` +
      (call === "pending" ? "Analyse the fields the case rule needs, then press Slide done." : `The device calls it ${call}.`);
    show($("slide-done"), true);
    $("slide-done").disabled = call === "pending";
  }
}
$("slide-done").addEventListener("click", async () => {
  const c = shownCase;
  if (!c || !c.verification_slide) return;
  try {
    const v = await api(`/api/verifications/${c.verification_slide.verification_id}/slides/${c.id}/done`, { method: "POST" });
    renderCaseCard(v.case);
    $("ver-message").textContent = `Saved: slide ${v.case.code} done.`;
    loadVerification().catch(() => {});
  } catch (e) { $("cc-slide-text").textContent = e.message; }
});

async function loadActiveCase() {
  const { active_case } = await api("/api/cases?limit=1");
  renderCaseBar(active_case ? await api(`/api/cases/${active_case}`) : null);
}

async function run(action) {
  show($("error"), false);
  show($("card"), false);  // never leave the previous result on screen while a new one is made
  show($("last-field"), true);
  show($("see-field"), false);
  $("busy").textContent = "Analysing…";
  $("analyze").disabled = true;
  try {
    const r = await action();
    // the case bar follows the case the server stored the field in
    if (r.case_id != null) {
      const stored = await api(`/api/cases/${r.case_id}`);
      shownResult = null;
      renderCaseBar(stored);
      if (shownCase && shownCase.id === stored.id) renderCaseCard(stored);
    }
    renderCard(r);
    // the result stays under the Analyze button, with the preview and the case bar above it:
    // a slide of ten fields needs no scrolling; the whole card is one tap away
    loadHistory();
    $("busy").textContent = r.classified ? `Result: ${r.label_name}, ${CALL_TEXT[r.call]}`
      : `Field rejected: ${splitReason(r.reasons[0] || "")[0]}`;
    show($("see-field"), true);
  } catch (e) {
    $("busy").textContent = "";
    $("error").textContent = e.message;
    show($("error"), true);
  } finally {
    $("analyze").disabled = !!(activeCase && activeCase.signed);
  }
}

// Every analysis names this phone's case in its URL, so it can never land in the case another
// phone opened in the meantime; without an open case the field is kept in no case.
const intoCase = (what) => activeCase ? `/api/cases/${activeCase.id}/${what}` : `/api/${what}`;
$("analyze").addEventListener("click", () => run(() => api(intoCase("capture"), { method: "POST" })));
// A foot pedal or a Bluetooth shutter sends Space, Enter or PageDown: analyse without touching
// the phone. Keys typed into a form, or pressed on a button, keep their own meaning.
const TRIGGER_KEYS = new Set([" ", "Enter", "PageDown"]);
document.addEventListener("keydown", (event) => {
  if (!TRIGGER_KEYS.has(event.key) || event.repeat || event.ctrlKey || event.altKey || event.metaKey) return;
  const t = event.target;
  if (t && t.closest && t.closest("input, textarea, select, button, a, summary, form, dialog")) return;
  event.preventDefault();
  if (!$("analyze").disabled) $("analyze").click();
});
$("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  run(() => api(intoCase("classify"), { method: "POST", body: form }));
  event.target.value = "";
});
$("upload-label").tabIndex = 0;
$("upload-label").addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("upload").click(); } });

$("new-case").addEventListener("click", () => { show($("case-form"), true); $("case-code-input").focus(); });
$("cancel-case").addEventListener("click", () => show($("case-form"), false));
function caseFormError(text) {
  $("case-form-error").textContent = text;
  show($("case-form-error"), !!text);
  if (text) { $("case-code-input").focus(); $("case-form-error").scrollIntoView({ block: "center" }); }
}
$("case-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const code = $("case-code-input").value.trim();
  if (code.length > 40) return caseFormError(`Lab number: at most 40 characters; this one has ${code.length}. Nothing was cut: shorten it.`);
  caseFormError("");
  try {
    const c = await api("/api/cases", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ code: $("case-code-input").value.trim(), note: $("case-note-input").value.trim() }) });
    $("case-form").reset();
    show($("case-form"), false);
    show($("card"), false);
    renderCaseBar(c);
    renderCaseCard(c);
    historyOffset = 0;
    loadHistory();
  } catch (e) { caseFormError(e.message); }
});
$("show-case").addEventListener("click", async () => {
  if (!activeCase) return;
  renderCaseCard(await api(`/api/cases/${activeCase.id}`));
  $("case-card").scrollIntoView({ block: "start" });
});
$("activate-case").addEventListener("click", async () => {
  const c = await api(`/api/cases/${shownCase.id}/activate`, { method: "POST" });
  renderCaseBar(c); renderCaseCard(c); loadHistory();
});

function openReview(kind, id, title) {
  // the form keeps the revision it was opened on: the 2-second sync moves shownCase on under an
  // open form, and a sign-out posted with the new revision would sign fields the reviewer never saw
  reviewTarget = { kind, id, revision: kind === "result" ? shownResult.revision : shownCase.revision };
  $("review-title").textContent = title;
  $("review-submit").textContent = kind === "sign" ? "Sign out (locks the case)" : "Save review";
  show($("review-form"), true);
  $("review-form").scrollIntoView({ block: "start" });
}
$("review-field").addEventListener("click", () => shownResult && openReview("result", shownResult.id, `Review field #${shownResult.id}`));
$("review-case").addEventListener("click", () => shownCase && openReview("case", shownCase.id, `Review case ${shownCase.code}`));
$("sign-case").addEventListener("click", () => shownCase && openReview("sign", shownCase.id, `Sign out case ${shownCase.code} with the final call`));
$("amend-case").addEventListener("click", async () => {
  const seen = shownCase.revision;  // what the reviewer looked at when they tapped
  const reason = window.prompt("Why must this signed-out case change? (kept with the new version)");
  if (!reason) return;
  try {
    renderCaseCard(await api(`/api/cases/${shownCase.id}/amend`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reason, revision: seen }) }));
  } catch (e) { $("error").textContent = e.message; show($("error"), true); }
});
$("cancel-review").addEventListener("click", () => show($("review-form"), false));
$("review-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData($("review-form"));
  // the review names the revision this page showed: if another phone changed it since, the
  // device refuses it (409) and says who did what, instead of writing over it
  const onCase = reviewTarget.kind !== "result";
  const body = JSON.stringify({ call: form.get("call"), reason: form.get("reason"), revision: reviewTarget.revision });
  try {
    const path = reviewTarget.kind === "sign" ? `/api/cases/${reviewTarget.id}/sign`
      : onCase ? `/api/cases/${reviewTarget.id}/review` : `/api/results/${reviewTarget.id}/review`;
    const answer = await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body });
    show($("review-form"), false);
    $("review-reason").value = "";
    const what = reviewTarget.kind === "sign" ? `case ${answer.code} signed out` : onCase ? `review of case ${answer.code}` : `review of field #${answer.id}`;
    saved(`Saved: ${what} (${form.get("call")}) by ${document.body.dataset.user}.`);
    if (onCase) { renderCaseCard(answer); $("case-card").scrollIntoView({ block: "start" }); }
    else renderCard(answer);
    loadHistory();
  } catch (e) {
    $("error").textContent = e.message;
    show($("error"), true);
    if (e.status === 409) syncCase(true);  // show what the other phone did
  }
});
$("exclude-field").addEventListener("click", async () => {
  const reason = window.prompt("Why exclude this field from the case? (wrong slide, artefact…)");
  if (!reason) return;
  try {
    renderCard(await api(`/api/results/${shownResult.id}/exclude`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reason }) }));
    saved(`Saved: field #${shownResult.id} excluded from the case (${reason}).`);
    if (activeCase) renderCaseBar(await api(`/api/cases/${activeCase.id}`));
  } catch (e) { $("error").textContent = e.message; show($("error"), true); }
});

$("include-field").addEventListener("click", async () => {
  try {
    renderCard(await api(`/api/results/${shownResult.id}/include`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: "{}" }));
    saved(`Saved: field #${shownResult.id} counts in the case again.`);
    if (activeCase) renderCaseBar(await api(`/api/cases/${activeCase.id}`));
  } catch (e) { $("error").textContent = e.message; show($("error"), true); }
});

async function loadHistory() {
  const filter = $("history-filter").value;
  const data = await api(`/api/cases?limit=${PAGE}&offset=${historyOffset}${filter ? `&call=${filter}` : ""}`);
  $("history").replaceChildren(...data.cases.map((c) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.innerHTML = "<span class='what'></span><span class='chip'></span>";
    const when = new Date(c.created * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
    b.children[0].textContent = `${c.code} · ${when} · ${c.field_count} fields${c.signed ? " · signed out" : c.review ? " · reviewed" : ""}${c.active ? " · active" : ""}`;
    chip(b.children[1], c.final_call || c.call);
    b.addEventListener("click", async () => { renderCaseCard(await api(`/api/cases/${c.id}`)); $("case-card").scrollIntoView({ block: "start" }); });
    li.appendChild(b);
    return li;
  }));
  if (!data.cases.length) { const li = document.createElement("li"); li.className = "muted"; li.textContent = "No cases yet."; $("history").appendChild(li); }
  $("page-info").textContent = data.total ? `${historyOffset + 1}-${historyOffset + data.cases.length} of ${data.total}` : "";
  $("newer").disabled = historyOffset === 0;
  $("older").disabled = historyOffset + PAGE >= data.total;
}
$("history-filter").addEventListener("change", () => { historyOffset = 0; loadHistory(); });
$("newer").addEventListener("click", () => { historyOffset = Math.max(0, historyOffset - PAGE); loadHistory(); });
$("older").addEventListener("click", () => { historyOffset += PAGE; loadHistory(); });
{
  const today = new Date().toISOString().slice(0, 10);
  $("export-from").value = today;
  $("export-to").value = today;
}
$("audit-section").addEventListener("toggle", async () => {
  if (!$("audit-section").open) return;
  const { audit } = await api("/api/audit?limit=50");
  $("audit").replaceChildren(...audit.map((a) => {
    const li = document.createElement("li");
    // words, not JSON: "2026-12-03 10:41 · admin (10.0.0.7) · case.review · call: positive, reason: ..."
    const time = (t) => new Date(t * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
    const words = (v, key = "") => v === null || v === undefined ? "none"
      : typeof v === "object" ? (key ? "(" : "") + Object.entries(v).filter(([k]) => k !== "revision")
        .map(([k, x]) => `${k.replace(/_/g, " ")}: ${words(x, k)}`).join(", ") + (key ? ")" : "")
      : (key === "at" || key.endsWith("_at")) && typeof v === "number" ? time(v) : String(v);
    li.textContent = `${time(a.at)} · ${a.client} · ${a.action}${a.after ? " · " + words(a.after) : ""}`;
    return li;
  }));
});

// Users (admins only: the card is on the page only for them). A new user's API token is shown
// once, here; the device keeps only its hash.
async function loadUsers() {
  if (!$("users")) return;
  const { users } = await api("/api/users");
  $("users").replaceChildren(...users.map((u) => {
    const li = document.createElement("li");
    const text = document.createElement("span");
    text.textContent = `${u.name} · ${u.role}${u.active ? "" : " · cannot log in"}`;
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "secondary mid";
    toggle.textContent = u.active ? "Deactivate" : "Activate";
    toggle.addEventListener("click", async () => {
      // a deactivation ends the user's sessions at once: one stray tap (the Users card moves the
      // next heading under the thumb as it opens) must not do it
      if (u.active && !window.confirm(`Deactivate ${u.name}? They are logged out at once and cannot log in.`)) return;
      try {
        await api(`/api/users/${encodeURIComponent(u.name)}`, { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ active: !u.active }) });
        $("user-message").textContent = `Saved: ${u.name} ${u.active ? "can no longer log in" : "can log in again"}.`;
      } catch (e) { $("user-message").textContent = e.message; }
      loadUsers();
    });
    li.append(text, toggle);
    return li;
  }));
}
if ($("users-section")) {
  $("users-section").addEventListener("toggle", () => { if ($("users-section").open) loadUsers().catch(() => {}); });
  $("add-user").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData($("add-user"));
    try {
      const made = await api("/api/users", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name: form.get("name"), role: form.get("role"), pin: form.get("pin") }) });
      $("user-message").textContent = `Saved: ${made.name} (${made.role}) can log in. API token for scripts, shown once: ${made.token}`;
      $("add-user").reset();
    } catch (e) { $("user-message").textContent = e.message; }
    loadUsers();
  });
}

// Site verification (edge/device/verification.py): until it passes on this clinic's own
// known slides for the model and camera in force, every result says "not verified at this site".
function renderSite(site) {
  const b = $("site-banner");
  // one line: the full reason is under Site verification and behind the status chip
  b.textContent = site.verified ? `Device ${site.text}.` : `Not verified at this site: ${site.short || site.why} ` +
    "(see Site verification).";
  b.className = "site-banner " + (site.verified ? "verified" : "unverified");
  if (site.drift && site.drift.length) b.textContent += " Changed since verification: " + site.drift.join("; ") + ".";
  show(b, true);
}

async function loadVerification() {
  const { state, defaults, verifications } = await api("/api/verifications");
  renderSite(state);
  $("ver-state").textContent = state.verified ? `This device is ${state.text}.` : `Not verified at this site: ${state.why}.`;
  const open = verifications.find((v) => v.state === "open");
  show($("ver-open"), !!open);
  if ($("ver-start")) {
    show($("ver-start"), !open);
    const form = $("ver-start");
    for (const [k, v] of Object.entries(defaults)) {
      const input = form.elements[k];
      if (input && !input.value) input.value = k.endsWith("_lower") ? Math.round(100 * v) : v;
    }
  }
  if (open) {
    const o = open.so_far, c = open.criteria;
    $("ver-progress").textContent = `Verification #${open.id} (started by ${open.started_by}): ` +
      `${o.positive_done} of ${c.min_positive} positive and ${o.negative_done} of ${c.min_negative} negative slides done ` +
      `(${o.challenging_done} of ${c.min_challenging} hematogone-rich or reactive); ${o.pending} under way. ` +
      `Sensitivity ${o.sensitivity.text}; specificity ${o.specificity.text}.`;
    $("ver-open").dataset.id = open.id;
  }
  $("ver-list").replaceChildren(...verifications.map((v) => {
    const li = document.createElement("li");
    const text = document.createElement("span");
    text.textContent = `#${v.id} ${v.state}, started ${v.started_iso} by ${v.started_by}, model ${v.model_id}, ` +
      `${v.slides.length} slides `;
    const report = document.createElement("a");
    report.href = `/api/verifications/${v.id}/report`;
    report.target = "_blank";
    report.rel = "noopener";
    report.className = "secondary mid button-link";
    report.textContent = "Report";
    const json = document.createElement("a");
    json.href = `/api/verifications/${v.id}/export.json`;
    json.className = "secondary mid button-link";
    json.setAttribute("download", "");
    json.textContent = "JSON";
    li.append(text, report, json);
    return li;
  }));
}
async function loadReferences() {
  const { active, references } = await api("/api/site-references");
  const on = references.find((r) => r.id === active);
  $("ref-state").textContent = on ? `Site reference #${on.id} is in force: ${on.slides} slides, ${on.fields} fields, ` +
    `accepted by ${on.accepted_by}.` : "No site reference: fields are judged against the training slides only.";
  $("ref-list").replaceChildren(...references.map((r) => {
    const li = document.createElement("li");
    const text = document.createElement("span");
    text.textContent = `#${r.id} ${r.state}: ${r.slides} slides, ${r.fields} fields, ${r.cells} cells, by ${r.created_by} `;
    li.append(text);
    if (r.state === "proposed" && $("ref-propose")) {
      const accept = document.createElement("button");
      accept.type = "button";
      accept.className = "primary mid";
      accept.textContent = `Accept reference #${r.id}`;
      accept.addEventListener("click", async () => {
        if (!window.confirm(`Accept site reference #${r.id}? A new verification is then needed.`)) return;
        try {
          await api(`/api/site-references/${r.id}/accept`, { method: "POST" });
          $("ver-message").textContent = `Saved: site reference #${r.id} is in force; start a new verification.`;
        } catch (e) { $("ver-message").textContent = e.message; }
        loadVerification().catch(() => {});
        loadReferences().catch(() => {});
        refreshStatus();
      });
      li.append(accept);
    }
    return li;
  }));
}
if ($("ref-propose")) {
  $("ref-propose").addEventListener("submit", async (event) => {
    event.preventDefault();
    const codes = $("ref-codes").value.split(/[\s,]+/).filter(Boolean);
    try {
      const { cases } = await api(`/api/cases?limit=200`);
      const ids = codes.map((code) => {
        const c = cases.find((x) => x.code === code);
        if (!c) throw new Error(`no case ${code} on this device`);
        return c.id;
      });
      $("ver-message").textContent = "Measuring the slides' cells…";
      const r = await api("/api/site-references", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ case_ids: ids }) });
      $("ver-message").textContent = `Saved: site reference #${r.id} proposed from ${r.slides} slides; accept it below.`;
    } catch (e) { $("ver-message").textContent = e.message; }
    loadReferences().catch(() => {});
  });
}
$("verification-section").addEventListener("toggle", () => {
  if ($("verification-section").open) { loadVerification().catch(() => {}); loadReferences().catch(() => {}); }
});
$("ver-slide").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData($("ver-slide"));
  try {
    const c = await api(`/api/verifications/${$("ver-open").dataset.id}/slides`, { method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ code: form.get("code"), truth: form.get("truth"), kind: form.get("truth") === "negative" ? form.get("kind") : "" }) });
    $("ver-message").textContent = `Saved: slide ${c.code} is open on this phone. Analyse its fields.`;
    $("ver-slide").reset();
    renderCaseBar(c);
    renderCaseCard(c);
    loadVerification().catch(() => {});
  } catch (e) { $("ver-message").textContent = e.message; }
});
if ($("ver-start")) {
  $("ver-start").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = $("ver-start").elements;
    const criteria = { min_positive: +f.min_positive.value, min_negative: +f.min_negative.value,
      min_challenging: +f.min_challenging.value, sensitivity_lower: +f.sensitivity_lower.value / 100,
      specificity_lower: +f.specificity_lower.value / 100 };
    const confirm = f.second_name.value ? { name: f.second_name.value, pin: f.second_pin.value } : undefined;
    f.second_pin.value = "";  // a PIN never stays in the form
    try {
      const v = await api("/api/verifications", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ criteria, confirm }) });
      $("ver-message").textContent = `Saved: verification #${v.id} started; its criteria are now fixed.` +
        (v.below_floor.length ? ` Below the defaults (${v.below_floor.join("; ")}), confirmed by ${v.confirmed_by}.` : "");
    } catch (e) { $("ver-message").textContent = e.message; }
    loadVerification().catch(() => {});
  });
  $("ver-finish").addEventListener("click", async () => {
    try {
      const v = await api(`/api/verifications/${$("ver-open").dataset.id}/finish`, { method: "POST" });
      $("ver-message").textContent = `Saved: verification #${v.id} ${v.state}, signed by ${v.finished_by}.` +
        (v.outcome.problems.length ? " Not met: " + v.outcome.problems.join("; ") + "." : "");
    } catch (e) { $("ver-message").textContent = e.message; }
    loadVerification().catch(() => {});
    refreshStatus();
  });
  $("ver-abandon").addEventListener("click", async () => {
    const reason = window.prompt("Why is this verification abandoned?");
    if (!reason) return;
    try {
      await api(`/api/verifications/${$("ver-open").dataset.id}/abandon`, { method: "POST",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reason }) });
      $("ver-message").textContent = "Saved: verification abandoned.";
    } catch (e) { $("ver-message").textContent = e.message; }
    loadVerification().catch(() => {});
  });
}

async function refreshStatus() {
  try {
    status = await api("/api/status");
    const h = $("health");
    // three states a glance must tell apart: working and verified (green), working on a new
    // device not yet verified at this site (amber, not a fault: the banner says what to do),
    // and a fault (amber with a warning sign, the reasons under it)
    const verified = status.site_verification && status.site_verification.verified;
    h.textContent = status.status !== "ok" ? "⚠ Attention" : verified ? "Ready" : "Not verified";
    h.className = "chip " + (status.status !== "ok" ? "degraded" : verified ? "ok" : "unverified");
    const others = [...status.degraded_reasons];
    // a Pi has no real-time clock: the phone's clock is the nearest truth in the room
    const skew = status.clock ? Date.now() / 1000 - status.clock.now : 0;
    if (Math.abs(skew) > 300) {
      others.push(`This device's clock is ${Math.round(Math.abs(skew) / 60)} min ${skew > 0 ? "behind" : "ahead of"} ` +
        "this phone's: new fields would be misdated; an admin sets the device's time.");
    }
    // an admin sets it from here: the phone's time, with the device time this status read
    if ($("clock-fix")) show($("clock-fix"), Math.abs(skew) > 300 || Boolean($("clock-message").textContent));
    $("degraded").textContent = others.join(" · ");
    show($("degraded"), others.length > 0 && !$("degraded").dataset.closed);
    if (status.site_verification) renderSite(status.site_verification);
  } catch (e) { /* the offline banner says it */ }
}
async function setClock(confirmed) {
  const phone = new Date();
  try {
    const out = await api("/api/clock", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ now: phone.getTime() / 1000, device_now: status.clock.now, confirm: confirmed }) });
    $("clock-message").textContent = out.set ? `Set to ${phone.toLocaleString()}.` : out.reason;
  } catch (e) {
    // a time before the newest field is asked again, in words, before it is set anyway
    if (!confirmed && e.status === 409 && /confirm/.test(e.message) && window.confirm(e.message.split(". Check")[0] +
      ". Set the device's clock to this phone's time anyway?")) return setClock(true);
    $("clock-message").textContent = e.message;
  }
  refreshStatus();
}
if ($("set-clock")) $("set-clock").addEventListener("click", () => setClock(false));
$("health").addEventListener("click", () => {
  const d = $("degraded");
  if (!d.hidden) { show(d, false); d.dataset.closed = "1"; return; }
  const reasons = status ? status.degraded_reasons : [];
  d.textContent = reasons.length ? reasons.join(" · ") : status ? `All working: model ${status.model.id}, ` +
    `${status.backend.active === "edgetpu" ? "Edge TPU" : "CPU"}, camera ${status.camera && status.camera.connected ? "on" : "off"}.` : "";
  delete d.dataset.closed;
  show(d, true);
});
$("retry").addEventListener("click", async () => { await refreshStatus(); if (!offline) { loadActiveCase(); loadHistory(); } });

// The live view to focus by (edge/device/live.py): an MJPEG stream in the <img> while the
// page is visible, closed when it is hidden (no bytes for a phone in a pocket); when the device
// cannot stream (no camera, every stream slot taken) a still every second instead.
let liveOn = false, liveTimer = null, liveFailedAt = 0;
function startLive() {
  if (liveOn || document.hidden || offline || Date.now() - liveFailedAt < 30000) return;
  const img = $("preview");
  img.onerror = () => {
    stopLive(); liveFailedAt = Date.now(); refreshPreview();
    // say why the picture turned into stills (issue 35): a refused stream gave no notice
    $("preview-error").textContent = "Live view not available (the device streams to a few phones at once, or the " +
      "camera is busy): showing a still picture every second. It tries again in 30 s.";
    show($("preview-error"), true);
  };
  img.onload = () => show($("preview-error"), false);
  img.src = `/api/live.mjpg?t=${Date.now()}`;
  liveOn = true;
  liveTimer = setTimeout(() => { stopLive(); startLive(); }, 50000);  // before the device ends the stream
}
function stopLive() {
  liveOn = false;
  clearTimeout(liveTimer);
  const img = $("preview");
  img.onerror = null;
  img.removeAttribute("src");  // closes the stream
}
document.addEventListener("visibilitychange", () => { if (document.hidden) stopLive(); else startLive(); });

function refreshPreview() {
  if (liveOn) return;
  if (document.hidden || offline) return;
  startLive();
  if (liveOn) return;
  const img = new Image();
  // the stills keep the notice of why the live view was refused while it lasts
  img.onload = () => { $("preview").src = img.src; show($("preview-error"), Date.now() - liveFailedAt < 30000); };
  img.onerror = () => { $("preview-error").textContent = "No live view: the camera is not delivering pictures."; show($("preview-error"), true); };
  img.src = `/api/preview.jpg?t=${Date.now()}`;
}

// Phones in sync: the case this phone shows is read again every 2 s, so a field, review or
// exclusion made on another phone shows here within that; a review made on what this page
// showed before is refused by the device (409), never written over the other one.
async function syncCase(force = false) {
  if ((offline || document.hidden) && !force) return;
  const id = (shownCase && shownCase.id) || (activeCase && activeCase.id);
  if (!id) return;
  try {
    const c = await api(`/api/cases/${id}`);
    // the button's target is not part of the case's revision: compare it too
    const buttonMoved = shownCase && JSON.stringify(c.button) !== JSON.stringify(shownCase.button);
    if (shownCase && shownCase.id === c.id && (force || c.revision !== shownCase.revision || buttonMoved)) renderCaseCard(c);
    if (activeCase && activeCase.id === c.id && (force || c.revision !== activeCase.revision)) renderCaseBar(c);
    const field = shownResult && c.fields.find((f) => f.id === shownResult.id);
    if (field && (force || field.revision !== shownResult.revision)) renderCard(Object.assign({ case_code: c.code }, field));
  } catch (e) { /* the status chip and the offline banner say when the device cannot be reached */ }
}

refreshPreview();
refreshStatus().then(async () => {
  await loadActiveCase().catch(() => {});
  loadHistory().catch(() => {});
  // after a login that a session's end forced, the case that was open comes back
  const reopen = sessionStorage.getItem("reopenCase");
  if (reopen) {
    sessionStorage.removeItem("reopenCase");
    try { renderCaseCard(await api(`/api/cases/${reopen}`)); $("case-card").scrollIntoView({ block: "start" }); } catch (e) { /* gone */ }
  }
});
// a reviewer's history shows cases created on other phones since the page loaded
setInterval(() => { if (!offline && !document.hidden) loadHistory().catch(() => {}); }, 15000);
setInterval(refreshPreview, 1000);
setInterval(refreshStatus, 5000);
setInterval(syncCase, 2000);
