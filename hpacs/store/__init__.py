"""Storage: the hot file store and the ingest pipeline that feeds the index."""
