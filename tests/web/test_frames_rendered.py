"""WADO-RS frames, bulkdata, rendered and thumbnail, and WADO-URI, against a real `hpacs serve`
with dicomweb-client (PyPI) and raw HTTP (part headers, statuses, caching)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
import requests
from dicomweb_client import DICOMwebClient
from PIL import Image
from pydicom.encaps import get_frame
from pydicom.uid import generate_uid

from tests.conftest import start_server
from tests.interop.helpers import send_files

pytestmark = pytest.mark.interop

NATIVE = ["CT_small.dcm", "MR_small_bigendian.dcm", "rtdose.dcm"]
ENCAPSULATED = ["SC_rgb_jpeg_dcmtk.dcm", "MR_small_jpeg_ls_lossless.dcm",
                "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm"]
EVRLE = "1.2.840.10008.1.2.1"
OCTET_EVRLE = f'multipart/related; type="application/octet-stream"; transfer-syntax={EVRLE}'
OCTET_ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def data_file(name: str) -> Path:
    return Path(pydicom.data.get_testdata_file(name))


def uids(name: str) -> tuple[str, str, str]:
    return STORED[name]


def broken_file(tmp: Path) -> Path:
    """CT_small with its Pixel Data cut to 100 bytes and new UIDs."""
    ds = pydicom.dcmread(data_file("CT_small.dcm"))
    ds.PixelData = ds.PixelData[:100]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = tmp / "broken.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


#: name -> (study, series, sop) as stored (the MR_small variants share UIDs: given new ones)
STORED: dict[str, tuple[str, str, str]] = {}


def prepare(tmp: Path, name: str) -> Path:
    """A copy to store: the MR_small variants get their own SOP Instance and Series UIDs, and
    rtdose.dcm's file meta (which names another SOP Instance UID) is aligned with its data set."""
    if not name.startswith("MR_small") and name != "rtdose.dcm":
        return data_file(name)
    ds = pydicom.dcmread(data_file(name))
    if name.startswith("MR_small"):
        ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp / name
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("frames")
    server = start_server(tmp / "data")
    broken = broken_file(tmp)
    files = {n: prepare(tmp, n) for n in NATIVE + ENCAPSULATED}
    STORED.update({n: uids_of(p) for n, p in files.items()})
    statuses = send_files(server, [*files.values(), broken])
    assert set(statuses.values()) == {0}, {p.name: s for p, s in statuses.items() if s}
    server.broken = uids_of(broken)
    yield server
    if server.proc.poll() is None:
        assert server.stop() == 0, server.log()


def uids_of(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def base(server) -> str:
    return f"http://127.0.0.1:{server.http_port}/dicom-web"


def client(server) -> DICOMwebClient:
    return DICOMwebClient(url=base(server))


def inst_url(server, name_or_uids) -> str:
    s, se, i = uids(name_or_uids) if isinstance(name_or_uids, str) else name_or_uids
    return f"{base(server)}/studies/{s}/series/{se}/instances/{i}"


def parts_of(response: requests.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, payload) of each part of a multipart/related response."""
    ctype = response.headers["Content-Type"]
    boundary = re.search(r"boundary=\"?([^\";]+)", ctype).group(1).encode()
    out = []
    for chunk in response.content.split(b"--" + boundary)[1:-1]:
        head, _, body = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n"))
        out.append((headers[b"Content-Type"].decode(), body.removesuffix(b"\r\n")))
    return out


def expected_native(ds: pydicom.Dataset, index: int) -> bytes:
    arr = ds.pixel_array
    frame = arr[index] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr
    return frame.astype(frame.dtype.newbyteorder("<")).tobytes()


# -- frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "numbers"), [
    ("CT_small.dcm", [1]), ("MR_small_bigendian.dcm", [1]), ("rtdose.dcm", [1, 15]),
    ("rtdose.dcm", [15, 3, 1])])
def test_native_frames(srv, name, numbers):
    ds = pydicom.dcmread(data_file(name))
    got = client(srv).retrieve_instance_frames(*uids(name), frame_numbers=numbers)
    assert got == [expected_native(ds, k - 1) for k in numbers]


def test_native_frames_by_sendfile_have_lengths_and_head(srv):
    """Hot native frames go by sendfile: exact Content-Length, per-part lengths, HEAD empty."""
    ds = pydicom.dcmread(data_file("rtdose.dcm"))
    url = f"{inst_url(srv, 'rtdose.dcm')}/frames/2,15"
    accept = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
    got = requests.get(url, headers=accept, timeout=30)
    assert got.status_code == 200
    assert int(got.headers["Content-Length"]) == len(got.content)
    assert [body for _, body in parts_of(got)] == [expected_native(ds, 1),
                                                   expected_native(ds, 14)]
    assert got.content.count(b"\r\nContent-Length: ") == 2
    head = requests.head(url, headers=accept, timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == got.headers["Content-Length"]


@pytest.mark.parametrize("name", ENCAPSULATED)
def test_encapsulated_frames_as_stored(srv, name):
    ds = pydicom.dcmread(data_file(name))
    n = int(ds.get("NumberOfFrames", 1) or 1)
    numbers = list(range(1, n + 1))
    got = client(srv).retrieve_instance_frames(*uids(name), frame_numbers=numbers)
    assert got == [get_frame(ds.PixelData, k - 1, number_of_frames=n) for k in numbers]
    response = requests.get(f"{inst_url(srv, name)}/frames/{','.join(map(str, numbers))}",
                            headers={"Accept": OCTET_ANY}, timeout=30)
    assert response.status_code == 200
    ts = ds.file_meta.TransferSyntaxUID
    assert [c for c, _ in parts_of(response)] == [
        f"application/octet-stream; transfer-syntax={ts}"] * n


@pytest.mark.parametrize("name", ENCAPSULATED)
def test_encapsulated_frames_decoded(srv, name):
    ds = pydicom.dcmread(data_file(name))
    got = client(srv).retrieve_instance_frames(
        *uids(name), frame_numbers=[1], media_types=(("application/octet-stream", EVRLE),))
    assert got == [expected_native(ds, 0)]
    # no transfer-syntax parameter means Explicit VR Little Endian (decoded) too
    octet = 'multipart/related; type="application/octet-stream"'
    response = requests.get(f"{inst_url(srv, name)}/frames/1", timeout=30,
                            headers={"Accept": octet})
    assert parts_of(response) == [(f"application/octet-stream; transfer-syntax={EVRLE}",
                                   expected_native(ds, 0))]


@pytest.mark.parametrize(("name", "label"), [
    ("CT_small.dcm", EVRLE), ("MR_small_bigendian.dcm", EVRLE),
    ("rtdose.dcm", "1.2.840.10008.1.2")])
def test_native_parts_say_transfer_syntax(srv, name, label):
    response = requests.get(f"{inst_url(srv, name)}/frames/1", timeout=30,
                            headers={"Accept": OCTET_ANY})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(
        'multipart/related; type="application/octet-stream"')
    assert "max-age" in response.headers["Cache-Control"]
    [(ctype, _)] = parts_of(response)
    assert ctype == f"application/octet-stream; transfer-syntax={label}"


def test_image_media_type_and_etag(srv):
    url = f"{inst_url(srv, 'SC_rgb_jpeg_dcmtk.dcm')}/frames/1"
    response = requests.get(url, headers={"Accept": 'multipart/related; type="image/jpeg"'},
                            timeout=30)
    [(ctype, body)] = parts_of(response)
    assert ctype == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert Image.open(io.BytesIO(body)).size == (100, 100)
    again = requests.get(url, timeout=30, headers={
        "Accept": 'multipart/related; type="image/jpeg"',
        "If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.content == b""
    # a JPEG frame from a native instance: not served
    jpeg = requests.get(f"{inst_url(srv, 'CT_small.dcm')}/frames/1", timeout=30,
                        headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert jpeg.status_code == 406 and "error" in jpeg.json()


@pytest.mark.parametrize(("frames", "status"), [
    ("0", 400), ("1,a", 400), ("1,,2", 400), ("-1", 400), ("16", 404), ("1,99", 404)])
def test_bad_frame_lists(srv, frames, status):
    response = requests.get(f"{inst_url(srv, 'rtdose.dcm')}/frames/{frames}", timeout=30)
    assert response.status_code == status, response.text
    assert "error" in response.json()


def test_unknown_instance_frames_404(srv):
    s, se, _ = uids("CT_small.dcm")
    response = requests.get(f"{inst_url(srv, (s, se, generate_uid()))}/frames/1", timeout=30)
    assert response.status_code == 404


# -- bulkdata -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "rtdose.dcm", "MR_small_RLE.dcm",
                                  "SC_rgb_rle_2frame.dcm", "MR_small_bigendian.dcm"])
def test_bulkdata_uris_resolve(srv, name):
    c = client(srv)
    # raw GET: dicomweb-client sends "Host: 127.0.0.1" without the port (web.py sets the Host
    # header from the host name alone), so the BulkDataURIs built from it would name port 80
    [meta] = requests.get(f"{inst_url(srv, name)}/metadata", timeout=30).json()
    uri = meta["7FE00010"]["BulkDataURI"]
    got = c.retrieve_bulkdata(uri)
    ds = pydicom.dcmread(data_file(name))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        n = int(ds.get("NumberOfFrames", 1) or 1)
        assert got == [get_frame(ds.PixelData, k, number_of_frames=n) for k in range(n)]
    elif ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2":
        assert got == [ds.pixel_array.astype("<u2").tobytes()]
    else:
        assert got == [ds.PixelData]
    others = [v["BulkDataURI"] for k, v in meta.items()
              if "BulkDataURI" in v and k != "7FE00010"]
    for other in others:  # every URI the metadata gives resolves
        assert c.retrieve_bulkdata(other)


def test_bulkdata_absent_and_malformed(srv):
    url = inst_url(srv, "CT_small.dcm")
    assert requests.get(f"{url}/bulkdata/00091234", timeout=30).status_code == 404
    assert requests.get(f"{url}/bulkdata/7FE0001", timeout=30).status_code == 400


# -- rendered and thumbnail -----------------------------------------------------------------


def image(body: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(body))
    img.load()
    return img


@pytest.mark.parametrize("name", NATIVE + ENCAPSULATED)
def test_instance_rendered(srv, name):
    ds = pydicom.dcmread(data_file(name), stop_before_pixels=True)
    jpeg = client(srv).retrieve_instance_rendered(*uids(name))
    assert image(jpeg).format == "JPEG"
    assert image(jpeg).size == (ds.Columns, ds.Rows)
    png = client(srv).retrieve_instance_rendered(*uids(name), media_types=("image/png",),
                                                 params={"viewport": "32,32"})
    assert image(png).format == "PNG" and max(image(png).size) == 32


def test_frame_rendered_window_and_quality(srv):
    c = client(srv)
    last = c.retrieve_instance_frames_rendered(*uids("rtdose.dcm"), frame_numbers=[15],
                                               media_types=("image/png",))
    first = c.retrieve_instance_frames_rendered(*uids("rtdose.dcm"), frame_numbers=[1],
                                                media_types=("image/png",))
    assert image(last).size == (10, 10) and first != last
    plain = np.asarray(image(c.retrieve_instance_rendered(
        *uids("CT_small.dcm"), media_types=("image/png",))))
    windowed = np.asarray(image(c.retrieve_instance_rendered(
        *uids("CT_small.dcm"), media_types=("image/png",), params={"window": "40,80"})))
    sigmoid = np.asarray(image(c.retrieve_instance_rendered(
        *uids("CT_small.dcm"), media_types=("image/png",),
        params={"window": "40,80,SIGMOID"})))
    assert not np.array_equal(plain, windowed) and not np.array_equal(windowed, sigmoid)
    small = c.retrieve_instance_rendered(*uids("CT_small.dcm"), params={"quality": "5"})
    big = c.retrieve_instance_rendered(*uids("CT_small.dcm"), params={"quality": "100"})
    assert len(small) < len(big)


def test_series_rendered_and_thumbnails(srv):
    s, se, _ = uids("rtdose.dcm")
    response = requests.get(f"{base(srv)}/studies/{s}/series/{se}/rendered", timeout=30)
    assert response.status_code == 200
    parts = parts_of(response)
    assert [c for c, _ in parts] == ["image/jpeg"] and image(parts[0][1]).size == (10, 10)
    for url in (f"{base(srv)}/studies/{s}/thumbnail",
                f"{base(srv)}/studies/{s}/series/{se}/thumbnail",
                f"{inst_url(srv, 'CT_small.dcm')}/thumbnail",
                f"{inst_url(srv, 'SC_rgb_rle_2frame.dcm')}/frames/2/thumbnail"):
        response = requests.get(url, timeout=30)
        assert response.status_code == 200, (url, response.text)
        assert response.headers["Content-Type"] == "image/jpeg"
        assert max(image(response.content).size) <= 128
    big = requests.get(f"{inst_url(srv, 'CT_small.dcm')}/thumbnail?viewport=64,64",
                       headers={"Accept": "image/png"}, timeout=30)
    assert image(big.content).format == "PNG" and image(big.content).size == (64, 64)


@pytest.mark.parametrize(("query", "accept", "status"), [
    ("window=40", None, 400), ("window=40,0", None, 400), ("window=a,b", None, 400),
    ("window=40,80,CUBIC", None, 400), ("viewport=0,10", None, 400),
    ("viewport=1,2,3,4,5,6", None, 400), ("quality=0", None, 400), ("quality=x", None, 400),
    ("", "image/gif", 406)])
def test_rendered_bad_params(srv, query, accept, status):
    response = requests.get(f"{inst_url(srv, 'CT_small.dcm')}/rendered?{query}", timeout=30,
                            headers={"Accept": accept} if accept else {})
    assert response.status_code == status and "error" in response.json()


def test_bad_pixel_data_is_422(srv):
    url = inst_url(srv, srv.broken)
    for path in ("/rendered", "/thumbnail", "/frames/1", "/frames/1/rendered"):
        response = requests.get(url + path, timeout=30)
        assert response.status_code == 422, (path, response.text)
        assert "pixel data" in response.json()["error"]
    assert srv.proc.poll() is None


# -- WADO-URI -------------------------------------------------------------------------------


def wado_uri(server, name_or_uids, **params) -> requests.Response:
    s, se, i = uids(name_or_uids) if isinstance(name_or_uids, str) else name_or_uids
    query = {"requestType": "WADO", "studyUID": s, "seriesUID": se, "objectUID": i, **params}
    return requests.get(f"http://127.0.0.1:{server.http_port}/wado", params=query, timeout=30)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm"])
def test_wado_uri_dicom_as_stored(srv, name):
    response = wado_uri(srv, name, contentType="application/dicom")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom"
    got = pydicom.dcmread(io.BytesIO(response.content))
    assert got.SOPInstanceUID == uids(name)[2]
    assert got.PixelData == pydicom.dcmread(data_file(name)).PixelData
    ts = pydicom.dcmread(data_file(name)).file_meta.TransferSyntaxUID
    assert wado_uri(srv, name, contentType="application/dicom",
                    transferSyntax=ts).status_code == 200


def test_wado_uri_images(srv):
    jpeg = wado_uri(srv, "CT_small.dcm")
    assert jpeg.headers["Content-Type"] == "image/jpeg" and image(jpeg.content).size == (128, 128)
    png = wado_uri(srv, "rtdose.dcm", contentType="image/png", frameNumber="15",
                   rows="5", columns="5")
    assert image(png.content).format == "PNG" and image(png.content).size == (5, 5)
    a = wado_uri(srv, "CT_small.dcm", contentType="image/png")
    b = wado_uri(srv, "CT_small.dcm", contentType="image/png", windowCenter="40",
                 windowWidth="80")
    assert a.content != b.content
    assert wado_uri(srv, "CT_small.dcm", imageQuality="10").status_code == 200
    cached = requests.get(jpeg.url, headers={"If-None-Match": jpeg.headers["ETag"]}, timeout=30)
    assert cached.status_code == 304 and "private" in jpeg.headers["Cache-Control"]


@pytest.mark.parametrize(("params", "status"), [
    ({"requestType": "WADO-RS"}, 400), ({"objectUID": ""}, 400), ({"studyUID": "1.a"}, 400),
    ({"objectUID": "1.2.3.4"}, 404), ({"contentType": "video/mpeg"}, 406),
    ({"contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2.4.50"}, 406),
    ({"frameNumber": "2"}, 404), ({"frameNumber": "x"}, 400), ({"windowCenter": "40"}, 400),
    ({"rows": "0"}, 400), ({"imageQuality": "101"}, 400)])
def test_wado_uri_errors(srv, params, status):
    response = wado_uri(srv, "CT_small.dcm", **params)
    assert response.status_code == status, response.text
    assert "error" in response.json()


def test_wado_uri_broken_pixels(srv):
    response = wado_uri(srv, srv.broken)
    assert response.status_code == 422 and "error" in response.json()
