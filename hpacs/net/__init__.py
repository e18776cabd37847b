"""asyncio adapters: the thin I/O shells around the sans-IO upper layer."""
