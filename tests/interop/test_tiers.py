"""Tiered storage against real peers: after `hpacs migrate` every retrieval path serves cold
instances exactly as hot ones (a twin server on a hot archive of the same files is the
reference), promotion on read, POST /api/prefetch, `hpacs send`/`prefetch`/`verify`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom.uid import CTImageStorage, MRImageStorage

from hpacs.dicom.part10 import read_file_meta
from tests.conftest import ROOT, free_port, start_server, storage_test_files, wait_for
from tests.factories import uid, write
from tests.interop.helpers import dataset_bytes, open_index, pynetdicom_get, remotes_config
from tests.store.test_lifecycle import make_ct, make_dx, make_mr

pytestmark = pytest.mark.interop

GETSCU = "/usr/bin/getscu"  # not the venv's pynetdicom scripts of the same names
MOVESCU = "/usr/bin/movescu"
STORESCP = "/usr/bin/storescp"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'
NO_PROMOTION = {"HPACS_LIFECYCLE__PROMOTE_ON_READ": "false"}
SYNTHETIC = [uid("study", p, 1) for p in (1, 2, 3)]  # CT, MR, DX studies
SYNTHETIC_SOPS = {uid("inst", p, 1, se, n) for p, se in ((1, 1), (2, 1), (3, 2))
                  for n in range(1, 5)}


def hpacs(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpacs", *args, "--log-level", "WARNING"],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def synthetic(directory: Path) -> list[Path]:
    out = []
    for n in range(1, 5):
        out.append(write(make_ct(patient=1, study=1, number=n, size=64), directory))
        out.append(write(make_mr(2, 1, n), directory))
        out.append(write(make_dx(3, 1, n), directory))
    return out


def import_files(data_dir: Path, files: list[Path]) -> None:
    # never copy a data dir around: the LMDB file is sparse (its map size), a copy is not
    imported = hpacs("import", "--data-dir", str(data_dir), "--no-progress", *map(str, files))
    assert "stored" in imported.stdout, imported.stdout + imported.stderr


def migrate(data_dir: Path) -> None:
    done = hpacs("migrate", "--data-dir", str(data_dir), "--older-than", "0", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "migrated" in done.stdout


def entries(data_dir: Path) -> dict:
    db = open_index(data_dir)
    try:
        return {e.sop_instance_uid: e for e in db.iter_instances()}
    finally:
        db.close()


def targets(data_dir: Path) -> list[tuple[str, str, str]]:
    """(study, series, SOP Instance UID) of every instance."""
    db = open_index(data_dir)
    try:
        return [(db.get_series(e.series_uid).study_uid, e.series_uid, e.sop_instance_uid)
                for e in db.iter_instances()]
    finally:
        db.close()


class Twins:
    def __init__(self, hot, cold, originals: dict[str, Path], dest_port: int):
        self.hot, self.cold = hot, cold
        self.originals = originals  # SOP Instance UID -> the one file holding it
        self.dest_port = dest_port

    @staticmethod
    def url(srv, path: str) -> str:
        return f"http://127.0.0.1:{srv.http_port}{path}"


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiers")
    files = synthetic(base / "in") + storage_test_files()
    import_files(base / "hot", files)
    import_files(base / "cold", files)
    migrate(base / "cold")
    originals: dict[str, Path] = {}
    twice: set[str] = set()  # pydicom ships a few instances in two files: either may be kept
    for path in files:
        sop = str(read_file_meta(path).sop_instance_uid)
        if sop in originals:
            twice.add(sop)
        originals[sop] = path
    originals = {k: v for k, v in originals.items() if k not in twice}
    dest_port = free_port()
    config = remotes_config(base / "hpacs.toml", {"STORESCP": dest_port})
    hot = start_server(base / "hot", "--config", str(config), env=NO_PROMOTION)
    cold = start_server(base / "cold", "--config", str(config), env=NO_PROMOTION)
    yield Twins(hot, cold, originals, dest_port)
    for srv in (hot, cold):
        assert srv.stop() == 0, srv.log()
        assert "internal_error" not in srv.log()


def test_migration_left_nothing_hot(twins):
    cold = entries(twins.cold.data_dir)
    assert cold and all(e.cold is not None and e.path == "" for e in cold.values())
    assert set(cold) == set(entries(twins.hot.data_dir))
    assert not list((twins.cold.data_dir / "hot").rglob("*.dcm"))


def wado_parts(url: str, accept: str = ANY_TS) -> list[bytes]:
    response = requests.get(url, headers={"Accept": accept}, timeout=60)
    assert response.status_code == 200, response.text
    return list(DICOMwebClient(url="http://x")._decode_multipart_message(response, stream=False))


def test_wado_rs_instances_byte_exact_from_cold(twins):
    checked: set[str] = set()
    for study, series, sop in targets(twins.cold.data_dir):
        path = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"
        (got,) = wado_parts(twins.url(twins.cold, path))
        (ref,) = wado_parts(twins.url(twins.hot, path))
        assert got == ref, sop
        if sop in twins.originals:
            assert got[read_file_meta(bytes(got)).dataset_offset:] == \
                dataset_bytes(twins.originals[sop]), sop
            checked.add(sop)
    assert checked >= SYNTHETIC_SOPS and len(checked) > 100


def test_dicomweb_client_study_retrieval_from_cold(twins):
    for study in SYNTHETIC:
        got = DICOMwebClient(url=twins.url(twins.cold, "/dicom-web")).retrieve_study(study)
        ref = DICOMwebClient(url=twins.url(twins.hot, "/dicom-web")).retrieve_study(study)
        assert len(got) == 4
        assert sorted(got, key=lambda d: d.SOPInstanceUID) == \
            sorted(ref, key=lambda d: d.SOPInstanceUID)


def _same(path: str, twins, accept: str | None = None) -> int:
    """GET ``path`` from both servers: same status and same body (boundaries aside)."""
    headers = {"Accept": accept} if accept else {}
    got = requests.get(twins.url(twins.cold, path), headers=headers, timeout=60)
    ref = requests.get(twins.url(twins.hot, path), headers=headers, timeout=60)
    assert got.status_code == ref.status_code, (path, got.text, ref.text)
    # bulk data URIs name the server's own address
    mine = got.content.replace(f"127.0.0.1:{twins.cold.http_port}".encode(), b"HOST")
    theirs = ref.content.replace(f"127.0.0.1:{twins.hot.http_port}".encode(), b"HOST")
    if got.headers.get("Content-Type", "").startswith("multipart/"):
        b1 = re.search(r"boundary=\"?([^\";]+)", got.headers["Content-Type"]).group(1)
        b2 = re.search(r"boundary=\"?([^\";]+)", ref.headers["Content-Type"]).group(1)
        mine, theirs = mine.replace(b1.encode(), b"B"), theirs.replace(b2.encode(), b"B")
    assert mine == theirs, path
    return got.status_code


def test_frames_rendered_metadata_and_wado_uri_match_hot(twins):
    ok = 0
    seen_series = set()
    all_targets = targets(twins.cold.data_dir)
    for study, series, sop in all_targets:
        inst = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"
        for path, accept in ((f"{inst}/frames/1", "*/*"), (f"{inst}/rendered", "image/png"),
                             (f"{inst}/thumbnail", "image/jpeg"), (f"{inst}/metadata", None),
                             (f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}"
                              f"&objectUID={sop}&contentType=application/dicom", None),
                             (f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}"
                              f"&objectUID={sop}", None)):
            ok += _same(path, twins, accept) == 200
        if series not in seen_series:
            seen_series.add(series)
            _same(f"/dicom-web/studies/{study}/series/{series}/metadata", twins)
            _same(f"/dicom-web/studies/{study}/series/{series}/rendered", twins, "image/jpeg")
    # metadata and WADO-URI files for every instance, pixels for most
    assert ok >= 4 * len(all_targets)
    for sop in SYNTHETIC_SOPS:
        study, series, _ = next(t for t in all_targets if t[2] == sop)
        wado = requests.get(twins.url(twins.cold, f"/wado?requestType=WADO&studyUID={study}"
                                                  f"&seriesUID={series}&objectUID={sop}"
                                                  "&contentType=application/dicom"), timeout=60)
        assert wado.content[read_file_meta(wado.content).dataset_offset:] == \
            dataset_bytes(twins.originals[sop])


def test_pynetdicom_c_get_from_cold(twins):
    received, statuses = pynetdicom_get(twins.cold.dicom_port, "HPACS", SYNTHETIC,
                                        (CTImageStorage, MRImageStorage, DX))
    for study_statuses in statuses:
        assert study_statuses[-1] == 0x0000, statuses
    assert set(received) == SYNTHETIC_SOPS
    for sop, data in received.items():
        assert data == dataset_bytes(twins.originals[sop]), sop


def test_getscu_from_cold(twins, tmp_path):
    proc = subprocess.run(
        [GETSCU, "-S", "-aec", "HPACS", "-od", str(tmp_path), "127.0.0.1",
         str(twins.cold.dicom_port), "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={uid('study', 1, 1)}"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(tmp_path.iterdir())
    assert len(files) == 4
    for f in files:
        sop = str(read_file_meta(f).sop_instance_uid)
        assert dataset_bytes(f) == dataset_bytes(twins.originals[sop])


def test_movescu_from_cold_to_storescp(twins, tmp_path):
    dest = subprocess.Popen([STORESCP, "-aet", "STORESCP", "-od", str(tmp_path),
                             str(twins.dest_port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        proc = subprocess.run(
            [MOVESCU, "-S", "-aec", "HPACS", "-aem", "STORESCP", "127.0.0.1",
             str(twins.cold.dicom_port), "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={uid('study', 2, 1)}"],
            capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        files = sorted(tmp_path.iterdir())
        assert len(files) == 4
        for f in files:
            sop = str(read_file_meta(f).sop_instance_uid)
            assert dataset_bytes(f) == dataset_bytes(twins.originals[sop])
    finally:
        dest.terminate()
        dest.wait(10)


def test_reads_did_not_promote_when_the_rule_is_off(twins):
    # runs after the retrievals above (file order): everything is still cold
    assert all(e.cold is not None for e in entries(twins.cold.data_dir).values())


# -- promotion, prefetch, send, verify on their own archives ----------------------------------


@pytest.fixture
def cold_archive(tmp_path):
    files = synthetic(tmp_path / "in")
    for s, (part, date) in enumerate((("HEAD", "20200101"), ("KNEE", "20210101"),
                                      ("HEAD", "20220101")), start=2):
        files.append(write(make_mr(2, s, 1, part, date), tmp_path / "in"))
    import_files(tmp_path / "data", files)
    migrate(tmp_path / "data")
    originals = {str(read_file_meta(p).sop_instance_uid): p for p in files}
    return tmp_path / "data", originals


def study_is_hot(data_dir: Path, study: str) -> bool:
    db = open_index(data_dir)
    try:
        found = [db.get_instance(s) for se in db.study_series(study)
                 for s in db.series_instances(se)]
    finally:
        db.close()
    return bool(found) and all(e.cold is None for e in found)


def test_a_cold_read_promotes_the_study(cold_archive):
    data_dir, originals = cold_archive
    srv = start_server(data_dir)
    try:
        study = uid("study", 1, 1)
        sop = uid("inst", 1, 1, 1, 1)
        path = f"/dicom-web/studies/{study}/series/{uid('series', 1, 1, 1)}/instances/{sop}"
        url = f"http://127.0.0.1:{srv.http_port}{path}"
        (first,) = wado_parts(url)
        wait_for(lambda: study_is_hot(data_dir, study), timeout=30)
        assert not study_is_hot(data_dir, uid("study", 2, 1))  # only the study read
        (again,) = wado_parts(url)
        assert first == again
        assert again[read_file_meta(bytes(again)).dataset_offset:] == \
            dataset_bytes(originals[sop])
    finally:
        assert srv.stop() == 0, srv.log()
    verified = hpacs("verify", "--data-dir", str(data_dir), "--no-progress")
    assert verified.returncode == 0, verified.stdout


def test_post_api_prefetch(cold_archive):
    data_dir, _ = cold_archive
    srv = start_server(data_dir, env=NO_PROMOTION)
    api = f"http://127.0.0.1:{srv.http_port}/api/prefetch"
    try:
        current = uid("study", 2, 1)  # patient 2's MR HEAD of 2026
        r = requests.post(api, json={"StudyInstanceUID": current, "limit": 2}, timeout=30)
        assert r.status_code == 202, r.text
        body = r.json()
        # same modality and body part (MR, HEAD) first, most recent first; the knee last
        assert body["priors"] == [uid("study", 2, 4), uid("study", 2, 2)]
        assert body["queued"] == body["priors"] and body["hot"] == []
        for study in body["priors"]:
            wait_for(lambda study=study: study_is_hot(data_dir, study), timeout=30)
        assert not study_is_hot(data_dir, uid("study", 2, 3))
        r = requests.post(api, json={"PatientID": "PAT00002", "limit": 1}, timeout=30)
        assert r.status_code == 202 and r.json()["priors"] == [current]
        for bad, status in ((b"{not json", 400), (b"[1]", 400),
                            (json.dumps({"PatientID": "X", "StudyInstanceUID": "1.2"}), 400),
                            (json.dumps({"StudyInstanceUID": "1.2.3.4"}), 404),
                            (json.dumps({"PatientID": "NOBODY"}), 404),
                            (json.dumps({"PatientID": "PAT00002", "limit": -1}), 400)):
            r = requests.post(api, data=bad, timeout=30)
            assert r.status_code == status, (bad, r.text)
            assert "error" in r.json()
    finally:
        assert srv.stop() == 0, srv.log()
    assert "api.error" in srv.log()


def test_cli_send_and_prefetch_from_cold(cold_archive, tmp_path):
    data_dir, originals = cold_archive
    port = free_port()
    out = tmp_path / "out"
    out.mkdir()
    dest = subprocess.Popen([STORESCP, "-aet", "STORESCP", "-od", str(out), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        sent = hpacs("send", "--to", f"STORESCP@127.0.0.1:{port}", "--data-dir", str(data_dir),
                     "--study", uid("study", 3, 1), "--no-progress")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        files = sorted(out.iterdir())
        assert len(files) == 4
        for f in files:
            sop = str(read_file_meta(f).sop_instance_uid)
            assert dataset_bytes(f) == dataset_bytes(originals[sop])
        # while a server owns the archive, cold instances fail with a reason (no unsafe open)
        srv = start_server(data_dir)
        try:
            sent = hpacs("send", "--to", f"STORESCP@127.0.0.1:{port}", "--data-dir",
                         str(data_dir), "--study", uid("study", 3, 1), "--no-progress")
            assert sent.returncode == 1
            assert "cold tier" in sent.stdout
            locked = hpacs("prefetch", "--data-dir", str(data_dir), "--patient-id", "PAT00002")
            assert locked.returncode == 3
        finally:
            assert srv.stop() == 0, srv.log()
    finally:
        dest.terminate()
        dest.wait(10)
    pre = hpacs("prefetch", "--data-dir", str(data_dir), "--study", uid("study", 2, 1),
                "--priors", "1")
    assert pre.returncode == 0, pre.stdout + pre.stderr
    assert study_is_hot(data_dir, uid("study", 2, 4))
    assert not study_is_hot(data_dir, uid("study", 2, 2))


def test_verify_cli_reports_and_exit_codes(cold_archive):
    data_dir, _ = cold_archive
    clean = hpacs("verify", "--data-dir", str(data_dir), "--no-progress")
    assert clean.returncode == 0, clean.stdout
    pack = sorted((data_dir / "cold" / "packs").iterdir())[0]
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pack.write_bytes(bytes(raw))
    bad = hpacs("verify", "--data-dir", str(data_dir), "--no-progress")
    assert bad.returncode == 1
    assert re.search(r"corrupt [1-9]", bad.stdout), bad.stdout
    assert "  corrupt " in bad.stdout


def test_cli_migrate_dry_run_and_age(tmp_path):
    data_dir = tmp_path / "data"
    import_files(data_dir, synthetic(tmp_path / "in"))
    dry = hpacs("migrate", "--data-dir", str(data_dir), "--older-than", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("  would migrate ") == 3 and "dry run: 3 studies" in dry.stdout
    young = hpacs("migrate", "--data-dir", str(data_dir), "--older-than", "1", "--no-progress")
    assert young.returncode == 0 and "migrated 0 studies" in young.stdout
    assert all(e.cold is None for e in entries(data_dir).values())
