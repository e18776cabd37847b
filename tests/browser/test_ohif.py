"""OHIF in a real browser (headless Debian Chromium driven by Playwright) against a running
hpacs holding a CT study and its priors: the study list, the first image, window/level, a
length measurement saved as DICOM SR through STOW-RS and drawn again after a reload, the
compare link and the IHE Invoke Image Display links.

Screenshots go to tests-output/viewer/ so a person can look at what was asserted.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from pydicom import dcmread

from hpacs.web.viewer import OHIF_VERSION, default_dist_dir, install_current
from tests.conftest import ROOT, start_server
from tests.web.viewer_data import CURRENT, PRIOR, load_viewer_studies, patient_id

pytestmark = [pytest.mark.interop, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
#: The machine notes' flags for a headless Chromium in a container.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SHOTS = ROOT / "tests-output" / "viewer"
LOAD_TIMEOUT = 90.0  # OHIF needs seconds to start on 2 shared CPUs
REPORT_NAME = "HPACS LENGTH REPORT"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    if not install_current():
        pytest.fail(f"OHIF {OHIF_VERSION} not installed in {default_dist_dir()}: make install")
    tmp = tmp_path_factory.mktemp("browser")
    server = start_server(tmp / "data")
    try:
        uids = load_viewer_studies(server, tmp / "files")
    except BaseException:
        server.stop()
        raise
    yield f"http://127.0.0.1:{server.http_port}", uids
    assert server.stop() == 0, server.log()
    assert "internal_error" not in server.log()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium missing: `make test-tools` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(LOAD_TIMEOUT * 1000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.errors = errors
    yield pg
    context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def pixels(locator) -> np.ndarray:
    """The element as the user sees it: grey levels of a screenshot of it."""
    png = locator.screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)


def wait_for_image(page, index: int = 0) -> np.ndarray:
    """Pixels of viewport canvas ``index`` once it shows an image (not blank), settled."""
    canvas = page.locator("canvas.cornerstone-canvas").nth(index)
    deadline = time.monotonic() + LOAD_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        if canvas.count() and canvas.is_visible():
            img = pixels(canvas)
            if img.std() > 20 and last is not None and np.abs(img - last).mean() < 0.5:
                return img
            last = img if img.std() > 20 else None
        page.wait_for_timeout(300)
    shot(page, f"timeout-canvas-{index}")
    raise AssertionError(f"viewport {index} showed no image in {LOAD_TIMEOUT} s")


def assert_phantom(img: np.ndarray) -> None:
    """The CT phantom at W400/L40: black air and lung, mid-grey soft tissue, white bone."""
    h, w = img.shape
    centre = img[h // 4: 3 * h // 4, w // 4: 3 * w // 4]
    dark, grey, white = (centre < 30).mean(), ((centre > 90) & (centre < 170)).mean(), \
        (centre > 240).mean()
    assert grey > 0.4, f"soft tissue fraction {grey:.2f}"
    assert 0.01 < dark < 0.5, f"dark (lung/air) fraction {dark:.2f}"
    assert 0.005 < white < 0.2, f"bright (bone) fraction {white:.2f}"


def open_viewer(page, base: str, uids: list[str]) -> None:
    page.goto(f"{base}/viewer?StudyInstanceUIDs={','.join(uids)}")


def test_study_list_shows_the_archive_studies(archive, page):
    base, _ = archive
    page.goto(base + "/")
    for description in ("CHEST CT 20260310", "CHEST CT 20250310", "HEAD MR 20251010"):
        page.get_by_text(description, exact=True).wait_for()
    assert page.get_by_text(patient_id(), exact=True).count() == 3
    assert page.locator("text=Track measurements").count() == 0
    shot(page, "study-list")
    assert not page.errors, page.errors


def test_opening_a_study_renders_the_first_image(archive, page):
    base, uids = archive
    open_viewer(page, base, [uids[CURRENT]])
    img = wait_for_image(page)
    shot(page, "first-image")
    assert_phantom(img)
    overlay = page.locator("[data-cy=viewport-overlay-bottom-left]").first.inner_text()
    assert re.search(r"W:\s*400\s+L:\s*40\b", overlay), overlay
    # no onboarding tour, no investigational-use banner on a fresh browser
    assert page.locator(".shepherd-element").count() == 0
    assert page.get_by_text("investigational", exact=False).count() == 0
    assert not page.errors, page.errors


def test_window_level_drag_changes_the_rendered_pixels(archive, page):
    base, uids = archive
    open_viewer(page, base, [uids[CURRENT]])
    before = wait_for_image(page)
    page.click("[data-cy=WindowLevel-btn]")
    box = page.locator("canvas.cornerstone-canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 150, y + 120, steps=20)
    page.mouse.up()
    page.wait_for_timeout(500)
    after = wait_for_image(page)
    shot(page, "window-level")
    overlay = page.locator("[data-cy=viewport-overlay-bottom-left]").first.inner_text()
    assert not re.search(r"W:\s*400\s+L:\s*40\b", overlay), overlay
    changed = np.abs(after - before) > 10
    assert changed.mean() > 0.2, f"only {changed.mean():.2%} of the pixels changed"


def test_compare_link_shows_the_study_beside_its_prior(archive, page):
    base, uids = archive
    page.goto(f"{base}/compare/{uids[CURRENT]}")
    page.wait_for_url(re.compile(r"/viewer\?"))
    assert "hangingProtocolId=@ohif/hpCompare" in page.url
    assert f"{uids[CURRENT]},{uids[PRIOR]}" in page.url
    current, prior = wait_for_image(page, 0), wait_for_image(page, 1)
    shot(page, "compare")
    assert_phantom(current)
    assert_phantom(prior)
    tops = page.locator("[data-cy=viewport-overlay-top-left]")
    texts = [tops.nth(i).inner_text() for i in range(tops.count())]
    assert any("10-Mar-2026" in t for t in texts) and any("10-Mar-2025" in t for t in texts), texts
    assert not page.errors, page.errors


@pytest.mark.parametrize("query, expect", [
    ("requestType=STUDY&studyUID={current}", "10-Mar-2026"),
    ("requestType=PATIENT&patientID={pid}", "10-Mar-2026"),
    ("requestType=STUDY&accessionNumber=ACC0007001", "10-Mar-2025"),
])
def test_ihe_invoke_image_display_opens_the_viewer(archive, page, query, expect):
    base, uids = archive
    q = query.format(current=uids[CURRENT], pid=patient_id())
    page.goto(f"{base}/IHEInvokeImageDisplay?{q}")
    page.wait_for_url(re.compile(r"/viewer\?StudyInstanceUIDs="))
    img = wait_for_image(page)
    assert_phantom(img)
    top = page.locator("[data-cy=viewport-overlay-top-left]").first.inner_text()
    assert expect in top, top
    shot(page, "ihe-" + q.split("&")[1].split("=")[0])


def sr_series(base: str, study: str) -> list[dict]:
    r = requests.get(f"{base}/dicom-web/studies/{study}/series", params={"Modality": "SR"},
                     timeout=10)
    return r.json() if r.status_code == 200 else []


def test_length_measurement_is_saved_as_sr_and_drawn_again_after_reload(archive, page, browser):
    base, uids = archive
    study = uids[CURRENT]
    assert sr_series(base, study) == []
    open_viewer(page, base, [study])
    wait_for_image(page)
    page.click("[data-cy=MeasurementTools-split-button-primary]")  # the Length tool
    box = page.locator("canvas.cornerstone-canvas").first.bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.50
    x1, y1 = box["x"] + box["width"] * 0.65, box["y"] + box["height"] * 0.55
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=15)
    page.mouse.up()
    page.get_by_text("Track measurements for this series?").wait_for()
    page.get_by_role("button", name="Yes", exact=True).click()
    page.click("[data-cy=trackedMeasurements-btn]")
    row = page.locator("[data-cy=trackedMeasurements-panel]").get_by_text(re.compile(r"mm$"))
    drawn = float(re.search(r"([\d.]+) mm", row.first.inner_text()).group(1))
    # the phantom has 1 mm pixels: the line spans ~30% of 256 mm horizontally
    assert 60 < drawn < 110, drawn
    shot(page, "measurement-drawn")
    save_report(page, REPORT_NAME)

    # in hpacs: QIDO finds the study by SR, the SR series, and the SR holds the length
    found = requests.get(f"{base}/dicom-web/studies", params={"ModalitiesInStudy": "SR"},
                         timeout=10).json()
    assert study in [s["0020000D"]["Value"][0] for s in found]
    sr = stored_report(base, study)
    assert sr.Modality == "SR" and sr.SeriesDescription == REPORT_NAME
    values = numbers(sr)
    assert any(abs(v - drawn) < 0.1 for v in values), (values, drawn)

    # a fresh browser: the SR is listed with the study, and loading it draws the length again
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    again = context.new_page()
    again.set_default_timeout(LOAD_TIMEOUT * 1000)
    try:
        open_viewer(again, base, [study])
        wait_for_image(again)
        again.get_by_text(REPORT_NAME, exact=True).dblclick()
        again.get_by_text("Do you want to continue tracking measurements").wait_for()
        # continue tracking: the SR's measurements become the study's measurements again
        again.get_by_role("button", name="Yes", exact=True).click()
        label = again.locator("svg text", has_text=re.compile(r"[\d.]+ mm$"))
        label.first.wait_for()
        shown = float(re.search(r"([\d.]+) mm", label.first.text_content()).group(1))
        assert abs(shown - drawn) < 0.1, (shown, drawn)
        assert again.locator("svg line, svg path, svg polyline").count() > 0
        again.click("[data-cy=trackedMeasurements-btn]")
        panel = again.locator("[data-cy=trackedMeasurements-panel]")
        panel.get_by_text(re.compile(r"mm$")).first.wait_for()
        assert f"{drawn} mm" in panel.inner_text(), panel.inner_text()
        shot(again, "measurement-after-reload")
    finally:
        context.close()


ANNOTATION_REPORT = "HPACS ANNOTATIONS"


def test_roi_angle_and_arrow_are_saved_as_sr_and_shown_again(archive, page, browser):
    base, uids = archive
    study = uids[PRIOR]
    assert sr_series(base, study) == []
    open_viewer(page, base, [study])
    wait_for_image(page)
    box = page.locator("canvas.cornerstone-canvas").first.bounding_box()

    def at(fx: float, fy: float) -> tuple[float, float]:
        return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy

    def drag(a: tuple[float, float], b: tuple[float, float]) -> None:
        page.mouse.move(*at(*a))
        page.mouse.down()
        page.mouse.move(*at(*b), steps=12)
        page.mouse.up()

    def tool(menu: str, name: str) -> None:
        page.click(f"[data-cy={menu}-split-button-secondary]")
        page.click(f"[data-cy={name}]")

    tool("MeasurementTools", "RectangleROI")  # in the soft tissue (40 HU), right of the bone
    drag((0.55, 0.60), (0.62, 0.70))
    page.get_by_text("Track measurements for this series?").wait_for()
    page.get_by_role("button", name="Yes", exact=True).click()
    tool("MeasurementTools", "ArrowAnnotate")
    drag((0.70, 0.30), (0.60, 0.40))
    page.get_by_placeholder("Enter new text").fill("lesion")
    page.get_by_role("button", name="Save", exact=True).click()
    tool("MoreTools", "Angle")
    for point in ((0.30, 0.75), (0.40, 0.85), (0.50, 0.75)):
        page.mouse.click(*at(*point))
        page.wait_for_timeout(300)
    page.click("[data-cy=trackedMeasurements-btn]")
    panel = page.locator("[data-cy=trackedMeasurements-panel]")
    panel.get_by_text(re.compile(r"°$")).first.wait_for()
    text = panel.inner_text()
    area = float(re.search(r"([\d.]+) mm²", text).group(1))
    angle = float(re.search(r"([\d.]+) °", text).group(1))
    assert 200 < area < 1000 and 60 < angle < 150, text
    assert "lesion" in text
    mean = float(re.search(r"Mean: (-?[\d.]+) HU",
                           page.locator("svg text", has_text="Mean").first.text_content())
                 .group(1))
    assert abs(mean - 40) < 5, mean  # the phantom's soft tissue, through frames as stored
    shot(page, "annotations-drawn")
    save_report(page, ANNOTATION_REPORT)

    sr = stored_report(base, study)
    assert sr.SeriesDescription == ANNOTATION_REPORT
    values = numbers(sr)
    assert any(abs(v - area) < 1 for v in values), (values, area)
    assert any(abs(v - angle) < 1 for v in values), (values, angle)
    assert any(abs(v - mean) < 0.5 for v in values), (values, mean)
    texts = [getattr(i, "TextValue", "") for i in iter_content(sr)]
    assert "lesion" in texts, texts

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    again = context.new_page()
    again.set_default_timeout(LOAD_TIMEOUT * 1000)
    try:
        open_viewer(again, base, [study])
        wait_for_image(again)
        again.get_by_text(ANNOTATION_REPORT, exact=True).dblclick()
        again.get_by_text("Do you want to continue tracking measurements").wait_for()
        again.get_by_role("button", name="Yes", exact=True).click()
        labels = {}
        for key, pattern in (("lesion", r"lesion"), ("angle", r"([\d.]+) °"),
                             ("area", r"Area: ([\d.]+) mm²")):
            found = again.locator("svg text", has_text=re.compile(pattern)).first
            found.wait_for()
            labels[key] = re.search(pattern, found.text_content())
        assert abs(float(labels["angle"].group(1)) - angle) < 0.5, labels
        assert abs(float(labels["area"].group(1)) - area) < 1, labels
        again.click("[data-cy=trackedMeasurements-btn]")
        panel = again.locator("[data-cy=trackedMeasurements-panel]")
        panel.get_by_text(re.compile(r"°$")).first.wait_for()
        shown = panel.inner_text()
        assert "lesion" in shown and f"{area:g} mm²" in shown, shown
        shot(again, "annotations-after-reload")
    finally:
        context.close()


def save_report(page, name: str) -> None:
    """The measurement panel's "Create SR": a new SR series named ``name``, sent by STOW-RS."""
    page.get_by_role("button", name="Create SR").click()
    page.get_by_placeholder("Report name").fill(name)
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith("/dicom-web/studies")) as stow:
        page.get_by_role("button", name="Save", exact=True).click()
    assert stow.value.status == 200


def stored_report(base: str, study: str):
    """The one SR instance of ``study``, retrieved by WADO-RS as stored."""
    series = sr_series(base, study)
    assert len(series) == 1, series
    series_uid = series[0]["0020000E"]["Value"][0]
    inst = requests.get(f"{base}/dicom-web/studies/{study}/series/{series_uid}/instances",
                        timeout=10).json()
    assert len(inst) == 1
    sop = inst[0]["00080018"]["Value"][0]
    r = requests.get(f"{base}/dicom-web/studies/{study}/series/{series_uid}/instances/{sop}",
                     headers={"Accept": 'multipart/related; type="application/dicom"'},
                     timeout=10)
    assert r.status_code == 200
    body = r.content
    start = body.index(b"\r\n\r\n") + 4
    end = body.rindex(b"\r\n--")
    return dcmread(io.BytesIO(body[start:end]))


def numbers(sr) -> list[float]:
    return [float(item.MeasuredValueSequence[0].NumericValue) for item in iter_content(sr)
            if item.ValueType == "NUM" and "MeasuredValueSequence" in item]


def iter_content(ds):
    for item in getattr(ds, "ContentSequence", []):
        yield item
        yield from iter_content(item)
