"""Low-level DICOM encoding facts shared by every layer (no I/O, no pydicom datasets)."""
