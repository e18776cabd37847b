"""hpacs.pixels.workers: transcoding in worker processes gives the same bytes as in-process,
and its errors come back typed."""

from __future__ import annotations

import asyncio

import pytest

from hpacs.pixels.transcode import TranscodeError, transcode
from hpacs.pixels.workers import run_transcode, transcoded_dataset, transcoded_part10
from tests.pixels.files import TEST_FILES

JLS = "1.2.840.10008.1.2.4.80"
EVRLE = "1.2.840.10008.1.2.1"


@pytest.mark.parametrize("workers", [1, 0])  # a process pool, and the thread executor
def test_same_bytes_as_in_process(workers):
    path = TEST_FILES / "CT_small.dcm"

    async def both():
        return await asyncio.gather(
            run_transcode(transcoded_dataset, path, JLS, workers=workers),
            run_transcode(transcoded_part10, path.read_bytes(), EVRLE, workers=workers))

    dataset, part10 = asyncio.run(both())
    assert dataset == transcode(path, JLS).dataset
    assert part10 == transcode(path, EVRLE).part10()


def test_errors_come_back_typed():
    with pytest.raises(TranscodeError, match=r"1\.2\.840\.10008\.1\.2\.4\.91"):
        asyncio.run(run_transcode(transcoded_dataset, TEST_FILES / "CT_small.dcm",
                                  "1.2.840.10008.1.2.4.91", workers=1))
