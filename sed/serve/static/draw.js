// Canvas drawing for the page: the spectrogram (with time/frequency axes and a dB colour bar) and the
// timeline of labels over time (window scores as shaded cells, or detected events as boxes).
// No library: the 2D canvas API only, so the page works offline.

const FONT = "13px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
const INK = "#1f2933";
const GRID = "#c8d0d9";
const ACCENT = [37, 99, 235]; // the timeline's score colour (blue-600)
// viridis at five stops, interpolated linearly: perceptually ordered and readable in grey
const STOPS = [
  [68, 1, 84],
  [59, 82, 139],
  [33, 145, 140],
  [94, 201, 98],
  [253, 231, 37],
];

/** [r, g, b] of the colour map at t in [0, 1]. */
export function colour(t) {
  const x = Math.min(Math.max(t, 0), 1) * (STOPS.length - 1);
  const i = Math.min(Math.floor(x), STOPS.length - 2);
  const f = x - i;
  return STOPS[i].map((c, k) => Math.round(c + f * (STOPS[i + 1][k] - c)));
}

/** Size the canvas' backing store to its CSS box (sharp on HiDPI screens); returns the 2D context in CSS px. */
function fit(canvas, cssHeight) {
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  canvas.style.height = `${cssHeight}px`;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(cssHeight * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, cssHeight);
  ctx.font = FONT;
  return { ctx, width, height: cssHeight };
}

/** About `count` round tick values covering [0, max] (steps of 1, 2 or 5 times a power of ten). */
export function ticks(max, count) {
  if (!(max > 0)) return [0];
  const raw = max / Math.max(count, 1);
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
  const out = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) out.push(Number(v.toFixed(10)));
  return out;
}

function fmt(v) {
  return Number.isInteger(v) ? String(v) : v.toFixed(Math.min(3, Math.max(1, -Math.floor(Math.log10(v)))));
}

/** The time axis under a plot box: ticks in seconds and the title "Time (s)". */
function timeAxis(ctx, box, seconds) {
  ctx.fillStyle = INK;
  ctx.strokeStyle = INK;
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const t of ticks(seconds, Math.max(2, Math.floor(box.w / 90)))) {
    const x = box.x + (t / seconds) * box.w;
    ctx.beginPath();
    ctx.moveTo(x, box.y + box.h);
    ctx.lineTo(x, box.y + box.h + 5);
    ctx.stroke();
    ctx.fillText(fmt(t), x, box.y + box.h + 7);
  }
  ctx.fillText("Time (s)", box.x + box.w / 2, box.y + box.h + 24);
}

const mel = (hz) => 2595 * Math.log10(1 + hz / 700);

/**
 * Draw the service's spectrogram answer ({rows: [[uint8...]...] low frequency first, seconds_per_column,
 * max_hz, db_range, optional scale "mel"}) with labelled axes: time in s, frequency in Hz, a dB colour bar.
 */
export function drawSpectrogram(canvas, spec) {
  const { ctx, width, height } = fit(canvas, 206);
  const rows = spec.rows.length;
  const cols = rows ? spec.rows[0].length : 0;
  const box = { x: 70, y: 12, w: width - 70 - 86, h: height - 12 - 46 };
  if (!rows || !cols) {
    ctx.fillStyle = INK;
    ctx.fillText("no spectrogram in the answer", box.x, box.y + 20);
    return;
  }
  const img = new ImageData(cols, rows);
  for (let r = 0; r < rows; r++) {
    const row = spec.rows[r];
    const y = rows - 1 - r; // row 0 is the lowest frequency: the bottom of the image
    for (let c = 0; c < cols; c++) {
      const [red, green, blue] = colour(row[c] / 255);
      const o = (y * cols + c) * 4;
      img.data[o] = red;
      img.data[o + 1] = green;
      img.data[o + 2] = blue;
      img.data[o + 3] = 255;
    }
  }
  const tile = document.createElement("canvas");
  tile.width = cols;
  tile.height = rows;
  tile.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = cols < box.w; // smooth when stretched, not when squeezed
  ctx.drawImage(tile, box.x, box.y, box.w, box.h);
  ctx.strokeStyle = INK;
  ctx.strokeRect(box.x, box.y, box.w, box.h);

  const seconds = cols * spec.seconds_per_column;
  timeAxis(ctx, box, seconds);
  // frequency axis: Hz, placed linearly or on the mel scale as the rows are
  const maxHz = spec.max_hz;
  const isMel = spec.scale === "mel";
  const pos = (hz) => (isMel ? mel(hz) / mel(maxHz) : hz / maxHz);
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const hzTicks = isMel ? [0, 250, 500, 1000, 2000, 4000, 8000, 16000].filter((f) => f <= maxHz) : ticks(maxHz, 5);
  for (const f of hzTicks) {
    const y = box.y + box.h - pos(f) * box.h;
    ctx.beginPath();
    ctx.moveTo(box.x - 5, y);
    ctx.lineTo(box.x, y);
    ctx.stroke();
    ctx.fillText(String(f), box.x - 7, y);
  }
  ctx.save();
  ctx.translate(14, box.y + box.h / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText(isMel ? "Frequency (Hz, mel scale)" : "Frequency (Hz)", 0, 0);
  ctx.restore();
  colourBar(ctx, { x: box.x + box.w + 16, y: box.y, w: 14, h: box.h }, spec.db_range);
}

function colourBar(ctx, bar, [lo, hi]) {
  gradientKey(ctx, bar, (t) => `rgb(${colour(t).join(",")})`, Math.round(hi), Math.round(lo));
  ctx.fillText("dB", bar.x + bar.w + 4, bar.y + bar.h / 2);
}

// A vertical key: `fill(t)` for t from 1 (top) to 0 (bottom), framed, its ends labelled `top` and `bottom`;
// leaves the context ready for the unit's text beside it.
function gradientKey(ctx, bar, fill, top, bottom) {
  for (let i = 0; i < bar.h; i++) {
    ctx.fillStyle = fill(1 - i / (bar.h - 1));
    ctx.fillRect(bar.x, bar.y + i, bar.w, 1);
  }
  ctx.strokeStyle = INK;
  ctx.strokeRect(bar.x, bar.y, bar.w, bar.h);
  ctx.fillStyle = INK;
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  ctx.fillText(`${top}`, bar.x + bar.w + 4, bar.y + 6);
  ctx.fillText(`${bottom}`, bar.x + bar.w + 4, bar.y + bar.h - 6);
}

function ellipsize(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let s = text;
  while (s.length > 1 && ctx.measureText(`${s}…`).width > width) s = s.slice(0, -1);
  return `${s}…`;
}

/**
 * The timeline: one row per label, x = seconds. `cells` are {row, start, end, score} (window scores, shaded by
 * score 0..1) and `boxes` {row, start, end} (detected events, drawn as boxes). Returns nothing; the row labels
 * are written to canvas.dataset.rows (JSON) for whoever inspects the page.
 */
export function drawTimeline(canvas, { rows, duration, cells = [], boxes = [] }) {
  const rowH = 22;
  const { ctx, width } = fit(canvas, 12 + rows.length * rowH + 46);
  const box = { x: 190, y: 12, w: width - 190 - 86, h: rows.length * rowH };
  canvas.dataset.rows = JSON.stringify(rows);
  ctx.fillStyle = "#f4f6f8";
  ctx.fillRect(box.x, box.y, box.w, box.h);
  // whole pixels: adjacent cells meet without anti-aliased seams
  const X = (t) => Math.round(box.x + (Math.min(Math.max(t, 0), duration) / duration) * box.w);
  for (const c of cells) {
    ctx.fillStyle = `rgba(${ACCENT.join(",")},${Math.min(Math.max(c.score, 0), 1).toFixed(3)})`;
    ctx.fillRect(X(c.start), box.y + c.row * rowH + 2, Math.max(1, X(c.end) - X(c.start)), rowH - 4);
  }
  for (const b of boxes) {
    const x = X(b.start);
    const w = Math.max(2, X(b.end) - x);
    ctx.fillStyle = `rgba(${ACCENT.join(",")},0.75)`;
    ctx.fillRect(x, box.y + b.row * rowH + 4, w, rowH - 8);
    ctx.strokeStyle = "#1e3a8a";
    ctx.strokeRect(x, box.y + b.row * rowH + 4, w, rowH - 8);
  }
  ctx.strokeStyle = GRID;
  ctx.fillStyle = INK;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  rows.forEach((label, i) => {
    if (i) {
      ctx.beginPath();
      ctx.moveTo(box.x, box.y + i * rowH);
      ctx.lineTo(box.x + box.w, box.y + i * rowH);
      ctx.stroke();
    }
    ctx.fillText(ellipsize(ctx, label, box.x - 14), box.x - 8, box.y + i * rowH + rowH / 2);
  });
  ctx.strokeStyle = INK;
  ctx.strokeRect(box.x, box.y, box.w, box.h);
  timeAxis(ctx, box, duration);
  if (cells.length) scoreKey(ctx, { x: box.x + box.w + 16, y: box.y, w: 14, h: box.h });
}

function scoreKey(ctx, bar) {
  gradientKey(ctx, bar, (t) => `rgba(${ACCENT.join(",")},${t.toFixed(3)})`, 1, 0);
  ctx.save();
  ctx.translate(bar.x + bar.w + 26, bar.y + bar.h / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText("score", 0, 0);
  ctx.restore();
}
