"""Rendering: PNG is lossless so it must equal the windowed pixels exactly; JPEG decodes to
the right size and close to them; viewports keep the aspect ratio; colour stays colour."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut

from hpacs.pixels import PixelDataError, RenderOptions, render, thumbnail, to_uint8
from hpacs.pixels.render import fit, frame_to_uint8


def _img(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_png_of_a_ct_equals_the_windowed_pixels():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    png = _img(render(ds, options=RenderOptions(fmt="png")))
    assert png.format == "PNG" and png.mode == "L"
    assert np.array_equal(np.asarray(png), to_uint8(ds.pixel_array, ds))


def test_explicit_window_overrides_the_data_sets():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    narrow = np.asarray(_img(render(ds, options=RenderOptions(fmt="png", window=(40, 80)))))
    default = np.asarray(_img(render(ds, options=RenderOptions(fmt="png"))))
    assert not np.array_equal(narrow, default)
    assert np.array_equal(narrow, to_uint8(ds.pixel_array, ds, center=40, width=80))


def test_jpeg_is_close_to_the_windowed_pixels():
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    jpeg = _img(render(ds, options=RenderOptions(quality=95)))
    assert jpeg.format == "JPEG" and jpeg.size == (ds.Columns, ds.Rows)
    diff = np.abs(np.asarray(jpeg).astype(int) - to_uint8(ds.pixel_array, ds).astype(int))
    assert diff.mean() < 3


def test_viewport_keeps_the_aspect_ratio():
    assert fit((512, 256), (128, 128)) == (128, 64)
    assert fit((300, 600), (100, 400)) == (100, 200)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    small = _img(render(ds, options=RenderOptions(viewport=(32, 100))))
    assert small.size == (32, 32)
    assert _img(thumbnail(ds, 16)).size == (16, 16)


@pytest.mark.parametrize("name", ["SC_rgb_small_odd.dcm", "SC_ybr_full_422_uncompressed.dcm",
                                  "SC_rgb_rle_16bit.dcm"])
def test_colour_images_render_as_rgb(name):
    ds = pydicom.dcmread(get_testdata_file(name))
    png = _img(render(ds, options=RenderOptions(fmt="png")))
    assert png.mode == "RGB"
    expected = ds.pixel_array
    if expected.dtype != np.uint8:
        expected = (expected >> (ds.BitsStored - 8)).astype(np.uint8)
    assert np.array_equal(np.asarray(png), expected)


def test_palette_colour_goes_through_the_colour_lut():
    ds = pydicom.dcmread(get_testdata_file("examples_palette.dcm"))
    out = frame_to_uint8(ds)
    rgb = apply_color_lut(ds.pixel_array, ds)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.array_equal(out, (rgb >> 8).astype(np.uint8))


def test_multi_frame_selects_the_frame():
    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))  # 15 frames, bundled
    first = np.asarray(_img(render(ds, 0, RenderOptions(fmt="png"))))
    last = np.asarray(_img(render(ds, ds.NumberOfFrames - 1, RenderOptions(fmt="png"))))
    assert not np.array_equal(first, last)
    with pytest.raises(PixelDataError):
        render(ds, ds.NumberOfFrames)
