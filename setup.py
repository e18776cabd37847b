"""Builds the Cython hot paths in hpacs/_ext/ (each beside its pure-Python twin)."""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
# Per-extension compiler flags. _voi: its float32 loop is written for gcc's vectorizer (the
# machine's own SIMD: the extensions are built where they run), and no contraction into fused
# multiply-adds, so the compiled arithmetic stays the twin's, operation for operation.
FLAGS = {"_voi": ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp"]}
LINK = {"_voi": ["-fopenmp"]}
extensions = [
    Extension(
        f"hpacs._ext.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        extra_compile_args=FLAGS.get(pyx.stem, []),
        extra_link_args=LINK.get(pyx.stem, []),
    )
    for pyx in sorted((HERE / "hpacs" / "_ext").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        quiet=True,
    ),
)
