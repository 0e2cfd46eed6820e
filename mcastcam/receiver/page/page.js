"use strict";
const statusBox = document.getElementById("status");
function pct(lost, got) {
  const expected = lost + got;
  return expected ? (100 * lost / expected).toFixed(2) + " %" : "0 %";
}
function show(s) {
  const lines = [];
  const streams = s.streams || [];
  const why = s.offline_reason ? " (" + s.offline_reason + ")" : "";
  lines.push((s.online ? "online" : "OFFLINE" + why) + "  |  " + streams.length +
             " stream(s), " + (s.clients_count || 0) + " client(s)");
  for (const st of streams) {
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
