"""Transcoding on WADO-RS (instances, series, frames) and WADO-URI, against a real `hpacs serve`
with dicomweb-client and raw HTTP: the syntax asked for is what arrives, every part's
Content-Type names the syntax actually sent, pixels decode to pydicom's decode of the original,
and what cannot be produced is a 406 with a clear body."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import generate_uid

from hpacs.dicom.part10 import read_file_meta
from tests.conftest import start_server
from tests.interop.helpers import dataset_bytes, send_files

pytestmark = pytest.mark.interop

EVRLE = "1.2.840.10008.1.2.1"
IVRLE = "1.2.840.10008.1.2"
RLE = "1.2.840.10008.1.2.5"
JLS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
FILES = ["CT_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
         "MR_small_RLE.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm", "SC_rgb_rle_2frame.dcm"]
UNDECODABLE = "broken_rle.dcm"  # MR_small_RLE whose RLE frame is garbage


def _read(source) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(source)


def _pixels(ds: pydicom.Dataset) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.pixel_array


class Stored:
    def __init__(self, server, files: dict[str, Path]) -> None:
        self.server = server
        self.files = files
        self.uids = {n: _uids(p) for n, p in files.items()}

    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}/dicom-web"

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(url=self.base())

    def url(self, name: str) -> str:
        return "{}/studies/{}/series/{}/instances/{}".format(self.base(), *self.uids[name])

    def reference(self, name: str) -> np.ndarray:
        return _pixels(_read(self.files[name]))


def _uids(path: Path) -> tuple[str, str, str]:
    ds = _read(path)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _prepare(tmp: Path, study: str) -> dict[str, Path]:
    """Copies in one study, each in its own series with its own SOP Instance UID (pydicom's
    MR_small variants share one)."""
    out = {}
    for name in [*FILES, UNDECODABLE]:
        source = "MR_small_RLE.dcm" if name == UNDECODABLE else name
        ds = _read(pydicom.data.get_testdata_file(source))
        if name == UNDECODABLE:
            ds.PixelData = encapsulate([b"\x00" * 64])
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out[name] = tmp / name
        ds.save_as(out[name])
    return out


def _start(tmp_path_factory, name: str, *extra: str, env=None) -> Stored:
    tmp = tmp_path_factory.mktemp(name)
    server = start_server(tmp / "data", *extra, env=env)
    try:
        files = _prepare(tmp, generate_uid())
        statuses = send_files(server, list(files.values()))
        assert set(statuses.values()) == {0}, statuses
    except BaseException:
        server.kill()
        raise
    return Stored(server, files)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    stored = _start(tmp_path_factory, "wado-transcode")
    yield stored
    assert stored.server.stop() == 0, stored.server.log()
    assert "internal_error" not in stored.server.log()


@pytest.fixture(scope="module")
def lossy_srv(tmp_path_factory):
    stored = _start(tmp_path_factory, "wado-lossy",
                    env={"HPACS_PIXELS__ALLOW_LOSSY_TRANSCODE": "true"})
    yield stored
    assert stored.server.stop() == 0, stored.server.log()


def dicom_accept(ts: str) -> str:
    return f'multipart/related; type="application/dicom"; transfer-syntax={ts}'


def parts(response: requests.Response) -> list[tuple[str, bytes]]:
    """(part Content-Type, payload) of a multipart/related response."""
    boundary = re.search(r"boundary=([^;]+)", response.headers["Content-Type"])[1].strip('"')
    out = []
    for chunk in response.content.split(f"--{boundary}".encode())[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        ctype = re.search(rb"Content-Type: ([^\r\n]+)", head)[1].decode()
        out.append((ctype, body.removesuffix(b"\r\n")))
    return out


# -- WADO-RS instances (dicomweb-client) --------------------------------------------------------
def test_no_transfer_syntax_means_explicit_vr_le_transcoded(srv):
    """An Accept without transfer-syntax: PS3.18 8.7.3.5 makes it Explicit VR LE."""
    for name in ("MR_small_jpeg_ls_lossless.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm"):
        r = requests.get(srv.url(name), timeout=30,
                         headers={"Accept": 'multipart/related; type="application/dicom"'})
        [(ctype, body)] = parts(r)
        assert ctype == f"application/dicom; transfer-syntax={EVRLE}"
        ds = _read(io.BytesIO(body))
        assert ds.file_meta.TransferSyntaxUID == EVRLE
        assert np.array_equal(_pixels(ds), srv.reference(name)), name
    # the JPEG baseline YBR_FULL_422 came back RGB and still marked lossy
    assert ds.PhotometricInterpretation == "RGB" and ds.LossyImageCompression == "01"


def test_dicomweb_client_default_is_as_stored(srv):
    """dicomweb-client asks for transfer-syntax=* unless told otherwise: as stored."""
    name = "MR_small_jpeg_ls_lossless.dcm"
    ds = srv.client().retrieve_instance(*srv.uids[name])
    assert ds.file_meta.TransferSyntaxUID == JLS
    assert ds.PixelData == _read(srv.files[name]).PixelData


@pytest.mark.parametrize(("name", "target"), [
    ("CT_small.dcm", JLS), ("CT_small.dcm", RLE), ("CT_small.dcm", J2K_LOSSLESS),
    ("MR_small_jp2klossless.dcm", RLE), ("MR_small_RLE.dcm", JLS),
    ("MR_small_jpeg_ls_lossless.dcm", EVRLE), ("SC_rgb_rle_2frame.dcm", JLS)])
def test_dicomweb_client_retrieve_instance_with_a_transfer_syntax(srv, name, target):
    ds = srv.client().retrieve_instance(*srv.uids[name],
                                        media_types=(("application/dicom", target),))
    assert ds.file_meta.TransferSyntaxUID == target
    assert ds.SOPInstanceUID == srv.uids[name][2]
    assert np.array_equal(_pixels(ds), srv.reference(name))
    assert "LossyImageCompression" not in ds


def test_study_parts_name_the_syntax_sent_with_fallback_to_as_stored(srv):
    study = srv.uids["CT_small.dcm"][0]
    r = requests.get(f"{srv.base()}/studies/{study}", timeout=60,
                     headers={"Accept": f"{dicom_accept('*')};q=0.1, {dicom_accept(JLS)}"})
    assert r.status_code == 200, r.text
    got = {}
    for ctype, body in parts(r):
        ts = re.fullmatch(r"application/dicom; transfer-syntax=([0-9.]+)", ctype)[1]
        ds = _read(io.BytesIO(body))
        assert ds.file_meta.TransferSyntaxUID == ts  # the part says what it is
        got[str(ds.SOPInstanceUID)] = ts
    by_name = {name: got[srv.uids[name][2]] for name in srv.uids}
    # JPEG-LS (q=1) for every instance we can decode; the broken one falls back to as stored
    assert by_name == {**{name: JLS for name in FILES}, UNDECODABLE: RLE}


def test_series_retrieve_transcodes_and_says_so(srv):
    study, series, _ = srv.uids["MR_small_RLE.dcm"]
    r = requests.get(f"{srv.base()}/studies/{study}/series/{series}", timeout=60,
                     headers={"Accept": dicom_accept(JLS)})
    assert r.status_code == 200
    [(ctype, body)] = parts(r)
    assert ctype == f"application/dicom; transfer-syntax={JLS}"
    ds = _read(io.BytesIO(body))
    assert ds.file_meta.TransferSyntaxUID == JLS
    assert np.array_equal(_pixels(ds), srv.reference("MR_small_RLE.dcm"))


def test_as_stored_wins_when_offered(srv):
    r = requests.get(srv.url("MR_small_RLE.dcm"), timeout=30,
                     headers={"Accept": f"{dicom_accept(JLS)}, {dicom_accept(RLE)}"})
    [(ctype, body)] = parts(r)
    assert ctype.endswith(RLE)
    stored = dataset_bytes(srv.files["MR_small_RLE.dcm"])
    assert body[read_file_meta(body).dataset_offset:] == stored  # as stored, not re-encoded


def test_implicit_vr_le_asked_for(srv):
    name = "MR_small_jpeg_ls_lossless.dcm"
    r = requests.get(srv.url(name), timeout=30, headers={"Accept": dicom_accept(IVRLE)})
    [(ctype, body)] = parts(r)
    assert ctype == f"application/dicom; transfer-syntax={IVRLE}"
    ds = _read(io.BytesIO(body))
    assert ds.file_meta.TransferSyntaxUID == IVRLE
    assert np.array_equal(_pixels(ds), srv.reference(name))


@pytest.mark.parametrize(("name", "accept", "words"), [
    ("CT_small.dcm", dicom_accept(J2K), "lossy output is disabled"),  # lossless -> lossy
    ("CT_small.dcm", dicom_accept(JPEG_BASELINE), JPEG_BASELINE),  # no encoder
    ("CT_small.dcm", "application/json", "transfer-syntax=*"),
    (UNDECODABLE, dicom_accept(EVRLE), "cannot decode"),  # the codec fails: 406, not 500
])
def test_not_acceptable(srv, name, accept, words):
    r = requests.get(srv.url(name), headers={"Accept": accept}, timeout=30)
    assert r.status_code == 406, r.text
    assert words in r.json()["error"], r.json()


def test_lossy_only_when_the_config_allows_it(lossy_srv):
    name = "CT_small.dcm"
    ds = lossy_srv.client().retrieve_instance(*lossy_srv.uids[name],
                                              media_types=(("application/dicom", J2K),))
    assert ds.file_meta.TransferSyntaxUID == J2K
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_15444_1"
    ref = lossy_srv.reference(name).astype(np.int64)
    assert np.abs(_pixels(ds).astype(np.int64) - ref).max() < 200
    # lossless stays lossless when not asked for lossy, even there
    plain = lossy_srv.client().retrieve_instance(*lossy_srv.uids[name])
    assert np.array_equal(_pixels(plain), lossy_srv.reference(name))


# -- frames ---------------------------------------------------------------------------------
def _decode_frame(data: bytes, ts: str, ref: pydicom.Dataset) -> np.ndarray:
    spp = int(ref.SamplesPerPixel)
    arr, _ = get_decoder(ts).as_array(
        encapsulate([data]), rows=ref.Rows, columns=ref.Columns, samples_per_pixel=spp,
        planar_configuration=0, bits_allocated=ref.BitsAllocated, bits_stored=ref.BitsStored,
        pixel_representation=ref.PixelRepresentation,
        photometric_interpretation=str(ref.PhotometricInterpretation), number_of_frames=1)
    return arr


@pytest.mark.parametrize(("name", "media", "ts"), [
    ("CT_small.dcm", "image/jls", JLS), ("MR_small_RLE.dcm", "image/jp2", J2K_LOSSLESS),
    ("MR_small_jp2klossless.dcm", "image/dicom-rle", RLE),
    ("SC_rgb_rle_2frame.dcm", "image/jls", JLS)])
def test_frames_encoded_on_request(srv, name, media, ts):
    ref = _read(srv.files[name])
    frames = [1, 2] if int(ref.get("NumberOfFrames") or 1) > 1 else [1]
    r = requests.get(f"{srv.url(name)}/frames/{','.join(map(str, frames))}", timeout=30,
                     headers={"Accept": f'multipart/related; type="{media}"'})
    assert r.status_code == 200, r.text
    got = parts(r)
    assert [c for c, _ in got] == [f"{media}; transfer-syntax={ts}"] * len(frames)
    pixels = _pixels(ref)
    for k, (_, body) in zip(frames, got, strict=True):
        want = pixels[k - 1] if len(frames) > 1 else pixels
        assert np.array_equal(_decode_frame(body, ts, ref), want), (name, k)


def test_dicomweb_client_frames_as_jpeg_ls(srv):
    name = "CT_small.dcm"
    [frame] = srv.client().retrieve_instance_frames(*srv.uids[name], frame_numbers=[1],
                                                    media_types=(("image/jls", JLS),))
    assert np.array_equal(_decode_frame(frame, JLS, _read(srv.files[name])),
                          srv.reference(name))


def test_frames_octet_stream_of_a_compressed_instance_is_decoded(srv):
    name = "MR_small_jpeg_ls_lossless.dcm"
    r = requests.get(f"{srv.url(name)}/frames/1", timeout=30, headers={
        "Accept": f'multipart/related; type="application/octet-stream"; transfer-syntax={EVRLE}'})
    [(ctype, body)] = parts(r)
    assert ctype == f"application/octet-stream; transfer-syntax={EVRLE}"
    ref = srv.reference(name)
    assert np.array_equal(np.frombuffer(body, ref.dtype.newbyteorder("<")).reshape(ref.shape),
                          ref)


@pytest.mark.parametrize("accept", [
    'multipart/related; type="image/jpeg"',  # no JPEG baseline encoder
    f'multipart/related; type="image/jp2"; transfer-syntax={J2K}',  # lossy: off by default
    'multipart/related; type="image/gif"'])
def test_frames_not_acceptable(srv, accept):
    r = requests.get(f"{srv.url('CT_small.dcm')}/frames/1", headers={"Accept": accept},
                     timeout=30)
    assert r.status_code == 406, r.text
    assert "image/jls" in r.json()["error"]


# -- WADO-URI -------------------------------------------------------------------------------
def _wado_uri(stored: Stored, name: str, **params) -> requests.Response:
    study, series, sop = stored.uids[name]
    query = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop,
             "contentType": "application/dicom", **params}
    return requests.get(f"http://127.0.0.1:{stored.server.http_port}/wado", params=query,
                        timeout=30)


@pytest.mark.parametrize(("name", "ts"), [("CT_small.dcm", JLS),
                                          ("MR_small_jpeg_ls_lossless.dcm", EVRLE),
                                          ("SC_rgb_rle_2frame.dcm", J2K_LOSSLESS)])
def test_wado_uri_transfer_syntax(srv, name, ts):
    r = _wado_uri(srv, name, transferSyntax=ts)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/dicom"
    ds = _read(io.BytesIO(r.content))
    assert ds.file_meta.TransferSyntaxUID == ts
    assert np.array_equal(_pixels(ds), srv.reference(name))


def test_wado_uri_not_acceptable(srv):
    r = _wado_uri(srv, "CT_small.dcm", transferSyntax=J2K)
    assert r.status_code == 406 and "lossy" in r.json()["error"]
    r = _wado_uri(srv, UNDECODABLE, transferSyntax=EVRLE)
    assert r.status_code == 406 and "transferSyntax=*" in r.json()["error"]
    assert _wado_uri(srv, UNDECODABLE, transferSyntax="*").status_code == 200


def test_frames_that_cannot_be_encoded_are_406_and_as_stored_works(srv):
    url = f"{srv.url(UNDECODABLE)}/frames/1"
    r = requests.get(url, timeout=30, headers={"Accept": 'multipart/related; type="image/jls"'})
    assert r.status_code == 406, r.text
    assert JLS in r.json()["error"] and "transfer-syntax=*" in r.json()["error"]
    r = requests.get(url, timeout=30, headers={
        "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
    [(ctype, _)] = parts(r)
    assert ctype == f"application/octet-stream; transfer-syntax={RLE}"  # the stored bitstream
