"""benchmarks/peers.py: an A/B reference reuses a compiled extension only when every source it
is built from is the same (its .pyx and the .pxd it cimports)."""

from benchmarks.peers import _same_sources


def test_a_changed_pxd_makes_the_extension_different(tmp_path):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    for d in (mine, theirs):
        d.mkdir()
        (d / "_enc.pyx").write_text("from hpacs._ext._growbuf cimport Buf\n")
        (d / "_other.pyx").write_text("x = 1\n")
        (d / "_growbuf.pxd").write_text("cdef struct Buf:\n    int n\n")
    assert _same_sources(mine / "_enc.pyx", theirs / "_enc.pyx")
    (theirs / "_growbuf.pxd").write_text("cdef struct Buf:\n    long n\n")
    assert not _same_sources(mine / "_enc.pyx", theirs / "_enc.pyx")
    assert _same_sources(mine / "_other.pyx", theirs / "_other.pyx")  # does not cimport it
    (theirs / "_other.pyx").write_text("x = 2\n")
    assert not _same_sources(mine / "_other.pyx", theirs / "_other.pyx")
