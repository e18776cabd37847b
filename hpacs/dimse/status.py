"""DIMSE status codes hpacs sends (PS3.7 Annex C, PS3.4 B.2.3)."""

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
#: Refused: out of resources (disk full, index full).
OUT_OF_RESOURCES = 0xA700
#: Error: data set does not match SOP class (or its command).
DATASET_MISMATCH = 0xA900
#: Error: cannot understand (malformed, truncated, missing UIDs).
CANNOT_UNDERSTAND = 0xC000
#: Refused: SOP class not supported.
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: Unrecognized operation.
UNRECOGNIZED_OPERATION = 0x0211
#: Processing failure (an internal error we could not attribute to the request).
PROCESSING_FAILURE = 0x0110
