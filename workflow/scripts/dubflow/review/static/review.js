// The review page: plays clips, previews edits, applies them. Every text it shows goes
// through textContent; the token travels in the URL for loads and in a header for POSTs.
"use strict";

const body = document.body;
const token = body.dataset.token;
const lang = body.dataset.lang;
const duration = parseFloat(body.dataset.duration) || 1;
const video = document.getElementById("video");
const player = new Audio();
let lastRebuild = parseInt(body.dataset.rebuild, 10) || 0;
let running = false;
// what the page last played, for tests and for the Stop-on-second-click behaviour
window.reviewState = { played: [], previews: {}, player: player };

function withToken(path) {
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

function say(text, isError) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.classList.toggle("error", Boolean(isError));
  box.hidden = !text;
}

async function post(path, payload) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Review-Token": token },
    body: JSON.stringify(payload),
    credentials: "same-origin",
  });
  if (!response.ok) {
    let sentence = "The app refused the request (" + response.status + ").";
    try { sentence = (await response.json()).error || sentence; } catch (e) { /* not JSON */ }
    throw new Error(sentence);
  }
  return response;
}

function play(url, label) {
  player.pause();
  player.src = url;
  window.reviewState.played.push(label);
  video.pause();
  return player.play().catch(() => {});
}

// -- rows -------------------------------------------------------------------------------
const rows = Array.from(document.querySelectorAll("tr.row"));

function letters(text) {
  return Array.from(text).filter((ch) => /[\p{L}\p{N}]/u.test(ch)).length;
}

function edits() {
  const out = {};
  for (const row of rows) {
    const area = row.querySelector("textarea");
    if (area.value.trim() !== area.dataset.original.trim()) out[row.dataset.id] = area.value;
  }
  return out;
}

function voiceChanges() {
  const out = {};
  for (const select of document.querySelectorAll("select.voice")) {
    if (select.value !== select.dataset.current) out[select.dataset.speaker] = select.value;
  }
  return out;
}

function refreshPending() {
  const lines = Object.keys(edits()).length;
  const voices = Object.keys(voiceChanges()).length;
  const parts = [];
  if (lines) parts.push(lines + (lines === 1 ? " line" : " lines"));
  if (voices) parts.push(voices + (voices === 1 ? " voice" : " voices"));
  document.getElementById("pending").textContent = running ? "Rebuilding…" :
    parts.length ? parts.join(" and ") + " changed" : "No changes";
  document.getElementById("apply").disabled = parts.length === 0 || running;
}

function updateRow(row) {
  const area = row.querySelector("textarea");
  const count = letters(area.value);
  const counter = row.querySelector(".letters");
  counter.textContent = String(count);
  counter.classList.toggle("over", count > parseInt(row.dataset.limit, 10));
  const changed = area.value.trim() !== area.dataset.original.trim();
  row.classList.toggle("changed", changed);
  row.querySelector(".preview").disabled = !changed || !area.value.trim();
  row.querySelector(".revert").hidden = !changed;
  area.style.height = "auto";
  area.style.height = area.scrollHeight + 2 + "px";
}

for (const row of rows) {
  const id = row.dataset.id;
  const area = row.querySelector("textarea");
  updateRow(row);
  let typing = null;
  area.addEventListener("input", () => {
    updateRow(row);
    refreshPending();
    // the app starts voicing the new text once the reviewer pauses; the click then
    // finds it made (the app keeps recent previews)
    clearTimeout(typing);
    typing = setTimeout(() => prefetch(row), 900);
  });
  row.addEventListener("click", (event) => {
    if (event.target.closest("button, textarea, select")) return;
    seek(parseFloat(row.dataset.start));
    select(row);
  });
  for (const button of row.querySelectorAll("button.play")) {
    button.addEventListener("click", () => {
      const kind = button.dataset.kind;
      play(withToken("/clip/" + encodeURIComponent(lang) + "/" + encodeURIComponent(id) + "/" + kind),
           kind + ":" + id);
    });
  }
  row.querySelector(".revert").addEventListener("click", () => {
    area.value = area.dataset.original;
    updateRow(row);
    refreshPending();
  });
  row.querySelector(".preview").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    button.textContent = "…";
    say("");
    const started = performance.now();
    try {
      const response = await post("/api/preview", previewRequest(row));
      const info = JSON.parse(response.headers.get("X-Preview") || "{}");
      const blob = await response.blob();
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      window.reviewState.previews[id] = { blob: blob, seconds: seconds, info: info };
      const fitted = (info.flags || []).length ? " (" + info.flags.join(", ") + ")" : "";
      say("Preview of line " + id + " ready in " + seconds + " s" + fitted + ".");
      play(URL.createObjectURL(blob), "preview:" + id);
    } catch (error) {
      say(error.message, true);
    } finally {
      button.textContent = "Preview";
      updateRow(row);
    }
  });
}

function previewRequest(row) {
  const area = row.querySelector("textarea");
  const voice = voiceChanges()[row.dataset.speaker];
  return { lang: lang, id: row.dataset.id, text: area.value, voice: voice || null };
}

function prefetch(row) {
  const area = row.querySelector("textarea");
  const over = letters(area.value) > parseInt(row.dataset.limit, 10);
  if (row.querySelector(".preview").disabled || over) return;
  post("/api/preview", previewRequest(row)).catch(() => {});  // errors show on the click
}

function select(row) {
  for (const other of rows) other.classList.toggle("selected", other === row);
}

function seek(seconds) {
  player.pause();
  if (Number.isFinite(seconds)) {
    video.currentTime = Math.max(0, seconds);
  }
}

// -- filters ------------------------------------------------------------------------------
const onlyCheck = document.getElementById("only-check");
const speakerFilter = document.getElementById("speaker-filter");
function filter() {
  for (const row of rows) {
    const hide = (onlyCheck.checked && row.dataset.check !== "1") ||
      (speakerFilter.value && row.dataset.speaker !== speakerFilter.value);
    row.hidden = Boolean(hide);
  }
}
onlyCheck.addEventListener("change", filter);
speakerFilter.addEventListener("change", filter);

for (const select of document.querySelectorAll("select.voice")) {
  select.addEventListener("change", refreshPending);
}

// -- timeline -----------------------------------------------------------------------------
for (const seg of document.querySelectorAll(".timeline .seg")) {
  const start = parseFloat(seg.dataset.start);
  const end = parseFloat(seg.dataset.end);
  seg.style.left = (100 * start / duration) + "%";
  seg.style.width = (100 * (end - start) / duration) + "%";
  seg.addEventListener("click", (event) => {
    event.stopPropagation();
    seek(start);
    const row = rows.find((r) => r.dataset.id === seg.dataset.id);
    if (row) { select(row); row.scrollIntoView({ block: "nearest" }); }
  });
}
document.getElementById("timeline").addEventListener("click", (event) => {
  const box = document.getElementById("overlay").getBoundingClientRect();
  const share = (event.clientX - box.left) / box.width;
  if (share >= 0 && share <= 1) seek(share * duration);
});
const cursor = document.getElementById("cursor");
video.addEventListener("timeupdate", () => {
  cursor.style.left = (100 * Math.min(1, video.currentTime / duration)) + "%";
});

// -- apply and the rebuild ----------------------------------------------------------------
const applyButton = document.getElementById("apply");
applyButton.addEventListener("click", async () => {
  say("");
  try {
    await post("/api/apply", { lang: lang, edits: edits(), voices: voiceChanges() });
    running = true;
    refreshPending();
    poll();
  } catch (error) {
    say(error.message, true);
  }
});

async function poll() {
  let status;
  try {
    const response = await fetch(withToken("/api/status"), { credentials: "same-origin" });
    status = await response.json();
  } catch (error) {
    setTimeout(poll, 1000);
    return;
  }
  const box = document.getElementById("status");
  const text = document.getElementById("status-text");
  const progress = document.getElementById("progress");
  const log = document.getElementById("status-log");
  box.hidden = status.state === "idle";
  running = status.state === "running";
  if (status.state === "running") {
    progress.max = Math.max(1, status.total);
    progress.value = status.done;
    // until Snakemake has planned the run, its log has no step count to show
    text.textContent = (status.total ? "Rebuilding: " + status.done + " of " + status.total +
      " steps done" : "Rebuilding: planning the steps") + " (" + status.seconds + " s)";
    log.hidden = true;
    setTimeout(poll, 1000);
  } else if (status.state === "failed") {
    text.textContent = "The rebuild failed: " + status.error;
    log.textContent = status.log;
    log.hidden = false;
    box.classList.add("failed");
  } else if (status.state === "done" && status.number > lastRebuild) {
    text.textContent = "Rebuilt in " + status.seconds + " s; reloading.";
    lastRebuild = status.number;
    window.location.reload();
  } else if (status.state === "done") {
    progress.hidden = true;
    text.textContent = "Rebuilt in " + status.seconds + " s: the lines and the video below " +
      "are the new build.";
  }
  refreshPending();
}

refreshPending();
poll();
