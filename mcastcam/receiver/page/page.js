"use strict";
// The receiver's page: polls /status once a second (live numbers and their history), asks
// /senders every 10 s (the picker), and shows /stream (the "no signal" frame while there is none).
const $ = (id) => document.getElementById(id);
const HISTORY = 120;  // samples (seconds) kept per plot
const BADGES = {live: "LIVE", stale: "STALE", no_frames: "NO FRAMES", offline: "OFFLINE"};
const base = new URL(".", location.href);
const streamUrl = new URL("stream", base).href;
const snapshotUrl = new URL("snapshot", base).href;
$("url-stream").setAttribute("value", streamUrl);
$("url-snapshot").setAttribute("value", snapshotUrl);

// -- the live numbers: value + history plot ----------------------------------------------
const METRICS = [
  {key: "fps", label: "frames/s", fmt: (v) => v.toFixed(1)},
  {key: "loss", label: "loss %", fmt: (v) => v.toFixed(2)},
  {key: "repaired", label: "repaired frames/s", fmt: (v) => v.toFixed(1)},
  {key: "latency", label: "latency ms", fmt: (v) => v.toFixed(0)},
  {key: "bitrate", label: "Mbit/s", fmt: (v) => v.toFixed(2)},
  {key: "clients", label: "clients", fmt: (v) => v.toFixed(0)},
];
const series = {};
for (const m of METRICS) {
  const box = document.createElement("div");
  box.className = "stat";
  box.id = "stat-" + m.key;
  box.innerHTML = '<div class="label"></div><div class="value">–</div><canvas width="150" height="30"></canvas>';
  box.querySelector(".label").textContent = m.label;
  $("stats").appendChild(box);
  series[m.key] = {m, values: [], value: box.querySelector(".value"), canvas: box.querySelector("canvas")};
}

function plot(s) {
  const c = s.canvas, ctx = c.getContext("2d");
  const w = c.width, h = c.height, vals = s.values;
  ctx.clearRect(0, 0, w, h);
  const known = vals.filter((v) => v != null);
  if (!known.length) return;
  const max = Math.max(...known, 1e-9);
  ctx.strokeStyle = "#6af";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  let pen = false;
  vals.forEach((v, i) => {
    if (v == null) { pen = false; return; }
    const x = w - (vals.length - 1 - i) * (w / (HISTORY - 1));
    const y = h - 2 - (v / max) * (h - 4);
    if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    pen = true;
  });
  ctx.stroke();
}

function record(key, v) {
  const s = series[key];
  s.values.push(v);
  if (s.values.length > HISTORY) s.values.shift();
  s.value.textContent = v == null ? "n/a" : s.m.fmt(v);
  plot(s);
}

// Rates are taken over the last RATE_WINDOW polls, on the receiver's clock (/status "now"),
// so a late or early poll does not make the numbers jump.
const RATE_WINDOW = 5;
let raw = [];  // [{t, sid, frames, datagrams, lost, bytes, repaired}], oldest first
function sample(s, followed) {
  const t = s.now != null ? s.now : performance.now() / 1000;  // the receiver's clock
  const cur = followed && {
    t, sid: followed.stream_id, frames: followed.frames_completed || 0,
    datagrams: followed.datagrams || 0, lost: followed.lost || 0, bytes: followed.bytes || 0,
    repaired: "repaired_fec" in followed || "repaired_nack" in followed
      ? (followed.repaired_fec || 0) + (followed.repaired_nack || 0) : null,
  };
  raw = cur ? raw.filter((r) => r.sid === cur.sid && r.t < t) : [];
  const p = raw.length ? raw[0] : null;
  const dt = p ? t - p.t : 0;
  record("fps", p ? (cur.frames - p.frames) / dt : null);
  if (p) {
    const got = cur.datagrams - p.datagrams, lost = cur.lost - p.lost;
    record("loss", got + lost > 0 ? 100 * lost / (got + lost) : 0);
  } else {
    record("loss", null);
  }
  record("repaired", p && cur.repaired != null && p.repaired != null ? (cur.repaired - p.repaired) / dt : null);
  record("latency", s.state === "live" && s.latest_latency != null ? 1000 * s.latest_latency : null);
  record("bitrate", p ? (cur.bytes - p.bytes) * 8 / dt / 1e6 : null);
  record("clients", s.clients_count || 0);
  if (cur) raw.push(cur);
  if (raw.length > RATE_WINDOW) raw.shift();
}

// -- status --------------------------------------------------------------------------
function pct(lost, got) {
  const expected = lost + got;
  return expected ? (100 * lost / expected).toFixed(2) + " %" : "0 %";
}

function details(s) {
  const lines = [];
  for (const w of s.warnings || []) lines.push("WARNING: " + w);
  if (s.receiving) lines.push("receiving " + s.receiving);
  for (const st of s.streams || []) {
    const dropped = Object.entries(st.frames_dropped || {}).map(([k, v]) => k + " " + v).join(", ");
    const errors = Object.entries(st.decode_errors || {}).map(([k, v]) => k + " " + v).join(", ");
    lines.push((st.followed ? "> " : "  ") + (st.name || "?") + " [" + st.stream_id + "] " +
               st.liveness + "  " + st.width + "x" + st.height + " @ " + st.fps + " fps" +
               "  frames " + st.frames_completed + (dropped ? "  dropped: " + dropped : "") +
               "  loss " + pct(st.lost, st.datagrams) + (errors ? "  refused: " + errors : ""));
    lines.push("      complete " + st.complete + "  repaired by FEC " + st.repaired_fec +
               "  after NACK " + st.repaired_nack + "  unrepairable " + st.unrepairable +
               "  corrupt " + st.corrupt + "  repair datagrams " + st.repair_datagrams +
               " (" + (100 * (st.repair_overhead || 0)).toFixed(1) + " %)");
  }
  if (s.nack) {
    lines.push("NACKs sent " + s.nack.nacks + " (" + s.nack.entries + " frames)");
  }
  lines.push("clients:");
  for (const c of s.clients || []) {
    lines.push("  " + c.kind + " " + c.address + "  " + c.fps + " fps  sent " +
               c.frames_sent + "  skipped " + c.frames_skipped);
  }
  return lines.join("\n");
}

function setBadge(state, reason) {
  const badge = $("badge");
  badge.className = "badge " + (BADGES[state] ? state : "offline");
  badge.textContent = BADGES[state] || state.toUpperCase();
  $("reason").textContent = reason || "";
  $("reason").title = reason || "";
}

function showRecording(r) {
  const rec = $("rec");
  if (!r) { rec.hidden = true; return; }
  rec.hidden = false;
  rec.textContent = r.state === "recording" ? "● REC" : "REC " + r.state.toUpperCase();
  rec.title = r.state === "recording"
    ? (r.segment || "") + "  " + (r.frames || 0) + " frames, " + (r.bytes || 0) + " bytes"
    : (r.stopped_reason || "");
}

function show(s) {
  const streams = s.streams || [];
  const followed = streams.find((st) => st.followed);
  // state: live | no_frames (sender alive, no frame completes) | stale | offline
  const state = s.state || (s.online ? "live" : "offline");
  setBadge(state, s.state_reason || s.offline_reason || "");
  const name = followed ? (followed.name || followed.stream_id) : "mcastcam";
  $("name").textContent = name;
  document.title = (state === "live" ? "" : "(" + (BADGES[state] || state) + ") ") + name + " – mcastcam";
  showRecording(s.recording);
  $("status").textContent = details(s);
  sample(s, followed);
}

async function poll() {
  try {
    const r = await fetch("status", {cache: "no-store"});
    show(await r.json());
  } catch (e) {
    setBadge("offline", "receiver unreachable (" + e + ")");
    $("status").textContent = "status: unavailable (" + e + ")";
    raw = [];
  }
}

// -- senders (discovery) -------------------------------------------------------------
let found = [];
async function pollSenders() {
  const note = $("senders-note"), picker = $("picker");
  try {
    const r = await fetch("senders", {cache: "no-store"});
    const body = await r.json();
    found = body.senders || [];
    const chosen = picker.value;
    picker.innerHTML = "";
    const head = document.createElement("option");
    head.value = "";
    head.textContent = found.length ? "pick a sender (" + found.length + " found)" :
      (body.available ? "(none found yet)" : "(discovery unavailable)");
    picker.appendChild(head);
    for (const f of found) {
      const o = document.createElement("option");
      o.value = f.stream_id;
      o.textContent = (f.name || "-") + "  " + f.width + "x" + f.height + " @ " + f.fps + " fps  " +
                      f.host + "  [" + f.stream_id + "]";
      picker.appendChild(o);
    }
    picker.value = found.some((f) => f.stream_id === chosen) ? chosen : "";
    note.textContent = body.available ? (body.reason || "updated " + (body.age ?? 0) + " s ago") : body.reason;
    choose();
  } catch (e) {
    note.textContent = "senders: unavailable (" + e + ")";
  }
}

function choose() {
  const f = found.find((x) => x.stream_id === $("picker").value);
  $("follow").hidden = !f;
  if (f) {
    $("follow-cmd").value = f.command;
    $("senders-note").textContent = "This receiver follows one stream, chosen at start; to watch " +
      (f.name || f.stream_id) + ", run:";
  }
}
$("picker").addEventListener("change", choose);

// -- buttons -------------------------------------------------------------------------
async function copy(input, button) {
  input.select();
  let ok = false;
  try {
    await navigator.clipboard.writeText(input.value);
    ok = true;
  } catch (e) {
    ok = document.execCommand && document.execCommand("copy");
  }
  button.textContent = ok ? "Copied" : "Select+Ctrl-C";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}
for (const b of document.querySelectorAll("button[data-copy]")) {
  b.addEventListener("click", () => copy($(b.dataset.copy), b));
}

$("fullscreen").addEventListener("click", () => {
  const box = $("video");
  if (document.fullscreenElement) document.exitFullscreen();
  else if (box.requestFullscreen) box.requestFullscreen();
});

$("snap").addEventListener("click", async () => {
  const r = await fetch("snapshot", {cache: "no-store"});
  if (!r.ok) {
    $("reason").textContent = "snapshot: " + (await r.text()).trim();
    return;
  }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await r.blob());
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  a.download = ($("name").textContent || "mcastcam") + "-" + stamp + ".jpg";
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
});

// the stream ends when the receiver restarts: reconnect every 2 s until it answers again
$("view").addEventListener("error", () => {
  setTimeout(() => { $("view").src = "stream?advance_headers=1&t=" + Date.now(); }, 2000);
});

poll();
pollSenders();
setInterval(poll, 1000);
setInterval(pollSenders, 10000);
