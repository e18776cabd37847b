"""The embedded LMDB index: schema/decoding, the database, and the group-commit writer."""

from hpacs.index.db import (
    IndexDB,
    IndexSchemaError,
    InstanceEntry,
    PatientEntry,
    SeriesEntry,
    StudyEntry,
)
from hpacs.index.schema import WANTED_TAGS, InstanceRecord, RecordError, record_from_scan
from hpacs.index.writer import CommitResult, IndexWriteError, IndexWriter

__all__ = [
    "WANTED_TAGS",
    "CommitResult",
    "IndexDB",
    "IndexSchemaError",
    "IndexWriteError",
    "IndexWriter",
    "InstanceEntry",
    "InstanceRecord",
    "PatientEntry",
    "RecordError",
    "SeriesEntry",
    "StudyEntry",
    "record_from_scan",
]
