"""``hpacs bench all``: one page that answers the sizing question from every scenario's
measured sizing section (``DIR/sizing.md`` beside the scenario reports)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.suite import common


def lines(reports: dict[str, dict]) -> list[str]:
    first = next(iter(reports.values()))
    out = common.header_md(first, "hpacs sizing summary")
    out += runs(reports)
    t = common.TARGETS
    out += [f"Targets: C-STORE p95 < {t['c_store_p95_ms']:.0f} ms, viewer series-open p95 < "
            f"{t['series_open_p95_ms']:.0f} ms, C-FIND and QIDO p95 < "
            f"{t['c_find_p95_ms']:.0f} ms. Details and plots: "
            + ", ".join(f"[{n}]({n}.md)" for n in reports) + ".", "",
            "| question | answer (hpacs) | from |", "|---|---|---|"]
    ing = reports.get("ingest", {}).get("sizing") or {}
    if ing:
        out += [
            f"| ingest capacity | {ing['instances_per_s']:.1f} instances/s, "
            f"{ing['mb_per_s']:.1f} MB/s ({ing['instances_per_s_per_core']:.1f} per core) "
            "| ingest |",
            f"| instances per day | {ing['instances_per_day'] / 1e6:.2f} M "
            f"({ing['gb_per_day']:.0f} GB/day) at peak around the clock | ingest |",
            f"| days of peak ingest per TB of hot store | "
            f"{common.fmt(ing['hot_store_days_per_tb'], 1)} | ingest |",
            f"| modalities sending at once within target | "
            f"{'>= ' if ing['modalities_target_open_ended'] else ''}"
            f"{ing['modalities_within_target']} | ingest |",
            f"| first resource to saturate (ingest) | {_sat(ing)} | ingest |"]
    disk = reports.get("ingest", {}).get("disk_ceiling")
    if disk:
        one, many = disk["streams"][0], disk["streams"][-1]
        share = ing.get("peak_over_disk_ceiling")
        out.append(
            f"| the disk's durable-write ceiling | {one['files_per_s']:.0f} files/s of "
            f"{disk['size'] / 1e3:.0f} KB by one stream, {many['files_per_s']:.0f} by "
            f"{many['streams']}"
            + (f"; ingest peak = {share * 100:.0f} % of it" if share is not None else "")
            + " | ingest |")
    ret = reports.get("retrieve", {}).get("sizing") or {}
    if ret:
        out += [f"| concurrent viewers within target | {'>= ' if ret['open_ended'] else ''}"
                f"{ret['viewers_within_target']} | retrieve |",
                f"| first resource to saturate (viewers) | {_sat(ret)} | retrieve |"]
    mix = reports.get("mixed", {}).get("sizing") or {}
    if mix:
        out += [f"| {mix['viewers']} viewers while {mix['rate_achieved']:.1f} instances/s "
                f"arrive | series open p95 {mix['series_open_p95_ms']:.0f} ms "
                f"({'within' if mix['within_target'] else 'OVER'} target) | mixed |"]
    q = reports.get("query", {}).get("sizing") or {}
    if q:
        out += [f"| largest index within query targets | {q['largest_size_within_target']} "
                f"instances (largest measured {q['largest_size']}) | query |"]
    out += versus(reports)
    others = {n: r.get("sizing", {}).get("other_cores") or 0.0 for n, r in reports.items()}
    worst = max(others, key=others.get)
    out += ["", *common.distortion(others[worst], worst)]
    if any(r.get("quick") for r in reports.values()):
        out += ["", "Quick mode: tiny sizes; these answers only show the format."]
    return out


def runs(reports: dict[str, dict]) -> list[str]:
    """When the scenarios come from separate runs (one scenario run again into the same
    directory), when and from which version each one is: the header above is the first's."""
    seen = {(r.get("date"), r.get("command"), r.get("machine", {}).get("hpacs"))
            for r in reports.values()}
    if len(seen) < 2:
        return []
    return ["Scenario reports from separate runs:", "",
            *(f"- {n}: {r.get('date', '?')}, {r.get('machine', {}).get('hpacs', '?')}, "
              f"`{r.get('command', '?')}`" for n, r in reports.items()), ""]


def versus(reports: dict[str, dict]) -> list[str]:
    """hpacs against Orthanc where the scenarios ran both (> 1: hpacs better)."""
    from benchmarks.suite import retrieve

    rows: list[tuple[str, float | None, str]] = []
    for r in (reports.get("ingest") or {}).get("summary", []):
        if r["server"] == "hpacs" and r.get("vs_orthanc") is not None:
            rows.append((f"ingest instances/s, {r['modalities']} modalities", r["vs_orthanc"],
                         "ingest"))
    compared = [o for o in (reports.get("query") or {}).get("orthanc", [])
                if o.get("hpacs_speedup_p95")]
    if compared:
        o = compared[-1]
        for shape, p in o["hpacs_speedup_p95"].items():
            rows.append((f"query p95 at {o['instances']} instances, {shape}: C-FIND",
                         p["c_find_ms"], "query"))
            rows.append((f"query p95 at {o['instances']} instances, {shape}: QIDO-RS",
                         p["qido_ms"], "query"))
    ret = reports.get("retrieve") or {}
    if "orthanc" in ret.get("servers", {}):
        for label, get, higher in retrieve.comparison_rows(ret):
            rows.append((label, retrieve.advantage(ret["servers"], get, higher), "retrieve"))
    mix = (reports.get("mixed") or {}).get("servers", {})
    if "orthanc" in mix and "hpacs" in mix:
        for phase in ("baseline", "under_load"):
            h, o = (_series_open_p95(mix[n], phase) for n in ("hpacs", "orthanc"))
            rows.append((f"viewer series open p95, {phase.replace('_', ' ')}",
                         common.ratio(o, h), "mixed"))
    if not rows:
        return []
    return ["", "hpacs against Orthanc, same machine and run (> 1: hpacs better; a latency "
            "ratio is Orthanc's time over hpacs's):", "",
            "| comparison | hpacs advantage | from |", "|---|---:|---|",
            *(f"| {what} | {common.fmt_ratio(r)} | {src} |" for what, r, src in rows)]


def _series_open_p95(server: dict, phase: str) -> float | None:
    return ((server.get(phase) or {}).get("series_open_ms") or {}).get("p95")


def _sat(s: dict) -> str:
    shares = s.get("resource_shares") or {}
    if shares and max(shares.values()) < 0.5:
        return f"none near saturation yet (closest: {s['first_to_saturate']})"
    return s["first_to_saturate"]


def write(out: Path, reports: dict[str, dict]) -> Path:
    path = Path(out) / "sizing.md"
    path.write_text("\n".join(lines(reports)) + "\n")
    return path
