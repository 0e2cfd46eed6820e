"use strict";
const statusBox = document.getElementById("status");
function pct(lost, got) {
  const expected = lost + got;
  return expected ? (100 * lost / expected).toFixed(2) + " %" : "0 %";
}
function show(s) {
  const lines = [];
  const streams = s.streams || [];
  // state: live | no_frames (sender alive, no frame completes) | stale | offline
  const state = s.state || (s.online ? "live" : "offline");
  const why = s.state_reason || s.offline_reason || "";
  const age = s.frame_age == null ? "" : "  |  newest frame " + s.frame_age.toFixed(1) + " s old";
  lines.push((state === "live" ? "live" : state.toUpperCase().replace("_", " ")) +
             (why ? " (" + why + ")" : "") + age + "  |  " + streams.length +
             " stream(s), " + (s.clients_count || 0) + " client(s)");
  for (const w of s.warnings || []) {
    lines.push("WARNING: " + w);
  }
  for (const st of streams) {
    const dropped = Object.entries(st.frames_dropped || {}).map(([k, v]) => k + " " + v).join(", ");
    const errors = Object.entries(st.decode_errors || {}).map(([k, v]) => k + " " + v).join(", ");
    lines.push((st.followed ? "> " : "  ") + (st.name || "?") + " [" + st.stream_id + "] " +
               st.liveness + "  " + st.width + "x" + st.height + " @ " + st.fps + " fps" +
               "  frames " + st.frames_completed + (dropped ? "  dropped: " + dropped : "") +
               "  loss " + pct(st.lost, st.datagrams) + (errors ? "  refused: " + errors : ""));
  }
  lines.push("clients:");
  for (const c of s.clients || []) {
    lines.push("  " + c.kind + " " + c.address + "  " + c.fps + " fps  sent " +
               c.frames_sent + "  skipped " + c.frames_skipped);
  }
  statusBox.textContent = lines.join("\n");
}
async function poll() {
  try {
    const r = await fetch("status", {cache: "no-store"});
    show(await r.json());
  } catch (e) {
    statusBox.textContent = "status: unavailable (" + e + ")";
  }
}
poll();
setInterval(poll, 1000);
