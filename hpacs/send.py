"""`hpacs send`: a storage SCU on the command line (files, or studies/series from the archive).

Files are sent as stored: the data set bytes after the Part 10 meta, in the file's own transfer
syntax (:mod:`hpacs.net.storage_scu`, the same SCU C-MOVE uses). When the destination did not
accept that syntax, the instance is transcoded to the one the same choice as C-MOVE picks
(``hpacs.pixels.transcode.choose_syntax``: Explicit, then Implicit VR LE, then a lossless
syntax we encode; lossy only with ``pixels.allow_lossy_transcode``). Archive instances are found
through a read-only :class:`IndexDB` (no archive lock), so sending works while the server runs.
Instances in the cold tier are read through the archive's tier reader, which opens the cold
store: that is only done when no server owns the data directory (the store's start-up repairs a
torn pack tail, which must never race a live writer); otherwise they fail with a clear reason.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from hpacs.config import Config, RemoteAE
from hpacs.dicom.part10 import Part10Error, read_file_meta
from hpacs.dicom.transfer_syntax import DEFLATED_EXPLICIT_VR_LE
from hpacs.dimse.retrieve import choose_context, store_outcome
from hpacs.net.storage_scu import (
    AssociationFailed,
    OpenedInstance,
    SendError,
    StorageSCU,
    StoredInstance,
    open_instance,
    storage_contexts,
    stored_instance,
)
from hpacs.net.window import Outstanding
from hpacs.store.hot import HotStore
from hpacs.store.tiers import TierError, Tiers

#: Presentation contexts one A-ASSOCIATE-RQ may carry (odd IDs 1..255).
MAX_CONTEXTS = 128
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"


class UsageError(Exception):
    """Bad destination, arguments or archive: exit status 2."""


@dataclass
class SendReport:
    sent: int = 0
    warnings: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (SOP Instance UID, status)
    destination_error: str | None = None
    #: The largest asynchronous operations window a destination association granted.
    window: int = 1


def parse_destination(value: str, config: Config) -> RemoteAE:
    """``AE@host:port`` or the AE title of a ``[[remote]]`` entry."""
    if "@" not in value:
        remote = config.remote_ae(value)
        if remote is None:
            known = ", ".join(r.ae_title for r in config.remote) or "none configured"
            raise UsageError(f"--to {value}: not AE@host:port and not a [[remote]] AE title "
                             f"(known: {known})")
        return remote
    ae, _, address = value.partition("@")
    host, colon, port_text = address.rpartition(":")
    host = host.strip("[]")
    ae = ae.strip()
    if not colon or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"--to {value}: expected AE@host:port")
    if not ae or len(ae) > 16 or "\\" in ae:
        raise UsageError(f"--to {value}: AE title must be 1 to 16 characters, no backslash")
    return RemoteAE(ae, host, int(port_text))


def files_to_send(paths: list[Path]) -> tuple[list[StoredInstance], list[tuple[Path, str]]]:
    """Part 10 files under ``paths``; the others as (path, reason)."""
    from hpacs.store.archive import iter_input_files

    items: list[StoredInstance] = []
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
    for path in iter_input_files(paths):
        try:
            meta = read_file_meta(path)
        except (OSError, Part10Error) as exc:
            skipped.append((path, f"not a DICOM Part 10 file: {exc}"))
            continue
        if not (meta.transfer_syntax_uid and meta.sop_class_uid and meta.sop_instance_uid):
            skipped.append((path, "no Part 10 file meta information (transfer syntax, "
                                  "SOP class and instance UIDs)"))
            continue
        if meta.sop_class_uid == MEDIA_DIRECTORY:
            skipped.append((path, "a DICOMDIR (media storage directory), not an instance"))
            continue
        items.append(StoredInstance(meta.sop_class_uid, meta.sop_instance_uid,
                                    meta.transfer_syntax_uid, path))
    return items, skipped


@contextlib.contextmanager
def cold_reader(config: Config) -> Iterator[Tiers | None]:
    """A tier reader holding the data-dir lock, or None while a server owns the directory."""
    from hpacs.store.archive import Archive, ArchiveLockedError

    archive = Archive(config)
    try:
        archive._take_lock()
    except (ArchiveLockedError, OSError):
        yield None
        return
    tiers = Tiers(HotStore(archive.data_dir, fsync=False))
    try:
        yield tiers
    finally:
        tiers.close()
        archive._release_lock()


def _cold_while_serving() -> BinaryIO:
    raise TierError("in the cold tier and the server owns the archive: retrieve it through "
                    "the server (C-MOVE), or promote it first (POST /api/prefetch)")


def archive_instances(config: Config, studies: list[str], series: list[str],
                      tiers: Tiers | None = None) -> tuple[list[StoredInstance], list[str]]:
    """Instances of the studies and series (read-only index); the UIDs not found."""
    import lmdb

    from hpacs.index.db import IndexDB, IndexSchemaError
    from hpacs.store.archive import INDEX_DIR

    data_dir = Path(config.server.data_dir)
    index_dir = data_dir / INDEX_DIR
    if not (index_dir / "data.mdb").exists():
        raise UsageError(f"{data_dir}: no hpacs archive here (no {index_dir}/data.mdb)")
    try:
        db = IndexDB(index_dir, map_size=config.index.map_size_gb << 30, readonly=True)
    except (lmdb.Error, IndexSchemaError) as exc:
        raise UsageError(f"{index_dir}: cannot open the index read-only: {exc}") from None
    found: dict[str, StoredInstance] = {}
    missing: list[str] = []
    try:
        wanted_series: list[str] = []
        for study_uid in studies:
            if db.get_study(study_uid) is None:
                missing.append(f"study {study_uid}")
            else:
                wanted_series += db.study_series(study_uid)
        for series_uid in series:
            if db.get_series(series_uid) is None:
                missing.append(f"series {series_uid}")
            else:
                wanted_series.append(series_uid)
        for series_uid in dict.fromkeys(wanted_series):
            for sop_uid in db.series_instances(series_uid):
                entry = db.get_instance(sop_uid)
                if entry is None or sop_uid in found:  # deleted meanwhile, or listed twice
                    continue
                item = stored_instance(entry, data_dir, tiers)
                if entry.cold is not None and tiers is None:
                    item = dataclasses.replace(item, source=_cold_while_serving)
                found[sop_uid] = item
    finally:
        db.close()
    return list(found.values()), missing


def association_batches(items: list[StoredInstance]) -> list[list[StoredInstance]]:
    """Items grouped by (SOP class, syntax), cut into batches whose contexts fit one association."""
    groups: dict[tuple[str, str], list[StoredInstance]] = {}
    for it in items:
        groups.setdefault((it.sop_class_uid, it.transfer_syntax_uid), []).append(it)
    batches: list[list[StoredInstance]] = []
    keys: list[tuple[str, str]] = []
    for key in sorted(groups):
        reps = [groups[k][0] for k in (*keys, key)]
        if keys and len(storage_contexts(reps)) > MAX_CONTEXTS:
            batches.append([it for k in keys for it in groups[k]])
            keys = []
        keys.append(key)
    if keys:
        batches.append([it for k in keys for it in groups[k]])
    return batches


async def send_items(items: list[StoredInstance], dest: RemoteAE, calling_ae: str,
                     timeout: float, progress=None, *, allow_lossy: bool = False,
                     workers: int = 2, async_window: int = 1,
                     sendfile: str = "auto") -> SendReport:
    """C-STORE every item to ``dest``, one association per batch of <= 128 contexts, up to
    ``async_window`` C-STOREs outstanding where the destination grants that window (data sets
    by ``sendfile`` as ``dicom.sendfile`` says).

    An association lost mid-instance fails that instance and the rest go on a new association;
    one that cannot be established fails everything not sent yet."""
    report = SendReport()

    def done(n: int = 1) -> None:
        if progress is not None:
            progress(n)

    batches = association_batches(items)
    for b, batch in enumerate(batches):
        pending = list(batch)
        while pending:
            scu = StorageSCU(dest.host, dest.port, called_ae=dest.ae_title,
                             calling_ae=calling_ae, contexts=storage_contexts(pending),
                             timeout=timeout, async_window=async_window, sendfile=sendfile)
            try:
                await scu.connect()
            except AssociationFailed as exc:
                await scu.release()
                report.destination_error = str(exc)
                rest = pending + [it for later in batches[b + 1:] for it in later]
                report.failed += [(it.sop_instance_uid, "not sent: no association")
                                  for it in rest]
                done(len(rest))
                return report
            try:
                pending = await _store_all(scu, pending, report, done, allow_lossy, workers)
            finally:
                await scu.release()
    return report


async def _store_all(scu: StorageSCU, items: list[StoredInstance], report: SendReport,
                     done, allow_lossy: bool = False,
                     workers: int = 2) -> list[StoredInstance]:
    """Send items on one association, up to its granted window of C-STOREs outstanding;
    returns those not sent when it was lost (the ones in flight then fail)."""
    window = Outstanding(scu.window)
    report.window = max(report.window, scu.window)

    def answered(finished: list) -> None:
        for item, task in finished:
            try:
                code = task.result()
            except (AssociationFailed, OSError) as exc:
                report.failed.append((item.sop_instance_uid, f"association lost: {exc}"))
                done()
                continue
            outcome = store_outcome(code)
            if outcome == "failed":
                report.failed.append((item.sop_instance_uid, f"status 0x{code:04X}"))
            else:
                report.sent += 1
                report.warnings += outcome == "warning"
            done()

    try:
        for i, item in enumerate(items):
            while window.full:
                answered(await window.wait())
            answered(window.done())
            if not scu.alive:  # lost while responses were awaited: the rest goes elsewhere
                while len(window):
                    answered(await window.wait())
                return items[i:]
            choice = choose_context(scu.accepted_contexts, item.sop_class_uid,
                                    item.transfer_syntax_uid, allow_lossy=allow_lossy)
            if choice is None:
                offered = sorted({ts for abstract, ts in scu.accepted_contexts.values()
                                  if abstract == item.sop_class_uid})
                report.failed.append((item.sop_instance_uid,
                                      f"destination accepted no context for SOP class "
                                      f"{item.sop_class_uid} in {item.transfer_syntax_uid} or a "
                                      f"syntax we can transcode it to (accepted: "
                                      f"{', '.join(offered) or 'none'})"))
                done()
                continue
            try:
                # a deflated data set may need its pad byte: read, never sent by sendfile
                opened = await open_instance(item, choice[1], allow_lossy=allow_lossy,
                                             workers=workers, region=scu.sendfile and
                                             choice[1] != DEFLATED_EXPLICIT_VR_LE)
            except SendError as exc:
                report.failed.append((item.sop_instance_uid, f"unreadable: {exc}"))
                done()
                continue
            if choice[1] == DEFLATED_EXPLICIT_VR_LE:
                opened = _pad_deflated(opened)
            try:
                response = await scu.invoke(item, choice[0], opened)
            except (AssociationFailed, OSError) as exc:
                report.failed.append((item.sop_instance_uid, f"association lost: {exc}"))
                done()
                while len(window):
                    answered(await window.wait())
                return items[i + 1:]
            finally:
                opened.close()
            window.add(item, response)
        while len(window):
            answered(await window.wait())
        return []
    finally:
        window.cancel()


def _pad_deflated(opened: OpenedInstance) -> OpenedInstance:
    """An odd-length deflated data set with its trailing NUL pad (PS3.5 A.5; peers such as
    dcmtk abort on an odd P-DATA fragment). Deflated files are small: read in memory."""
    if opened.data is None:
        try:
            data = opened.fh.read(opened.remaining)
        finally:
            opened.close()
    else:
        data = opened.data
    if len(data) % 2 == 0:
        return OpenedInstance(None, 0, data)
    return OpenedInstance(None, 0, bytes(data) + b"\0")


async def _send(config: Config, args: argparse.Namespace) -> int:

    dest = parse_destination(args.to, config)
    calling_ae = (args.calling_ae or config.server.ae_title).strip()
    if not calling_ae or len(calling_ae) > 16:
        raise UsageError(f"--calling-ae {calling_ae!r}: 1 to 16 characters")
    if not (args.paths or args.study or args.series):
        raise UsageError("nothing to send: give files or folders, or --study/--series")
    items, skipped = files_to_send(args.paths) if args.paths else ([], [])
    missing: list[str] = []
    with contextlib.ExitStack() as stack:
        if args.study or args.series:
            tiers = stack.enter_context(cold_reader(config))
            found, missing = archive_instances(config, args.study, args.series, tiers)
            items += found
        return await _send_items(config, args, dest, calling_ae, items, skipped, missing)


async def _send_items(config: Config, args: argparse.Namespace, dest: RemoteAE,
                      calling_ae: str, items: list[StoredInstance],
                      skipped: list[tuple[Path, str]], missing: list[str]) -> int:
    from tqdm import tqdm

    for what in missing:
        print(f"hpacs: {what}: not in the archive", file=sys.stderr)
    for path, reason in skipped:
        print(f"  skipped {path}: {reason}")
    if not items:
        print(f"sent 0, failed 0 (nothing to send; {len(skipped)} files skipped)")
        return 1
    with tqdm(total=len(items), unit="inst", disable=args.no_progress, file=sys.stderr) as bar:
        report = await send_items(items, dest, calling_ae, args.timeout, progress=bar.update,
                                  allow_lossy=config.pixels.allow_lossy_transcode,
                                  workers=config.pixels.transcode_workers,
                                  async_window=config.dicom.async_window,
                                  sendfile=config.dicom.sendfile)
    warn = f", {report.warnings} with warning status" if report.warnings else ""
    skip = f", {len(skipped)} files skipped" if skipped else ""
    if report.window > 1:
        skip += f", up to {report.window} C-STOREs outstanding"
    print(f"sent {report.sent}, failed {len(report.failed)} (of {len(items)} instances"
          f" to {dest.ae_title}@{dest.host}:{dest.port}{warn}{skip})")
    for sop_uid, why in report.failed:
        print(f"  failed {sop_uid}: {why}")
    if report.destination_error:
        print(f"hpacs: {dest.ae_title}@{dest.host}:{dest.port}: {report.destination_error}",
              file=sys.stderr)
    return 1 if report.failed or missing or report.destination_error else 0


def run_send(config: Config, args: argparse.Namespace) -> int:
    import uvloop

    try:
        return uvloop.run(_send(config, args))
    except UsageError as exc:
        print(f"hpacs: {exc}", file=sys.stderr)
        return 2
