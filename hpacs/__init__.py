"""hpacs: a high-performance PACS on one asyncio loop, with compiled hot paths."""

__version__ = "0.1.0"
