"""Hypothesis strategy: parsed C-FIND requests asking for any mix of return keys, at any level
of either model, in every transfer syntax, with or without SpecificCharacterSet."""

from __future__ import annotations

from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from hpacs.dimse import find as f

SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"]
STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"

RETURN_KEYS = [
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "OtherPatientIDs", "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances",
    "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber", "ReferringPhysicianName",
    "ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "StudyInstanceUID", "Modality", "SeriesNumber",
    "SeriesDescription", "NumberOfSeriesRelatedInstances", "SeriesInstanceUID",
    "ImageOrientationPatient", "InstanceNumber", "Rows", "Columns", "ImageComments",
    "WindowCenter", "SOPInstanceUID", "SOPClassUID", "RetrieveAETitle", "InstanceAvailability",
    "PatientComments", "ReferencedStudySequence",
]  # fmt: skip
LEVELS = {PATIENT_ROOT: ["PATIENT", "STUDY", "SERIES", "IMAGE"],
          STUDY_ROOT: ["STUDY", "SERIES", "IMAGE"]}  # fmt: skip
DEPTH = {"PATIENT": 0, "STUDY": 1, "SERIES": 2, "IMAGE": 3}


@st.composite
def find_requests(draw: st.DrawFn) -> f.FindRequest:
    """A parsed request; every key universal (the tests give the rows of a match directly)."""
    model = draw(st.sampled_from([STUDY_ROOT, PATIENT_ROOT]))
    level = draw(st.sampled_from(LEVELS[model]))
    syntax = draw(st.sampled_from(SYNTAXES))
    query = Dataset()
    if draw(st.booleans()):
        query.SpecificCharacterSet = "ISO_IR 192"
    query.QueryRetrieveLevel = level
    for keyword in draw(st.lists(st.sampled_from(RETURN_KEYS), unique=True, max_size=14)):
        setattr(query, keyword, [] if keyword.endswith("Sequence") else None)
    explicit = syntax != "1.2.840.10008.1.2"
    little = syntax != "1.2.840.10008.1.2.2"
    return f.parse_find(model, encode(query, not explicit, little), syntax)
