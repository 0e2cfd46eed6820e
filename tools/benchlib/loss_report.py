"""Writes the "Loss repair (issue #11)" section of docs/benchmarks.md from ``loss.json``.

``tools/bench report`` calls :func:`run`; the tables, the plot
(``docs/benchmarks-plots/loss-repair.png``) and the target checks come from the cached
``bench loss`` result. Only the text between the two markers is replaced; the prose around
it (findings, tunables) is written by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import common as c

START = "<!-- bench-loss:start (tools/bench loss / report writes this part) -->"
END = "<!-- bench-loss:end -->"
DOC = c.ROOT / "docs" / "benchmarks.md"
PLOTS = c.ROOT / "docs" / "benchmarks-plots"
NAMES = {
    "mcastcam": "mcastcam fec auto + NACK",
    "mcastcam-nonack": "mcastcam fec auto, no NACK",
    "gst-ulpfec": "GStreamer ULPFEC 20 %",
    "gst-st2022": "GStreamer ST 2022-1 10×5",
}
CLIP_NAMES = {"640x480": "640×480", "720p": "1280×720", "1080p": "1080×1920 (fox)"}
FRAME_MS = 1000 / 30


def _cond(t: dict[str, Any]) -> str:
    if t["kind"] == "burst":
        return f"burst {t['loss']:.0%} (mean {t['burst']:g})"
    return f"{100 * t['loss']:g} %"


def _f(v: Any, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def _table(trials: list[dict[str, Any]], clip: str) -> list[str]:
    rows = [t for t in trials if t["clip"] == clip]
    lines = [
        "| loss (achieved) | system | frames complete | corrupt | extra datagrams | "
        "latency p50 / p99 (ms) | CPU/frame send / recv (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in rows:
        if "error" in t:
            lines.append(f"| {_cond(t)} | {NAMES[t['system']]} | error: {t['error'][:80]} |||||")
            continue
        ach = t.get("achieved_loss")
        mb = f", burst {t['mean_burst']:.1f}" if t.get("mean_burst") else ""
        name = NAMES[t["system"]]
        if t.get("previous_commit"):
            name += f" (run of `{t['previous_commit'][:7]}`)"
        lines.append(
            f"| {_cond(t)} ({_f(None if ach is None else 100 * ach, '.2f')} %{mb}) "
            f"| {name} | {t.get('delivered', 0)}/{t['sent']} = "
            f"{100 * t['fraction']:.1f} % | {t.get('corrupt')} | {_f(t.get('extra_pct'))} % "
            f"| {_f(t.get('lat_p50'))} / {_f(t.get('lat_p99'))} "
            f"| {_f(t.get('send_cpu_ms'), '.2f')} / {_f(t.get('recv_cpu_ms'), '.2f')} |"
        )
    return lines


def _plot(r: dict[str, Any]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    clips = [k for k in CLIP_NAMES if any(t["clip"] == k for t in r["trials"])]
    fig, axes = plt.subplots(1, len(clips), figsize=(5 * len(clips), 4), sharey=True)
    axes = axes if len(clips) > 1 else [axes]
    for ax, clip in zip(axes, clips, strict=True):
        for system in [s for s in NAMES if any(t["system"] == s for t in r["trials"])]:
            prev = next(
                (t.get("previous_commit") for t in r["trials"] if t["system"] == system), None
            )
            label = NAMES[system] + (f" (run of {prev[:7]})" if prev else "")
            pts = [
                (100 * t["loss"], 100 * t["fraction"])
                for t in r["trials"]
                if t["clip"] == clip and t["system"] == system and t["kind"] == "random"
            ]
            color = None
            if pts:
                (line,) = ax.plot(*zip(*pts, strict=True), marker="o", label=label)
                color = line.get_color()
            burst = [
                100 * t["fraction"]
                for t in r["trials"]
                if t["clip"] == clip and t["system"] == system and t["kind"] == "burst"
            ]
            if burst:
                ax.scatter([2.0], burst, marker="x", s=60, color=color)
        ax.set_title(CLIP_NAMES[clip])
        ax.set_xlabel("random datagram loss (%) (×: burst model, 2 % average)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("frames complete (%)")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Loss repair, netns lab, 30 fps, {r['count']} frames per run")
    fig.tight_layout()
    PLOTS.mkdir(parents=True, exist_ok=True)
    out = PLOTS / "loss-repair.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out.name


def _targets(trials: list[dict[str, Any]]) -> list[str]:
    mc = [t for t in trials if t["system"] == "mcastcam" and "error" not in t]

    def sel(kind: str, loss: float) -> list[dict[str, Any]]:
        return [t for t in mc if t["kind"] == kind and abs(t["loss"] - loss) < 1e-9]

    def line(name: str, ok: bool | None, detail: str) -> str:
        verdict = "–" if ok is None else ("**met**" if ok else "**missed**")
        return f"| {name} | {verdict} | {detail} |"

    out = ["| target (mcastcam fec auto + NACK) | verdict | measured |", "|---|---|---|"]
    for loss, goal in ((0.01, 99.9), (0.05, 99.5)):
        rows = sel("random", loss)
        out.append(line(
            f"≥ {goal} % frames at {loss:.0%} random loss, every resolution",
            all(100 * t["fraction"] >= goal for t in rows) if rows else None,
            ", ".join(f"{CLIP_NAMES[t['clip']]} {100 * t['fraction']:.2f} %" for t in rows),
        ))  # fmt: skip
    rows = sel("burst", 0.02)
    out.append(line(
        "≥ 99 % under the burst model (2 %)",
        all(100 * t["fraction"] >= 99 for t in rows) if rows else None,
        ", ".join(f"{CLIP_NAMES[t['clip']]} {100 * t['fraction']:.2f} %" for t in rows),
    ))  # fmt: skip
    for loss, goal in ((0.05, 25.0), (0.0, 3.0)):
        rows = [t for t in sel("random", loss) if t.get("extra_pct") is not None]
        out.append(line(
            f"extra datagrams ≤ {goal:g} % at {loss:.0%} loss",
            all(t["extra_pct"] <= goal for t in rows) if rows else None,
            ", ".join(f"{CLIP_NAMES[t['clip']]} {t['extra_pct']:.1f} %" for t in rows),
        ))  # fmt: skip
    rows = [t for t in mc if t.get("lat_p99") is not None]
    worst = max(rows, key=lambda t: t["lat_p99"]) if rows else None
    out.append(line(
        f"latency p99 ≤ {FRAME_MS:.1f} ms (one frame at 30 fps), every condition",
        all(t["lat_p99"] <= FRAME_MS for t in rows) if rows else None,
        "" if worst is None else f"worst p99 {worst['lat_p99']:.1f} ms "
        f"({CLIP_NAMES[worst['clip']]}, {_cond(worst)}); over "
        f"{FRAME_MS:.1f} ms in {sum(t['lat_p99'] > FRAME_MS for t in rows)} of {len(rows)} runs",
    ))  # fmt: skip
    every = [t for t in trials if t["system"].startswith("mcastcam") and "error" not in t]
    bad = sum(t.get("corrupt") or 0 for t in every)
    out.append(line(
        "0 corrupt frames (both mcastcam variants, every run)",
        bad == 0 and all(t.get("corrupt") is not None for t in every),
        f"{bad} corrupt; {sum(t.get('client_exact') or 0 for t in every)} frames checked "
        "byte for byte at the TCP re-serve",
    ))  # fmt: skip
    return out


def write(r: dict[str, Any]) -> Path | None:
    """Replace the text between the markers in docs/benchmarks.md (None: no markers)."""
    m = c.load("machine") or {}
    plot = _plot(r)
    L = [
        START,
        "",
        f"`tools/bench loss{' --quick' if r.get('quick') else ''}` at commit "
        f"`{str(r.get('mcastcam_commit', '?'))[:7]}`, {m.get('date', '?')}: "
        f"{r['count']} frames per run at 30 fps, {r.get('wall_s', '?')} s in all. Machine: "
        f"`{m.get('cpu', '?')}`, nproc {m.get('nproc', '?')}, Linux {m.get('kernel', '?')}, "
        f"{m.get('gstreamer', '?')}; load average at the start "
        f"{', '.join(f'{x:.2f}' for x in m.get('loadavg', []))} (shared machine: CPU figures "
        "are single runs under noise).",
        "",
    ]
    prev = r.get("previous")
    if prev:
        L += [
            f"Not rerun: {', '.join(NAMES[s] for s in prev['systems'])}; their rows come from "
            f"`{prev['path']}` (the run at commit `{prev['commit'][:7]}`, which may carry rows "
            "of earlier runs itself; same machine, same frames and loss rules), each marked "
            "“run of” the commit that ran it.",
            "",
        ]
    for clip in CLIP_NAMES:
        if any(t["clip"] == clip for t in r["trials"]):
            L += [f"#### {CLIP_NAMES[clip]}", "", *_table(r["trials"], clip), ""]
    if plot:
        L += [f"![loss repair](benchmarks-plots/{plot})", ""]
    L += ["#### Targets", "", *_targets(r["trials"]), "", END]
    text = DOC.read_text()
    if START not in text or END not in text:
        return None
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(head + "\n".join(L) + tail)
    return DOC


def run() -> dict[str, Any]:
    r = c.load("loss") or {}
    if not r.get("trials"):
        return {"loss_report": "no loss.json with trials"}
    return {"loss_report": str(write(r))}
