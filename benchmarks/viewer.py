"""Time to first image in OHIF: hpacs against Orthanc + its DICOMweb plugin, same OHIF build.

Orthanc does not serve OHIF, so it runs behind a small same-origin aiohttp front that serves
the same installed OHIF dist with the same static handler as hpacs (hpacs.web.viewer.Viewer)
and proxies ``/dicom-web`` to Orthanc (one extra loopback hop, counted against Orthanc).

Per run, for each server (interleaved), in headless Debian Chromium driven by Playwright:
(a) a fresh browser context (empty cache) navigates to ``/viewer?StudyInstanceUIDs=A``:
    navigation start -> first ``CORNERSTONE_IMAGE_RENDERED`` event (the viewport drew pixels);
(b) in that loaded OHIF, the next study B opened by SPA navigation (pushState + popstate,
    as the app's own links do): navigation -> first image of B;
(c) the server's critical path: the ``/dicom-web`` requests that started before (a)'s first
    image (study query, series list, series metadata, first frames), their server time
    summed. The server's own time comes from the ``Server-Timing`` header in the browser's
    Resource Timing (hpacs: its handler time up to the headers, compression included; Orthanc:
    the front's wait from forwarding a request to Orthanc's response headers), so the browser's
    own queueing on a busy machine is not counted; the browser's time-to-first-byte sum is
    reported beside it.
Priors (hpacs only: Orthanc has no cold tier): studies stored, then migrated hot -> cold with
``hpacs migrate --older-than 0`` (the lifecycle code) before the server is started again and the
other studies are loaded. Per run, after (b), the same loaded OHIF opens (d) a prior that was
promoted back to hot by ``POST /api/prefetch`` before the run (prefetched), and (e) a prior left
cold (no prefetch: read from the cold packs), each like (b).
Every run opens studies not opened before in that server. Medians with min-max of --runs.

    .venv/bin/python -m benchmarks.viewer --runs 5
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import corpus, ingest
from benchmarks import peers as peers_mod
from benchmarks.stats import fmt_ratio, fmt_summary, ratio, summarize

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
DEFAULT_WORKDIR = peers_mod.REPO / "benchmarks" / "work" / "viewer"
REPORTS = peers_mod.REPO / "benchmarks" / "reports"
#: Records when the viewport first draws an image (capture phase: the event does not bubble).
RENDER_PROBE = """
performance.setResourceTimingBufferSize(100000);  // default 250: later studies would be lost
window.__renders = [];
window.addEventListener('CORNERSTONE_IMAGE_RENDERED',
  () => window.__renders.push(performance.now()), true);
"""
#: [url, browser TTFB, start, server time (Server-Timing ``app`` dur, -1 when absent)] of the
#: /dicom-web requests started in [since, limit).
SERVER_TIME_JS = """([since, limit]) => performance.getEntriesByType('resource')
  .filter(e => e.name.includes('/dicom-web/') && e.startTime >= since && e.startTime < limit)
  .map(e => [e.name, e.responseStart - e.requestStart, e.startTime,
             (e.serverTiming.find(t => t.name === 'app') || {duration: -1}).duration])"""


def random_port() -> int:
    for _ in range(200):
        port = random.randint(20000, 29999)
        with socket.socket() as s:
            try:
                s.bind((peers_mod.LOOPBACK, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


# ------------------------------------------------------------------------------------------
# the same-origin front for Orthanc (run as a subprocess: `python -m benchmarks.viewer front`)


def front_app(orthanc_http: int):
    from aiohttp import ClientSession, web

    from hpacs.config import ViewerConfig
    from hpacs.web.viewer import Viewer, app_config, data_source

    # OHIF's own Orthanc example settings: thumbnails from the loaded frames (Orthanc's
    # DICOMweb has no /thumbnail); everything else as hpacs's config.
    source = data_source()
    source["configuration"]["thumbnailRendering"] = "wadors"
    config = {**app_config(), "dataSources": [source]}
    viewer = Viewer(ViewerConfig(), ohif_config=config)
    upstream = f"http://{peers_mod.LOOPBACK}:{orthanc_http}"
    hop = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}

    async def session_ctx(app):
        app["session"] = ClientSession(auto_decompress=False)
        yield
        await app["session"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
        headers["Host"] = request.host  # Orthanc builds its absolute URLs from it
        body = await request.read()
        started = time.perf_counter()
        async with request.app["session"].request(
                request.method, upstream + request.rel_url.raw_path_qs, headers=headers,
                data=body or None, allow_redirects=False) as up:
            waited = (time.perf_counter() - started) * 1000  # Orthanc's time to its headers
            out = web.StreamResponse(status=up.status, headers={
                k: v for k, v in up.headers.items() if k.lower() not in hop})
            out.headers["Server-Timing"] = f"app;dur={waited:.3f}"
            if "Content-Length" in up.headers:
                out.content_length = int(up.headers["Content-Length"])
            await out.prepare(request)
            async for chunk in up.content.iter_chunked(1 << 16):
                await out.write(chunk)
            await out.write_eof()
            return out

    app = web.Application(client_max_size=1 << 30)
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/dicom-web/{tail:.*}", proxy)
    app.router.add_get("/app-config.js", viewer.config_script)
    app.router.add_get("/{tail:.*}", viewer.static)
    return app


@contextlib.contextmanager
def orthanc_front(orthanc_http: int, workdir: Path):
    port = random_port()
    log = open(workdir / "front.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.viewer", "front", "--port", str(port),
         "--orthanc-http", str(orthanc_http)],
        cwd=peers_mod.REPO, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not peers_mod._http_ok(port, "/app-config.js"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise peers_mod.PeerError(f"front did not start: {(workdir / 'front.log')}")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


# ------------------------------------------------------------------------------------------
# browser measurements


def first_render_after(page, since: float, timeout: float = 120.0) -> float:
    page.wait_for_function(f"window.__renders.some(t => t > {since})",
                           timeout=timeout * 1000)
    return page.evaluate(f"Math.min(...window.__renders.filter(t => t > {since}))")


def canvas_not_blank(page) -> bool:
    import numpy as np
    from PIL import Image

    png = page.locator("canvas.cornerstone-canvas").first.screenshot()
    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L")).std()) > 10


def _critical(requests: list) -> dict:
    return {"server_ms": sum(max(0.0, r[3]) for r in requests),
            "ttfb_ms": sum(max(0.0, r[1]) for r in requests),
            "requests": len(requests),
            "critical_path": [[r[0].split("/dicom-web")[-1][-90:], round(r[1], 2),
                               round(r[3], 3)] for r in requests]}


def open_next(page, study: str) -> tuple[float, dict]:
    """In a loaded OHIF, open ``study`` as the app's own links do; (ms to its first image,
    its requests' server time)."""
    page.wait_for_timeout(2000)  # let prefetching of the previous study settle, as a reader
    since = page.evaluate("""(u) => { const t = performance.now();
        window.history.pushState({}, '', '/viewer?StudyInstanceUIDs=' + u);
        window.dispatchEvent(new PopStateEvent('popstate')); return t; }""", study)
    first = first_render_after(page, since)
    return first - since, _critical(page.evaluate(SERVER_TIME_JS, [since, first]))


def measure(browser, base: str, study_a: str, study_b: str,
            priors: dict[str, str] | None = None) -> dict:
    """(a), (b), (c) for studies A and B; then each of ``priors`` (label -> study) like B."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(RENDER_PROBE)
    page = context.new_page()
    out: dict = {}
    try:
        page.goto(f"{base}/viewer?StudyInstanceUIDs={study_a}")
        fresh = first_render_after(page, 0.0)
        requests = page.evaluate(SERVER_TIME_JS, [0.0, fresh])
        ok = canvas_not_blank(page)
        nxt, nxt_path = open_next(page, study_b)
        page.wait_for_timeout(200)
        ok = ok and canvas_not_blank(page)
        for label, study in (priors or {}).items():
            ms, path = open_next(page, study)
            page.wait_for_timeout(200)
            ok = ok and canvas_not_blank(page)
            out[f"{label}_ms"] = ms
            out[f"{label}_server_ms"] = path["server_ms"]
            out[f"{label}_path"] = path["critical_path"]
    finally:
        context.close()
    return {"fresh_ms": fresh, "next_ms": nxt, **_critical(requests),
            "next_server_ms": nxt_path["server_ms"], "non_blank": ok, **out}


def wait_warm(http_port: int, timeout: float = 600.0) -> None:
    """Until hpacs has computed the DICOM JSON of every stored instance (its metadata warmer
    runs after ingest; a server stopped earlier leaves the rest to be computed on request)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://{peers_mod.LOOPBACK}:{http_port}/metrics",
                                    timeout=30) as r:
            text = r.read().decode()
        if "\nhpacs_metadata_pending 0.0" in text:
            return
        time.sleep(0.2)
    raise peers_mod.PeerError(f"hpacs metadata warming not done in {timeout} s")


def migrate_cold(workdir: Path) -> str:
    """Every study stored so far in hpacs's data dir -> cold packs (lifecycle, server stopped)."""
    data = workdir / "hpacs-data"
    done = subprocess.run([*peers_mod.hpacs_command(), "migrate", "--data-dir", str(data),
                           "--older-than", "0", "--no-progress"], capture_output=True,
                          text=True, cwd=workdir, timeout=3600)
    if done.returncode != 0:
        raise peers_mod.PeerError(f"hpacs migrate failed: {done.stdout}{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def prefetch(http_port: int, patient_id: str, study: str, timeout: float = 300.0) -> float:
    """POST /api/prefetch for the patient until ``study`` is hot again; seconds it took."""
    import urllib.request

    started = time.monotonic()
    while True:
        req = urllib.request.Request(
            f"http://{peers_mod.LOOPBACK}:{http_port}/api/prefetch", method="POST",
            data=json.dumps({"PatientID": patient_id}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            plan = json.load(r)
        if study in plan["hot"]:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise peers_mod.PeerError(f"prefetch of {study} not done in {timeout} s: {plan}")
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------


def load(peer, files: list[Path]) -> None:
    wall, _cpu, codes = ingest.drive(peer, ingest.split(files, 2), timeout=1800)
    if any(codes):
        raise peers_mod.PeerError(f"storescu to {peer.name} failed: {codes}")
    print(f"  {peer.name}: {len(files)} files stored in {wall:.1f} s", flush=True)


def markdown(report: dict) -> str:
    rows = []
    s = report["summary"]
    for key, label in (("fresh_ms", "(a) fresh browser -> first image, ms"),
                       ("next_ms", "(b) next study in loaded OHIF, ms"),
                       ("server_ms", "(c) summed server time before first image, ms"),
                       ("ttfb_ms", "(c) the same requests' browser TTFB sum, ms"),
                       ("next_server_ms", "(b)'s requests, summed server time, ms")):
        h, o = s["hpacs"][key], s["orthanc"][key]
        rows.append(f"| {label} | {fmt_summary(summarize(h), 2)} | {fmt_summary(summarize(o), 2)}"
                    f" | {fmt_ratio(ratio(summarize(h).median, summarize(o).median))} |")
    hot = summarize(s["hpacs"]["next_ms"]).median
    for key, label in (("prefetched_ms", "(d) prefetched prior in loaded OHIF, ms"),
                       ("prefetched_server_ms", "(d)'s requests, summed server time, ms"),
                       ("cold_ms", "(e) cold prior, no prefetch, in loaded OHIF, ms"),
                       ("cold_server_ms", "(e)'s requests, summed server time, ms")):
        h = summarize(s["hpacs"][key])
        vs = (f"{fmt_ratio(ratio(h.median, hot))} of hpacs (b)"
              if key in ("prefetched_ms", "cold_ms") else "")
        rows.append(f"| {label} | {fmt_summary(h, 2)} | (no cold tier) | {vs} |")
    return "\n".join([
        f"Run {report['started']} at commit {report['commit']}, OHIF {report['ohif']}, "
        f"{report['runs']} runs, {report['studies']} CT studies of {report['slices']} slices "
        f"512x512; load average before/after {report['load_before']} / {report['load_after']}.",
        "",
        "| measure | hpacs median (min-max) | Orthanc + front median (min-max) | hpacs/Orthanc |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"Requests before the first image: hpacs {report['requests']['hpacs']}, "
        f"Orthanc {report['requests']['orthanc']}; all first images non-blank: "
        f"{report['all_non_blank']}. Prefetch (POST /api/prefetch until hot) took "
        f"{fmt_summary(summarize(report['prefetch_s']), 2)} s; {report['migrated']}.",
    ])


def run(args: argparse.Namespace) -> dict:
    from playwright.sync_api import sync_playwright

    from hpacs.web.viewer import OHIF_VERSION

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    nstudies = 4 * args.runs + 2  # per run 2 hot studies and 2 priors; 2 for the warm-up
    cfg = corpus.ct_only(files=nstudies * args.slices, ct_slices=args.slices)
    manifest = corpus.ensure(cfg, workdir / "corpus")
    files = corpus.corpus_paths(workdir / "corpus", manifest)
    from pydicom import dcmread

    heads = [dcmread(p, stop_before_pixels=True, specific_tags=["StudyInstanceUID",
                                                                 "PatientID"]) for p in files]
    patient = {h.StudyInstanceUID: h.PatientID for h in heads}
    studies = sorted(patient)
    # per run r: hot A, B = studies[4r], studies[4r+1]; priors P, C = studies[4r+2], [4r+3]
    cold = {u for i, u in enumerate(studies[:4 * args.runs]) if i % 4 >= 2}
    cold_files = [p for p, h in zip(files, heads, strict=True) if h.StudyInstanceUID in cold]
    hot_files = [p for p, h in zip(files, heads, strict=True) if h.StudyInstanceUID not in cold]
    report: dict = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, cwd=peers_mod.REPO).stdout.strip(),
        "ohif": OHIF_VERSION, "runs": args.runs, "studies": len(studies),
        "slices": args.slices, "load_before": os.getloadavg()[0],
        "raw": {"hpacs": [], "orthanc": []}, "prefetch_s": [],
    }
    orthanc_extra = {"Plugins": [DICOMWEB_PLUGIN], "HttpCompressionEnabled": True,
                     "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    shutil.rmtree(workdir / "hpacs", ignore_errors=True)
    (workdir / "hpacs").mkdir()
    print("loading the priors into hpacs and migrating them to cold", flush=True)
    with peers_mod.hpacs(workdir / "hpacs") as hp:
        load(hp, cold_files)
        wait_warm(hp.http_port)
    report["migrated"] = migrate_cold(workdir / "hpacs")
    print(f"  {report['migrated']}", flush=True)
    with contextlib.ExitStack() as stack:
        hp = stack.enter_context(peers_mod.hpacs(workdir / "hpacs"))
        orth = stack.enter_context(peers_mod.orthanc(workdir / "orthanc",
                                                     extra_config=orthanc_extra))
        print("loading the other studies into hpacs, the hot ones into Orthanc", flush=True)
        load(hp, hot_files)
        load(orth, hot_files)
        wait_warm(hp.http_port)
        front = stack.enter_context(orthanc_front(orth.http_port, workdir))
        bases = {"hpacs": f"http://127.0.0.1:{hp.http_port}",
                 "orthanc": f"http://127.0.0.1:{front}"}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            # one warm-up each (OHIF's files into the OS cache, JIT of both servers)
            for base in bases.values():
                measure(browser, base, studies[-2], studies[-1])
            for r in range(args.runs):
                a, b, p, c = studies[4 * r:4 * r + 4]
                report["prefetch_s"].append(prefetch(hp.http_port, patient[p], p))
                order = ["hpacs", "orthanc"] if r % 2 == 0 else ["orthanc", "hpacs"]
                for name in order:
                    priors = {"prefetched": p, "cold": c} if name == "hpacs" else None
                    m = measure(browser, bases[name], a, b, priors)
                    report["raw"][name].append(m)
                    extra = (f", prefetched prior {m['prefetched_ms']:.0f} ms, cold prior "
                             f"{m['cold_ms']:.0f} ms" if priors else "")
                    print(f"  run {r + 1} {name}: fresh {m['fresh_ms']:.0f} ms, next "
                          f"{m['next_ms']:.0f} ms, server {m['server_ms']:.2f} ms "
                          f"({m['requests']} requests, browser TTFB {m['ttfb_ms']:.1f} ms)"
                          f"{extra}", flush=True)
            browser.close()
    report["load_after"] = os.getloadavg()[0]
    keys = ("fresh_ms", "next_ms", "server_ms", "ttfb_ms", "next_server_ms", "prefetched_ms",
            "prefetched_server_ms", "cold_ms", "cold_server_ms")
    report["summary"] = {n: {k: [m[k] for m in runs if k in m] for k in keys}
                         for n, runs in report["raw"].items()}
    report["requests"] = {n: sorted({m["requests"] for m in runs})
                          for n, runs in report["raw"].items()}
    report["all_non_blank"] = all(m["non_blank"] for runs in report["raw"].values()
                                  for m in runs)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    fr = sub.add_parser("front", help="(internal) the same-origin OHIF front for Orthanc")
    fr.add_argument("--port", type=int, required=True)
    fr.add_argument("--orthanc-http", type=int, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--slices", type=int, default=60)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = ap.parse_args(argv)
    if args.cmd == "front":
        from aiohttp import web
        web.run_app(front_app(args.orthanc_http), host=peers_mod.LOOPBACK, port=args.port,
                    access_log=None, print=None)
        return 0
    report = run(args)
    REPORTS.mkdir(parents=True, exist_ok=True)
    stem = REPORTS / f"viewer-{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    md = markdown(report)
    stem.with_suffix(".md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
