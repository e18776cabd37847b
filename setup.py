"""Builds the Cython hot paths in hpacs/_ext/ (each beside its pure-Python twin)."""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
extensions = [
    Extension(f"hpacs._ext.{pyx.stem}", [str(pyx.relative_to(HERE))])
    for pyx in sorted((HERE / "hpacs" / "_ext").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        quiet=True,
    ),
)
