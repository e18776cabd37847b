"""One typed configuration: embedded defaults, a TOML file, then environment, then CLI flags.

Every CLI flag has a config key (``section.key``) and an environment variable
``HPACS_SECTION__KEY`` (e.g. ``HPACS_SERVER__DICOM_PORT=104``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

DuplicatePolicy = Literal["keep", "replace", "reject"]
Durability = Literal["files", "sync"]
SendfilePolicy = Literal["auto", "always", "never"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path = Path("./hpacs-data")
    host: str = "127.0.0.1"
    dicom_port: int = 11112
    http_port: int = 8042
    ae_title: str = "HPACS"
    #: The URL clients reach the HTTP port at (e.g. behind a proxy), used in BulkDataURIs and
    #: STOW-RS RetrieveURLs; empty: taken from each request's Host header.
    public_url: str = ""
    #: Origins allowed to call the HTTP API from a browser (CORS); "*" allows any.
    cors_origins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DicomConfig:
    check_called_ae: bool = True
    #: Calling AE titles allowed to associate; empty means anyone.
    allowed_calling_aes: tuple[str, ...] = ()
    max_associations: int = 64
    #: Largest P-DATA PDU we accept (announced in A-ASSOCIATE-AC); 0 is not allowed here.
    max_pdu_length: int = 1_048_576
    #: ARTIM (PS3.8 9.1.5): waiting for A-ASSOCIATE-RQ after connect, and for close after release.
    acse_timeout: float = 30.0
    #: An association with no traffic for this long is aborted.
    idle_timeout: float = 300.0
    #: Stop reading from a peer while more received bytes than this wait for the disk (read
    #: again below half): memory stays bounded when the network outruns the disk.
    disk_backlog_bytes: int = 64 << 20
    #: Associations a C-MOVE opens to its destination, the instances split between them
    #: (values below 1 count as 1). 1 follows PS3.4 C.4.2.3.1's wording ("that Association");
    #: more is faster against a destination that handles associations in parallel, see
    #: hpacs/net/retrieve_service.py and docs/CONFORMANCE.md.
    move_associations: int = 1
    #: Asynchronous operations window (PS3.7 D.3.3.3): most C-STORE sub-operations (C-GET,
    #: C-MOVE, ``hpacs send``) outstanding at once when the peer negotiates a window, and most
    #: operations a peer may invoke on us without waiting. 1 turns it off (one at a time, what
    #: every peer that proposes no window gets anyway; values below 1 count as 1).
    async_window: int = 16
    #: When a stored data set goes from the page cache to the socket by ``sendfile`` on
    #: C-GET, C-MOVE and ``hpacs send``: "auto" only while more than one C-STORE may be
    #: outstanding (an asynchronous operations window: there it cuts the server's CPU per
    #: study ~30 %; one at a time, to dcmtk receivers writing files, it measured 0.84-0.96x
    #: of the buffered path), "always", or "never".
    sendfile: SendfilePolicy = "auto"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    #: What a re-sent SOP Instance UID does: keep the first copy (and answer success),
    #: replace it atomically, or reject the new copy with a failure status.
    duplicate_policy: DuplicatePolicy = "keep"
    #: fsync every file before it is acknowledged (turn off only for throwaway benchmarks).
    fsync: bool = True
    #: Worker processes computing each new instance's DICOM JSON for WADO-RS /metadata right
    #: after ingest (0: compute it on the first request instead).
    metadata_workers: int = 1


@dataclass(frozen=True, slots=True)
class IndexConfig:
    #: "files": fsync'd files are the log, the index is synced every sync_interval and
    #: recovered from newer files after a crash. "sync": every index commit is fsync'd.
    durability: Durability = "files"
    sync_interval: float = 1.0
    max_batch: int = 512
    map_size_gb: int = 64


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    """Hot -> cold migration rules (``[lifecycle]``) and promotion back to hot."""

    #: Run the rules in the server's background (``hpacs migrate`` runs them by hand anyway).
    enabled: bool = False
    #: Seconds between two rule runs of the background task.
    interval: float = 600.0
    #: Migrate a study idle (no read, no new instance) for this many days; 0 = every study,
    #: negative = no age rule.
    older_than_days: float = 90.0
    #: Capacity rule: above ``high_watermark`` (fraction of the hot capacity used) migrate the
    #: least recently used studies until below ``low_watermark``; 0 disables it.
    high_watermark: float = 0.0
    low_watermark: float = 0.0
    #: Hot capacity in GB for the watermarks; 0 = the hot file system (``shutil.disk_usage``).
    hot_capacity_gb: float = 0.0
    #: Never migrate studies of patients whose PatientID matches one of these fnmatch patterns.
    exclude_patient_ids: tuple[str, ...] = ()
    #: Migration rate limit in MB/s (0 = unlimited); migration also pauses while ingest runs.
    rate_mb_s: float = 40.0
    #: A study read from cold is promoted back to hot (in the background, after the read).
    promote_on_read: bool = True
    #: Seconds between flushes of studies' last-access times to the index.
    access_flush_interval: float = 30.0
    #: Cold pack size (MB) and zstd level.
    pack_size_mb: int = 1024
    level: int = 3
    #: After each rule run, rewrite cold packs at least this fraction dead (records of promoted
    #: or replaced instances); 0 = never (``hpacs compact`` still does it by hand).
    compact_dead_fraction: float = 0.5


@dataclass(frozen=True, slots=True)
class PrefetchConfig:
    """Prefetch of priors (``[prefetch]``): promote a patient's relevant priors to hot."""

    #: Prefetch when a new study arrives for a patient.
    on_new_study: bool = True
    #: How many priors (see hpacs.index.priors for the relevance order).
    priors: int = 3


@dataclass(frozen=True, slots=True)
class QueryConfig:
    #: C-FIND: at most this many matches are returned; beyond it the final status is 0xA700
    #: ("more than N matches: narrow the query") after the first N pending responses.
    max_matches: int = 10000
    #: PN attributes (PatientName...) match case-insensitively (wildcards and single values).
    case_insensitive_names: bool = True


@dataclass(frozen=True, slots=True)
class PixelsConfig:
    #: Transcoding on retrieve may produce a lossy syntax (JPEG-LS near-lossless, JPEG 2000)
    #: from lossless data, and only when the requester named that syntax. Off: lossless data
    #: is only ever sent losslessly (uncompressed, deflate, RLE, JPEG-LS/JPEG 2000 lossless).
    allow_lossy_transcode: bool = False
    #: Worker processes for transcoding (codecs hold the GIL: in threads they would stall the
    #: event loop); 0 transcodes in the loop's thread executor instead.
    transcode_workers: int = 2


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "INFO"
    #: "json" for one JSON object per line, "text" for humans.
    format: str = "json"


@dataclass(frozen=True, slots=True)
class ViewerConfig:
    #: Serve the OHIF viewer at the root of the HTTP port (DICOMweb stays under /dicom-web).
    enabled: bool = True
    #: Where the OHIF build is installed; empty: the pinned version under the Python prefix
    #: (``.venv/share/ohif/VERSION``, where ``make install`` puts it).
    dist_dir: str = ""
    #: How many priors ``/compare/{study}`` opens beside the study (OHIF's hpCompare shows one).
    compare_priors: int = 1


@dataclass(frozen=True, slots=True)
class RemoteAE:
    """A peer we may send to: a C-MOVE destination (``[[remote]]`` in TOML)."""

    ae_title: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    dicom: DicomConfig = field(default_factory=DicomConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    prefetch: PrefetchConfig = field(default_factory=PrefetchConfig)
    pixels: PixelsConfig = field(default_factory=PixelsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    viewer: ViewerConfig = field(default_factory=ViewerConfig)
    #: C-MOVE destinations by AE title: ``[[remote]]`` tables in TOML, or the environment
    #: variable ``HPACS_REMOTE="AE1@host:port,AE2@host:port"`` (replaces the file's list).
    remote: tuple[RemoteAE, ...] = ()

    def remote_ae(self, ae_title: str) -> RemoteAE | None:
        title = ae_title.strip()
        return next((r for r in self.remote if r.ae_title == title), None)


class ConfigError(ValueError):
    """A config file, variable or flag that does not fit the schema."""


def _coerce(value: Any, annotation: str, where: str) -> Any:
    try:
        if annotation == "Path":
            return Path(value)
        if annotation == "bool":
            if isinstance(value, str):
                if value.lower() in {"1", "true", "yes", "on"}:
                    return True
                if value.lower() in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(value)
            return bool(value)
        if annotation == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if annotation == "float":
            return float(value)
        if annotation.startswith("tuple"):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            return tuple(str(v) for v in value)
        if annotation in {"DuplicatePolicy", "Durability", "SendfilePolicy"}:
            allowed = {"DuplicatePolicy": ("keep", "replace", "reject"),
                       "Durability": ("files", "sync"),
                       "SendfilePolicy": ("auto", "always", "never")}[annotation]
            if value not in allowed:
                raise ValueError(f"must be one of {', '.join(allowed)}")
            return value
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: invalid value {value!r} ({exc})") from None


def _remote_entry(value: Any, where: str) -> RemoteAE:
    if isinstance(value, str):  # "AE@host:port"
        ae, at, address = value.partition("@")
        host, colon, port = address.rpartition(":")
        if not (at and colon):
            raise ConfigError(f"{where}: expected AE@host:port, got {value!r}")
        value = {"ae_title": ae, "host": host, "port": port}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table with ae_title, host, port")
    unknown = set(value) - {"ae_title", "host", "port"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    try:
        ae, host, port = str(value["ae_title"]).strip(), str(value["host"]), value["port"]
    except KeyError as exc:
        raise ConfigError(f"{where}: missing {exc.args[0]!r}") from None
    port = _coerce(port, "int", f"{where}.port")
    if not ae or len(ae) > 16 or "\\" in ae:
        raise ConfigError(f"{where}.ae_title: 1 to 16 characters, no backslash: {ae!r}")
    if not 0 < port < 65536:
        raise ConfigError(f"{where}.port: out of range: {port}")
    return RemoteAE(ae, host, port)


def _remotes(value: Any, where: str) -> tuple[RemoteAE, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: expected a list of [[remote]] tables")
    out = tuple(_remote_entry(v, f"{where}[{i}]") for i, v in enumerate(value))
    titles = [r.ae_title for r in out]
    if len(set(titles)) != len(titles):
        raise ConfigError(f"{where}: an AE title appears twice")
    return out


def _merge(base: Any, updates: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(base)}
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}")
        if key == "remote" and isinstance(base, Config):
            changes[key] = _remotes(value, f"{where}.remote")
            continue
        current = getattr(base, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a table")
            changes[key] = _merge(current, value, f"{where}.{key}")
        else:
            changes[key] = _coerce(value, str(known[key].type), f"{where}.{key}")
    return replace(base, **changes)


def _env_updates(environ: dict[str, str]) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    for name, value in environ.items():
        if name == "HPACS_REMOTE":
            updates["remote"] = value
            continue
        if name.startswith("HPACS_") and "__" in name:
            section, key = name[len("HPACS_"):].lower().split("__", 1)
            updates.setdefault(section, {})[key] = value
    return updates


def load_config(
    path: Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Defaults, then the TOML file, then HPACS_* variables, then explicit overrides (CLI)."""
    config = Config()
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        config = _merge(config, data, str(path))
    config = _merge(config, _env_updates(dict(os.environ if environ is None else environ)), "env")
    if overrides:
        config = _merge(config, overrides, "flags")
    return config
