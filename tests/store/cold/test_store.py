"""ColdStore: byte-exact round trips, corruption never returns wrong bytes, torn tails recover,
compaction keeps live records, concurrent readers."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pydicom
import pytest

from hpacs.store.cold import (
    ColdCorruptError,
    ColdError,
    ColdMissingError,
    ColdRef,
    ColdStore,
)
from hpacs.store.cold.record import HEADER_SIZE, PACK_HEADER
from tests.conftest import pydicom_test_dir, storage_test_files
from tests.factories import make_ct, write


def _all_pydicom_files() -> list[Path]:
    return sorted(p for p in pydicom_test_dir().rglob("*") if p.is_file())


def _modality(path: Path) -> str:
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, force=True).get("Modality", ""))
    except Exception:
        return ""


@pytest.fixture
def store(tmp_path):
    s = ColdStore(tmp_path / "cold", fsync=False)
    yield s
    s.close()


def _filled(root: Path, items: list[tuple[str, bytes]]) -> tuple[list[ColdRef], Path]:
    """Refs of ``items`` appended to a store at ``root`` (closed again), and their pack file."""
    with ColdStore(root, fsync=False) as s:
        refs = [s.append(d, key=u) for u, d in items]
    return refs, root / "packs" / f"{refs[0].pack:08d}.pack"


def _ct_bytes(tmp_path: Path, n: int, size: int = 32) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        ds = make_ct(number=i + 1, size=size)
        out.append((ds.SOPInstanceUID, write(ds, tmp_path / "src").read_bytes()))
    return out


def test_every_pydicom_file_round_trips(tmp_path):
    files = _all_pydicom_files()
    assert len(files) > 100
    assert set(storage_test_files()) <= set(files)
    with ColdStore(tmp_path / "cold", fsync=False, pixel_level=3) as s:
        refs = []
        for i, path in enumerate(files):
            data = path.read_bytes()
            refs.append((s.append(data, key=f"1.2.3.{i}", modality=_modality(path)), data))
        s.sync()
        for ref, data in refs:
            assert s.read(ref) == data
    # and again from a fresh open (nothing held in memory)
    with ColdStore(tmp_path / "cold", fsync=False) as s:
        for ref, data in refs:
            assert s.read(ref) == data
        scanned = dict(s.scan())
        assert scanned == {f"1.2.3.{i}": ref for i, (ref, _) in enumerate(refs)}


def test_empty_and_tiny_inputs(store):
    for data in (b"", b"x", bytes(1000), os.urandom(5000)):
        ref = store.append(data, key="1.2")
        assert ref.size == len(data)
        assert store.read(ref) == data


def test_ref_is_compact_msgpack():
    import msgspec

    ref = ColdRef(pack=3, offset=16, length=100, size=500, checksum=2**64 - 1)
    raw = msgspec.msgpack.encode(ref)
    assert msgspec.msgpack.decode(raw, type=ColdRef) == ref
    assert len(raw) < 24


def test_every_single_byte_corruption_is_detected(tmp_path, store):
    (uid, data), = _ct_bytes(tmp_path, 1, size=8)
    ref = store.append(data, key=uid)
    store.sync()
    path = store.packs_dir / f"{ref.pack:08d}.pack"
    original = path.read_bytes()
    rng = random.Random(1)
    positions = list(range(ref.offset, ref.offset + ref.length))
    for pos in rng.sample(positions, 200) + positions[:HEADER_SIZE]:
        damaged = bytearray(original)
        damaged[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(damaged)
        with ColdStore(store.root, fsync=False) as other, pytest.raises(ColdCorruptError):
            other.read(ref)
    path.write_bytes(original)
    assert ColdStore(store.root, fsync=False).read(ref) == data


def test_wrong_ref_is_an_error_not_wrong_bytes(tmp_path, store):
    (u1, d1), (u2, d2) = _ct_bytes(tmp_path, 2, size=8)
    r1 = store.append(d1, key=u1)
    r2 = store.append(d2, key=u2)
    for bad in (
        ColdRef(r1.pack, r1.offset, r1.length, r1.size, r2.checksum),
        ColdRef(r1.pack, r1.offset, r1.length, r1.size + 1, r1.checksum),
        ColdRef(r1.pack, r1.offset + 1, r1.length, r1.size, r1.checksum),
        ColdRef(r1.pack, r2.offset, r2.length, r1.size, r1.checksum),
        ColdRef(r1.pack, r2.offset + r2.length, 100, 10, 10),
        ColdRef(r1.pack, -5, r1.length, r1.size, r1.checksum),
        ColdRef(r1.pack, 0, r1.length, r1.size, r1.checksum),
        ColdRef(r1.pack, r1.offset, -1, r1.size, r1.checksum),
    ):
        with pytest.raises(ColdCorruptError):
            store.read(bad)
        with pytest.raises(ColdCorruptError):
            store.check(bad)
    with pytest.raises(ColdMissingError):
        store.read(ColdRef(99, r1.offset, r1.length, r1.size, r1.checksum))
    store.check(r2)


def test_torn_tail_is_truncated_and_appends_continue(tmp_path):
    items = _ct_bytes(tmp_path, 4, size=16)
    root = tmp_path / "cold"
    s = ColdStore(root, fsync=False)
    refs = [s.append(d, key=u) for u, d in items[:3]]
    s.sync()
    s.close()
    path = root / "packs" / f"{refs[0].pack:08d}.pack"
    good = path.read_bytes()
    for cut in (1, HEADER_SIZE - 1, HEADER_SIZE + 5, refs[2].length - 1):
        # the crash left part of a 4th record (or garbage) after the last complete one
        torn = good + good[refs[2].offset :][:cut]
        path.write_bytes(torn)
        s = ColdStore(root, fsync=False)
        assert path.stat().st_size == len(good)
        assert [s.read(r) for r in refs] == [d for _, d in items[:3]]
        r4 = s.append(items[3][1], key=items[3][0])
        assert r4.offset == len(good)
        assert s.read(r4) == items[3][1]
        assert [k for k, _ in s.scan()] == [u for u, _ in items]
        s.close()
        path.write_bytes(good)


def test_torn_payload_of_last_record(tmp_path):
    items = _ct_bytes(tmp_path, 3, size=16)
    root = tmp_path / "cold"
    refs, path = _filled(root, items)
    raw = bytearray(path.read_bytes())
    # the last record's header reached the disk, its payload only partly (zeros after a crash)
    end = refs[2].offset + refs[2].length
    raw[end - 10 : end] = bytes(10)
    path.write_bytes(raw)
    with ColdStore(root, fsync=False) as s:
        assert path.stat().st_size == refs[2].offset
        assert [s.read(r) for r in refs[:2]] == [d for _, d in items[:2]]
        with pytest.raises(ColdCorruptError):
            s.read(refs[2])
        again = s.append(items[2][1], key=items[2][0])
        assert s.read(again) == items[2][1]


def test_damage_before_valid_records_is_not_truncated(tmp_path):
    items = _ct_bytes(tmp_path, 3, size=16)
    root = tmp_path / "cold"
    refs, path = _filled(root, items)
    raw = bytearray(path.read_bytes())
    raw[refs[1].offset + HEADER_SIZE + 3] ^= 0xFF  # damage in the middle: bit rot, not a crash
    path.write_bytes(raw)
    # synced records are not re-read at open (the checkpoint): the pack is left alone
    with ColdStore(root, fsync=False) as s:
        assert path.read_bytes() == raw  # untouched
        assert s.read(refs[0]) == items[0][1]
        assert s.read(refs[2]) == items[2][1]
        with pytest.raises(ColdCorruptError):
            s.read(refs[1])
        new = s.append(b"more", key="9.9")
        assert s.read(new) == b"more"
    # without a checkpoint the whole pack is walked: the damage is seen, nothing truncated,
    # and appends go to a new pack
    path.write_bytes(raw)
    (root / "CHECKPOINT").unlink()
    with ColdStore(root, fsync=False) as s:
        assert path.read_bytes() == raw
        assert s.read(refs[2]) == items[2][1]
        new = s.append(b"more", key="9.9")
        assert new.pack != refs[0].pack
        assert s.read(new) == b"more"


def _count_validations(monkeypatch) -> list[int]:
    """Offsets of the records whose payload hash a ColdStore checks (open-time validation)."""
    seen: list[int] = []
    real = ColdStore._valid_at

    def counting(self, fd, offset, limit):
        seen.append(offset)
        return real(self, fd, offset, limit)

    monkeypatch.setattr(ColdStore, "_valid_at", counting)
    return seen


def test_open_checks_only_the_tail_after_the_checkpoint(tmp_path, monkeypatch):
    items = _ct_bytes(tmp_path, 8, size=16)
    root = tmp_path / "cold"
    refs, path = _filled(root, items[:6])
    seen = _count_validations(monkeypatch)
    with ColdStore(root, fsync=False) as s:
        assert seen == [refs[-1].offset]  # the checkpointed record only, not all six
        r7 = s.append(items[6][1], key=items[6][0])
        s.sync()
        checkpoint = (root / "CHECKPOINT").read_bytes()
        r8 = s.append(items[7][1], key=items[7][0])
        s.sync()
        synced = path.read_bytes()
    # a crash after r8 was written but before its sync wrote the checkpoint, r8 torn
    path.write_bytes(synced[: r8.offset + r8.length - 7])
    (root / "CHECKPOINT").write_bytes(checkpoint)
    seen.clear()
    with ColdStore(root, fsync=False) as s:
        assert seen == [r7.offset, r8.offset]  # checkpointed record, then the tail
        assert path.stat().st_size == r8.offset  # torn tail truncated
        assert [s.read(r) for r in [*refs, r7]] == [d for _, d in items[:7]]
        assert [k for k, _ in s.scan()] == [u for u, _ in items[:7]]
    seen.clear()
    with ColdStore(root, fsync=False):  # recovery left a checkpoint at the new end
        assert seen == [r7.offset]


@pytest.mark.parametrize("damage", ["torn", "garbage", "past_end", "wrong_record", "missing"])
def test_a_checkpoint_that_does_not_hold_means_a_full_walk(tmp_path, monkeypatch, damage):
    items = _ct_bytes(tmp_path, 4, size=16)
    root = tmp_path / "cold"
    refs, _ = _filled(root, items)
    cp = root / "CHECKPOINT"
    raw = cp.read_bytes()
    if damage == "torn":
        cp.write_bytes(raw[:-3])
    elif damage == "garbage":
        cp.write_bytes(bytes([raw[0] ^ 1]) + raw[1:])
    elif damage == "missing":
        cp.unlink()
    else:
        # a well-formed checkpoint whose claim is false: past the end of the pack, or
        # naming a record that is not there (the pack lost its last record)
        from hpacs.store.cold.record import Checkpoint, checkpoint_bytes

        end = refs[-1].offset + refs[-1].length
        if damage == "past_end":
            cp.write_bytes(checkpoint_bytes(Checkpoint(refs[0].pack, end + 100, refs[-1].offset)))
        else:
            cp.write_bytes(checkpoint_bytes(Checkpoint(refs[0].pack, end, refs[-1].offset - 1)))
    seen = _count_validations(monkeypatch)
    with ColdStore(root, fsync=False) as s:
        assert seen[-len(refs):] == [r.offset for r in refs]  # every record walked
        assert [s.read(r) for r in refs] == [d for _, d in items]


def test_crash_while_creating_a_pack(tmp_path):
    root = tmp_path / "cold"
    (root / "packs").mkdir(parents=True)
    (root / "packs" / "00000001.pack").write_bytes(b"HPA")
    with ColdStore(root, fsync=False) as s:
        ref = s.append(b"data", key="1.2")
        assert ref.pack == 1 and ref.offset == PACK_HEADER.size
        assert s.read(ref) == b"data"


def test_packs_roll_over_at_pack_size(tmp_path):
    items = _ct_bytes(tmp_path, 6, size=32)
    with ColdStore(tmp_path / "cold", fsync=False, pack_size=4096) as s:
        refs = [s.append(d, key=u) for u, d in items]
        assert len({r.pack for r in refs}) >= 3
        assert [s.read(r) for r in refs] == [d for _, d in items]
        expected = [(u, r) for (u, _), r in zip(items, refs, strict=True)]
        assert list(s.scan()) == expected


def test_compaction_keeps_live_records_and_drops_dead_space(tmp_path):
    items = _ct_bytes(tmp_path, 12, size=32)
    root = tmp_path / "cold"
    with ColdStore(root, fsync=False, pack_size=16384) as s:
        refs = [s.append(d, key=u) for u, d in items]
        s.sync()
        old_packs = set(s.packs())
        before = sum(p.stat().st_size for p in (root / "packs").iterdir())
        live = {r: d for r, (_, d) in zip(refs, items, strict=True) if refs.index(r) % 3 == 0}
        moved = s.compact(live)
        assert set(moved) == set(live)
        assert all(n.pack not in old_packs for n in moved.values())
        s.drop_packs(old_packs)
        after = sum(p.stat().st_size for p in (root / "packs").iterdir())
        assert after < before / 2
        for old, new in moved.items():
            assert s.read(new) == live[old]
            with pytest.raises(ColdMissingError):
                s.read(old)
        more = s.append(b"after", key="7.7")
        assert s.read(more) == b"after"
    with ColdStore(root, fsync=False) as s:
        keys = {k for k, _ in s.scan()}
        assert keys == {u for (u, _), r in zip(items, refs, strict=True) if r in live} | {"7.7"}


def test_compaction_refuses_to_copy_corruption(tmp_path):
    items = _ct_bytes(tmp_path, 2, size=16)
    root = tmp_path / "cold"
    refs, path = _filled(root, items)
    raw = bytearray(path.read_bytes())
    raw[refs[0].offset + refs[0].length - 1] ^= 0x55
    path.write_bytes(raw)
    with ColdStore(root, fsync=False) as s, pytest.raises(ColdCorruptError):
        s.compact(refs)


def test_concurrent_readers_while_appending(tmp_path):
    items = _ct_bytes(tmp_path, 16, size=32)
    with ColdStore(tmp_path / "cold", fsync=False, pack_size=20000) as s:
        refs = [s.append(d, key=u) for u, d in items[:8]]
        expected = dict(zip(refs, (d for _, d in items[:8]), strict=True))
        errors: list[BaseException] = []

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(200):
                    ref = rng.choice(refs[:8])
                    assert s.read(ref) == expected[ref]
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        refs += [s.append(d, key=u) for u, d in items[8:]]
        for t in threads:
            t.join()
        assert not errors
        assert [s.read(r) for r in refs] == [d for _, d in items]


def test_bad_arguments(store):
    with pytest.raises(ColdError):
        store.append(b"x", key="é")
    store.close()
    with pytest.raises(ColdError):
        store.append(b"x", key="1.2")


def test_durable_mode_round_trip(tmp_path):
    """fsync=True: fdatasync of the pack, fsync of the packs and dicts directories on creation."""
    items = _ct_bytes(tmp_path, 24, size=16)
    root = tmp_path / "cold"
    with ColdStore(root, pack_size=8192) as s:
        s.dicts.train_at = 12
        refs = [s.append(d, key=u, modality="CT") for u, d in items]
        s.sync()
        assert any(s._record(r)[0].dict_id for r in refs)
        assert len(s.packs()) > 1
    with ColdStore(root) as s:
        assert [s.read(r) for r in refs] == [d for _, d in items]
        assert [k for k, _ in s.scan()] == [u for u, _ in items]


def test_second_store_on_a_root_is_read_only_and_leaves_the_tail_alone(tmp_path):
    items = _ct_bytes(tmp_path, 2, size=16)
    root = tmp_path / "cold"
    writer = ColdStore(root, fsync=False)
    ref = writer.append(items[0][1], key=items[0][0])
    path = root / "packs" / f"{ref.pack:08d}.pack"
    with path.open("ab") as f:  # the writer is in the middle of its next record
        f.write(b"HPCR\x01")
    size = path.stat().st_size
    with ColdStore(root, fsync=False) as reader:
        assert not reader.writable and writer.writable
        assert path.stat().st_size == size  # no "recovery" under the writer's feet
        assert reader.read(ref) == items[0][1]
        assert [k for k, _ in reader.scan()] == [items[0][0]]
        for call in (lambda: reader.append(b"x", key="1"), lambda: reader.compact([ref]),
                     lambda: reader.drop_packs([ref.pack])):
            with pytest.raises(ColdError):
                call()
    writer.close()  # (its own next append would have overwritten those bytes)
    with ColdStore(root, fsync=False) as again:
        assert again.writable
        assert path.stat().st_size == ref.offset + ref.length  # now the torn tail goes
        assert again.read(ref) == items[0][1]
