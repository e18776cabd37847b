"""Cold storage: append-only zstd packs, one self-describing record per instance.

``ColdStore`` is the whole public surface; ``ColdRef`` is what the index keeps per instance.
"""

from hpacs.store.cold.record import ColdCorruptError, ColdError, ColdRef
from hpacs.store.cold.store import ColdMissingError, ColdStore

__all__ = ["ColdCorruptError", "ColdError", "ColdMissingError", "ColdRef", "ColdStore"]
