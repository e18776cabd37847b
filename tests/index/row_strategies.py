"""Hypothesis strategies: the rows of a query match (patient, study, series, instance entries)
with the values an index can hold, and some it should not (keywords at a foreign level, empty
strings, numbers and lists where text is expected, non-ASCII text)."""

from __future__ import annotations

from hypothesis import strategies as st

from hpacs.index.db import InstanceEntry, PatientEntry, SeriesEntry, StudyEntry
from hpacs.index.query import DERIVED
from hpacs.index.schema import LEVEL_KEYWORDS

#: Every keyword a level's attrs may hold, plus the derived ones, the row fields' keywords and
#: one the index never holds.
KEYWORDS = sorted({kw for kws in LEVEL_KEYWORDS.values() for kw in kws}
                  | {kw for kws in DERIVED.values() for kw in kws}
                  | {"PatientID", "IssuerOfPatientID", "StudyInstanceUID", "SeriesInstanceUID",
                     "SOPInstanceUID", "SOPClassUID", "SpecificCharacterSet", "PatientComments"})

ascii_text = st.text(st.characters(codec="ascii", exclude_characters="\0"), max_size=12)
any_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"),
                   max_size=12)
uids = st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,4}){0,5}", fullmatch=True)
values = st.one_of(
    ascii_text, ascii_text, any_text, uids,
    st.lists(ascii_text, min_size=1, max_size=3).map("\\".join),
    st.integers(0, 70000),
    st.lists(st.integers(0, 65535), min_size=2, max_size=3),
)


def attrs(level: str) -> st.SearchStrategy[dict]:
    """A level's attrs: mostly its own keywords, sometimes any keyword."""
    own = st.sampled_from(LEVEL_KEYWORDS[level])
    return st.dictionaries(st.one_of(own, own, own, st.sampled_from(KEYWORDS)), values,
                           max_size=10)


counts = st.integers(0, 5000)
names = st.dictionaries(st.sampled_from(["CT", "MR", "SR", "US", "1.2.840.10008.5.1.4.1.1.2"]),
                        st.integers(1, 9), max_size=3)


@st.composite
def match_rows(draw: st.DrawFn, depth: int) -> list:
    """The rows of a match at ``depth`` (0 = PATIENT ... 3 = IMAGE), patient first."""
    pid, issuer = draw(ascii_text), draw(st.sampled_from(["", "", "ISSUER", "Ä"]))
    rows: list = [PatientEntry(pid, issuer, draw(attrs("patient")), draw(counts), draw(counts),
                               draw(counts))]
    if depth >= 1:
        study = draw(uids)
        rows.append(StudyEntry(study, pid, issuer, draw(attrs("study")), draw(counts),
                               draw(counts), draw(names), draw(names)))
    if depth >= 2:
        series = draw(uids)
        rows.append(SeriesEntry(series, rows[1].study_uid, draw(attrs("series")), draw(counts),
                                draw(names)))
    if depth >= 3:
        rows.append(InstanceEntry(draw(uids), draw(uids), rows[2].series_uid,
                                  "1.2.840.10008.1.2.1", "f/x.dcm", 10, 0.0,
                                  draw(attrs("instance"))))
    return rows
