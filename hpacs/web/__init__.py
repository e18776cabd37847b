"""HTTP: aiohttp on the server's one loop (health and metrics now; DICOMweb later)."""
