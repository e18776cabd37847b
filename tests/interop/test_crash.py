"""kill -9 in the middle of a large send: every acknowledged instance survives, nothing partial."""

from __future__ import annotations

import threading

import pydicom
import pytest
from pynetdicom import build_context
from pynetdicom.sop_class import CTImageStorage

from hpacs.store.hot import HotStore
from tests.conftest import start_server, wait_for
from tests.factories import make_ct
from tests.interop.helpers import associate, open_index

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("durability", ["files", "sync"])
def test_kill_9_mid_send_loses_no_acknowledged_instance(tmp_path, durability):
    data = tmp_path / "data"
    srv = start_server(data, "--durability", durability)
    acked: list[pydicom.Dataset] = []
    sent: list[pydicom.Dataset] = []

    def send() -> None:
        assoc = associate(srv, [build_context(CTImageStorage, "1.2.840.10008.1.2.1")])
        try:
            for n in range(2000):
                ds = make_ct(number=n, size=256)
                sent.append(ds)
                status = assoc.send_c_store(ds)
                if status.get("Status") == 0:
                    acked.append(ds)
                if not assoc.is_established:
                    return
        except Exception:
            return
        finally:
            assoc.abort()

    sender = threading.Thread(target=send)
    sender.start()
    wait_for(lambda: len(acked) >= 60, timeout=60)
    srv.kill()  # SIGKILL while a data set is in flight
    sender.join(60)
    assert len(acked) < len(sent) or len(sent) < 2000

    srv = start_server(data, "--durability", durability)  # recovery on start
    assert srv.stop() == 0
    assert list((data / "tmp").iterdir()) == []
    db = open_index(data)
    try:
        for ds in acked:
            entry = db.get_instance(ds.SOPInstanceUID)
            assert entry is not None, ds.SOPInstanceUID
            stored = pydicom.dcmread(data / entry.path)
            assert stored.PixelData == ds.PixelData
        # nothing indexed without its complete file
        instances = db.series_instances(acked[0].SeriesInstanceUID)
        assert len(instances) >= len(acked)
        for ds in sent:
            entry = db.get_instance(ds.SOPInstanceUID)
            if entry is not None:
                assert pydicom.dcmread(data / entry.path).SOPInstanceUID == ds.SOPInstanceUID
            else:
                rel = HotStore.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                             ds.SOPInstanceUID)
                assert not (data / rel).exists()
    finally:
        db.close()
