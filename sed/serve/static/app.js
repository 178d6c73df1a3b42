// The page of `sedkit serve`: reads /info, sends an uploaded or recorded file to /predict (multipart, with
// spectrogram=true; window/hop for a file longer than the model's clip, detect=true for a frame model) and shows
// the top labels, the spectrogram and, for long files or detected events, a timeline of labels over time.
import { drawSpectrogram, drawTimeline } from "./draw.js";
import { startRecording } from "./record.js";

const $ = (id) => document.getElementById(id);
const KEY = "sed-api-key";
const BARS = 5; // top labels shown as bars
const ROWS = 6; // labels in the timeline
const MAX_ROWS = 12; // ... and at most, when more labels have events
let info = null;
let job = 0; // the newest request: answers of older ones are dropped
let recorder = null;

function status(text) {
  $("status").textContent = text;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
  if (text) status("");
}

function headers() {
  const key = sessionStorage.getItem(KEY);
  return key ? { "X-API-Key": key } : {};
}

/** The service's one-line error of a failed response ({"error": ...}), else the HTTP status. */
async function failure(res) {
  let text = `HTTP ${res.status} ${res.statusText}`.trim();
  try {
    const body = await res.json();
    if (body && typeof body.error === "string") text = body.error;
  } catch {
    // not JSON (a proxy's page): the status line says enough
  }
  if (res.status === 401) askKey();
  return new Error(text);
}

function askKey() {
  $("key-panel").hidden = false;
  $("key-change").hidden = true;
  $("api-key").focus();
}

async function loadInfo() {
  status("Loading the model's description…");
  const res = await fetch("/info", { headers: headers() });
  if (res.status === 401) {
    askKey();
    $("model-info").textContent = "This service needs an API key.";
    status("");
    showError(sessionStorage.getItem(KEY) ? "the API key was refused" : "");
    return;
  }
  if (!res.ok) throw await failure(res);
  info = await res.json();
  const serve = info.serve || {};
  $("key-panel").hidden = true;
  $("key-change").hidden = !serve.api_key;
  const parts = [
    info.model_name,
    `${info.labels.length} labels`,
    `${info.sample_rate} Hz`,
    info.clip_seconds ? `clip ${info.clip_seconds} s` : "any length",
    info.multi_label ? "multi-label" : "single-label",
  ];
  if (serve.detect) parts.push(`frame model: events (frame hop ${info.frame_hop} s)`);
  $("model-info").textContent = parts.filter(Boolean).join(" · ");
  $("limits").textContent = `Up to ${serve.max_upload_mb} MB and ${serve.max_seconds} s of audio. ${
    serve.detect ? "Events are detected" : "Files longer than the clip are scored in windows"
  } and drawn on a timeline.`;
  status("Ready: drop a file or record.");
  showError("");
}

/** The file's duration in seconds, decoded by the browser; null when the browser cannot decode it. */
async function duration(file) {
  try {
    const ctx = new OfflineAudioContext(1, 1, 8000);
    return (await ctx.decodeAudioData(await file.arrayBuffer())).duration;
  } catch {
    return null;
  }
}

async function predict(file, params) {
  const form = new FormData();
  form.append("file", file, file.name || "recording.wav");
  for (const [k, v] of Object.entries(params)) form.append(k, String(v));
  const res = await fetch("/predict", { method: "POST", body: form, headers: headers() });
  if (!res.ok) throw await failure(res);
  return res.json();
}

async function classify(file) {
  const mine = ++job;
  const results = $("results");
  showError("");
  if (!info) {
    showError("the model's description is not loaded (is an API key needed?)");
    return;
  }
  const serve = info.serve || {};
  if (serve.max_upload_mb && file.size > serve.max_upload_mb * 1024 * 1024) {
    showError(`${file.name}: ${(file.size / 1048576).toFixed(1)} MB is over the ${serve.max_upload_mb} MB limit`);
    return;
  }
  results.dataset.state = "working";
  const started = performance.now();
  try {
    status(`Reading ${file.name}…`);
    const seconds = await duration(file);
    const clip = info.clip_seconds;
    const windowed = (s) => !serve.detect && clip && s > clip + 1e-6;
    const params = { spectrogram: true, top_k: BARS };
    if (serve.detect) Object.assign(params, { detect: true, top_k: 10 });
    else if (windowed(seconds)) Object.assign(params, { window: clip, hop: clip / 2, top_k: 10 });
    status(`Scoring ${file.name}${seconds ? ` (${seconds.toFixed(1)} s)` : ""}…`);
    let answer = await predict(file, params);
    if (seconds === null && !params.window && windowed(answer.duration)) {
      // the browser could not decode it, the service could: now we know it is long
      status(`Scoring ${file.name} in windows (${answer.duration.toFixed(1)} s)…`);
      answer = await predict(file, { ...params, window: clip, hop: clip / 2, top_k: 10 });
    }
    if (mine !== job) return;
    render(file.name, answer);
    const took = ((performance.now() - started) / 1000).toFixed(2);
    status(`Done: ${file.name}, ${answer.duration.toFixed(2)} s of audio, answered in ${took} s.`);
    results.dataset.state = "done";
  } catch (e) {
    if (mine !== job) return;
    results.dataset.state = "error";
    results.hidden = true; // no earlier file's answer beside this file's error
    showError(e.message || String(e));
  }
}

function render(name, answer) {
  $("results").hidden = false;
  $("result-title").textContent = `· ${name}`;
  const list = $("topk");
  list.replaceChildren(
    ...answer.labels.slice(0, BARS).map(({ label, score }) => {
      const li = document.createElement("li");
      li.className = "row";
      li.innerHTML = '<span class="label"></span><span class="bar"><span class="fill"></span></span><span class="score"></span>';
      li.querySelector(".label").textContent = label;
      li.querySelector(".label").title = label;
      li.querySelector(".fill").style.width = `${(Math.min(Math.max(score, 0), 1) * 100).toFixed(1)}%`;
      li.querySelector(".score").textContent = score.toFixed(3);
      return li;
    }),
  );
  $("score-note").textContent = info.multi_label
    ? "Multi-label: each score is its class's own sigmoid (0..1); several can be high."
    : "Single-label: softmax scores over all classes (they sum to 1).";
  if (answer.spectrogram) drawSpectrogram($("spectrogram"), answer.spectrogram);
  timeline(answer);
}

function timeline(answer) {
  const card = $("timeline-card");
  const windows = answer.windows || [];
  const events = answer.events;
  card.hidden = !(windows.length > 1 || events);
  if (card.hidden) return;
  let rows = answer.labels.slice(0, ROWS).map((l) => l.label);
  if (events) {
    // the labels that have events first (by first onset), then the top labels
    const evented = [...new Set([...events].sort((a, b) => a.onset - b.onset).map((e) => e.label))];
    rows = [...new Set([...evented, ...rows])].slice(0, Math.max(ROWS, Math.min(evented.length, MAX_ROWS)));
  }
  const index = new Map(rows.map((l, i) => [l, i]));
  const cells = [];
  windows.forEach((w, i) => {
    const end = i + 1 < windows.length ? windows[i + 1].start : w.end; // overlapping windows: up to the next
    for (const { label, score } of w.labels) {
      if (index.has(label)) cells.push({ row: index.get(label), start: w.start, end, score });
    }
  });
  const boxes = (events || [])
    .filter((e) => index.has(e.label))
    .map((e) => ({ row: index.get(e.label), start: e.onset, end: e.offset }));
  const shown = boxes.length < (events || []).length ? `, ${boxes.length} on the first ${rows.length} labels` : "";
  $("timeline-title").textContent = events
    ? `Detected events (${events.length}${shown})`
    : `Labels over time: ${windows.length} windows of ${+(windows[0].end - windows[0].start).toFixed(2)} s, shaded by score`;
  drawTimeline($("timeline"), { rows, duration: answer.duration, cells, boxes });
}

async function record() {
  showError("");
  try {
    recorder = await startRecording(info?.sample_rate || 16000, info?.serve?.max_seconds || 60, (s) => {
      $("record-time").textContent = `recording ${s.toFixed(1)} s`;
      $("record-time").dataset.seconds = s;
    });
  } catch (e) {
    showError(e.message || String(e));
    return;
  }
  recorder.onLimit = stop;
  $("record").disabled = true;
  $("stop").disabled = false;
  status("Recording… press Stop to classify.");
}

async function stop() {
  if (!recorder) return;
  const r = recorder;
  recorder = null;
  $("record").disabled = false;
  $("stop").disabled = true;
  const { blob, seconds } = await r.stop();
  $("record-time").textContent = `recorded ${seconds.toFixed(1)} s`;
  const stamp = new Date().toISOString().slice(11, 19).replaceAll(":", "");
  const name = `recording-${stamp}.wav`;
  const link = $("recording-link"); // the WAV that was sent, to keep or to check
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.hidden = false;
  classify(new File([blob], name, { type: "audio/wav" }));
}

function wire() {
  $("file-input").addEventListener("change", (e) => {
    if (e.target.files[0]) classify(e.target.files[0]);
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
  });
  // a file dropped beside the box is not opened by the browser in place of the page
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (e) => e.preventDefault());
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") $("file-input").click();
  });
  $("key-change").addEventListener("click", askKey);
  $("record").addEventListener("click", record);
  $("stop").addEventListener("click", stop);
  $("key-save").addEventListener("click", () => {
    sessionStorage.setItem(KEY, $("api-key").value.trim());
    loadInfo().catch((e) => showError(e.message || String(e)));
  });
  $("api-key").addEventListener("keydown", (e) => {
    if (e.key === "Enter") $("key-save").click();
  });
}

wire();
loadInfo().catch((e) => showError(`cannot reach the service: ${e.message || e}`));
