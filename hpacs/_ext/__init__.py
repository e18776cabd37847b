"""Compiled hot paths (Cython), each beside the pure-Python twin it must match."""
