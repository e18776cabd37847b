# cython: language_level=3, boundscheck=False, wraparound=False
"""Scanned raw values to an index record, compiled: the twin of ``recordkit.py`` (see its
docstring for the decoding rules).

Each value is decoded straight from the scanner's bytes: integers, the latin-1 "plain" VRs
(UIDs, dates, numbers as strings, codes) and text or names in a one-byte or UTF-8 character
set are stripped and joined in one C pass and made into a str with one codec call. Anything
else (escape sequences of ISO 2022, a multi-byte character set, bytes that are not valid in
the data set's character set) goes to the twin's ``decode_value``, which gives the same result
by construction (tests/_ext/test_recordkit_twins.py holds them equal).
"""

import codecs

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.ref cimport PyObject
from libc.stdlib cimport free, malloc

from hpacs.dicom.text import encodings_for
from hpacs._ext.recordkit import (
    INT, PLAIN, PN, SINGLE_VALUED_TEXT, TEXT, SPECIFIC_CHARACTER_SET, check_uids, decode_value,
)

cdef extern from "Python.h":
    object PyUnicode_DecodeLatin1(const char* s, Py_ssize_t size, const char* errors)
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

cdef int _PLAIN = PLAIN, _TEXT = TEXT, _PN = PN, _INT = INT
cdef object _SVT = SINGLE_VALUED_TEXT
cdef object _SCS = SPECIFIC_CHARACTER_SET
cdef object _SLOW = object()

# how text in a data set's first character set can be decoded here
cdef enum:
    M_NONE = 0    # never: the twin decodes it
    M_LATIN1 = 1  # latin-1: every byte but ESC
    M_UTF8 = 2    # UTF-8 (invalid bytes: the twin)
    M_ASCII = 3   # ASCII bytes decode to themselves (a byte >= 0x80: the twin)

cdef dict _modes = {}
cdef str _LATIN1 = codecs.lookup("latin-1").name
cdef str _UTF8 = codecs.lookup("utf-8").name


cdef int _mode_of(tuple encodings) except -1:
    cdef object cached = _modes.get(encodings)
    if cached is not None:
        return cached
    mode = M_NONE
    name = encodings[0] if encodings else None
    try:
        canonical = codecs.lookup(name).name
    except (LookupError, TypeError):
        canonical = None
    if canonical == _LATIN1:
        mode = M_LATIN1
    elif canonical == _UTF8:
        mode = M_UTF8
    elif canonical is not None:
        ascii = bytes([i for i in range(128) if i != 0x1b])
        try:
            if ascii.decode(name) == ascii.decode("latin-1") and all(
                    bytes([i]).decode(name) == chr(i) for i in ascii):
                mode = M_ASCII
        except Exception:
            pass
    if len(_modes) < 256:
        _modes[encodings] = mode
    return mode


cdef object _decode_str(const char* s, Py_ssize_t n, int mode):
    """The joined bytes as a str (the codec of ``mode``); _SLOW when UTF-8 refuses them."""
    if mode == M_UTF8:
        try:
            return PyUnicode_DecodeUTF8(s, n, NULL)
        except UnicodeDecodeError:
            return _SLOW
    return PyUnicode_DecodeLatin1(s, n, NULL)


cdef object _text(const unsigned char* p, Py_ssize_t n, int kind, bint split, int mode):
    """PLAIN / TEXT / PN: strip each (backslash-separated when ``split``) value, join, decode.
    _SLOW when the twin must decode it."""
    cdef Py_ssize_t i, a, b, o = 0
    cdef unsigned char c
    cdef char* out
    if kind != _PLAIN:
        if mode == M_NONE:
            return _SLOW
        for i in range(n):
            c = p[i]
            if c == 0x1b or (c >= 0x80 and mode == M_ASCII):
                return _SLOW
    out = <char*>malloc(n + 1)
    if out == NULL:
        raise MemoryError()
    try:
        a = 0
        while True:
            b = a
            if split:
                while b < n and p[b] != 0x5c:
                    b += 1
            else:
                b = n
            i = b
            while i > a and (p[i - 1] == 0x20 or p[i - 1] == 0):
                i -= 1
            if kind == _PLAIN:
                while a < i and (p[a] == 0x20 or p[a] == 0):
                    a += 1
            elif kind == _PN:
                while i > a and p[i - 1] == 0x3d:
                    i -= 1
            while a < i:
                out[o] = <char>p[a]
                o += 1
                a += 1
            if b >= n:
                break
            out[o] = b"\\"
            o += 1
            a = b + 1
        return _decode_str(out, o, M_LATIN1 if kind == _PLAIN else mode)
    finally:
        free(out)


cdef object _int(const unsigned char* p, Py_ssize_t n, str vr, bint little):
    cdef int width = 2 if (vr == "US" or vr == "SS") else 4
    cdef bint signed = vr == "SS" or vr == "SL"
    cdef Py_ssize_t count = n // width, k
    cdef unsigned long v
    cdef const unsigned char* q
    cdef list out
    if count == 0:
        return None
    out = []
    for k in range(count):
        q = p + k * width
        if width == 2:
            v = (q[0] | (q[1] << 8)) if little else ((q[0] << 8) | q[1])
            if signed:
                if count == 1:
                    return <long>(<short>v)
                out.append(<long>(<short>v))
                continue
        else:
            if little:
                v = q[0] | (q[1] << 8) | (q[2] << 16) | (<unsigned long>q[3] << 24)
            else:
                v = (<unsigned long>q[0] << 24) | (q[1] << 16) | (q[2] << 8) | q[3]
            if signed:
                if count == 1:
                    return <long>(<int>(<unsigned int>v))
                out.append(<long>(<int>(<unsigned int>v)))
                continue
        if count == 1:
            return v
        out.append(v)
    return out


cdef bint _uid_ok(object uid):
    cdef Py_ssize_t n, i
    cdef const unsigned char* s
    if type(uid) is not str or not PyUnicode_IS_ASCII(uid):
        return False
    n = PyUnicode_GET_LENGTH(uid)
    if n < 1 or n > 64:
        return False
    s = <const unsigned char*>PyUnicode_DATA(uid)
    for i in range(n):
        if not (s[i] == 0x2e or 0x30 <= s[i] <= 0x39):
            return False
    return True


cdef class RecordBuilder:
    """Builds ``record_type`` records from the header scanner's raw values."""

    cdef readonly dict decoders
    cdef readonly object record_type
    cdef readonly object error_type

    def __init__(self, dict decoders, record_type, error_type):
        self.decoders = decoders
        self.record_type = record_type
        self.error_type = error_type

    def build(self, dict values, transfer_syntax, path, size, stored_at, bint little_endian):
        """The record of one instance; raises ``error_type`` on missing/bad UIDs."""
        cdef tuple encodings = encodings_for(values.get(_SCS))
        cdef int mode = -1
        cdef dict patient = {}, study = {}, series = {}, instance = {}
        cdef tuple levels = (patient, study, series, instance)
        cdef PyObject* found
        cdef tuple spec
        cdef int kind
        cdef str vr
        cdef bytes data
        cdef Py_ssize_t n
        cdef const unsigned char* p
        for tag, raw in values.items():
            found = PyDict_GetItem(self.decoders, tag)
            if found == NULL or not raw:
                continue
            spec = <tuple>found
            kind = spec[1]
            vr = spec[2]
            data = raw if type(raw) is bytes else bytes(raw)
            p = <const unsigned char*>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
            if kind == _INT:
                value = _int(p, n, vr, little_endian)
            else:
                if kind != _PLAIN and mode < 0:
                    mode = _mode_of(encodings)
                value = _text(p, n, kind, kind != _TEXT or vr not in _SVT, mode)
                if value is _SLOW:
                    value = decode_value(data, kind, vr, encodings)
            if value is None or value == "":
                continue
            keyword = spec[0]
            for i in <tuple>spec[3]:
                PyDict_SetItem(<dict>levels[i], keyword, value)
        sop = instance.get("SOPInstanceUID")
        sop_class = instance.get("SOPClassUID")
        study_uid = study.get("StudyInstanceUID")
        series_uid = series.get("SeriesInstanceUID")
        if not (_uid_ok(sop) and _uid_ok(sop_class) and _uid_ok(study_uid)
                and _uid_ok(series_uid)):
            # raises, with the twin's message
            sop, sop_class, study_uid, series_uid = check_uids(levels, self.error_type)
        pid = patient.get("PatientID", "")
        issuer = patient.get("IssuerOfPatientID", "")
        return self.record_type(
            sop, sop_class, study_uid, series_uid,
            pid if type(pid) is str else str(pid),
            issuer if type(issuer) is str else str(issuer),
            transfer_syntax, path, size, stored_at, patient, study, series, instance,
        )


# ------------------------------------------------------------------ the index apply fast path
from cpython.object cimport Py_EQ, PyObject_RichCompareBool
from cpython.set cimport PySet_Add
from libc.string cimport memcpy

cdef object _MISSING = object()
cdef bytes _INSTANCES = b"instances", _PATIENTS = b"patients", _STUDIES = b"studies"
cdef bytes _SERIES = b"series"


cdef bint _covers(dict have, dict new) except -1:
    cdef PyObject* old
    for k, v in new.items():
        old = PyDict_GetItem(have, k)
        if old == NULL or not PyObject_RichCompareBool(v, <object>old, Py_EQ):
            return False
    return True


cdef inline void _inc(dict counts, object k) except *:
    cdef PyObject* old = PyDict_GetItem(counts, k)
    new = (<object>old if old != NULL else 0) + 1
    if new <= 0:
        counts.pop(k, None)
    else:
        counts[k] = new


cdef bytes _activity(object st):
    """``hpacs.index.db.activity_key``: max(last_stored, last_access, 0.0) as a big-endian
    double (Python's ``max``: the first of equal values wins)."""
    cdef object m = st.last_stored
    cdef object a = st.last_access
    cdef double d
    cdef unsigned long long u
    cdef unsigned char out[8]
    cdef int i
    if a > m:
        m = a
    if 0.0 > m:
        m = 0.0
    d = m
    memcpy(&u, &d, 8)
    for i in range(8):
        out[i] = (u >> (56 - 8 * i)) & 0xff
    return (<char*>out)[:8]


cdef class Applier:
    """Compiled twin of ``recordkit.Applier`` (see there: the steady state of
    ``IndexDB.apply``, and ``WriteBatch.flush``)."""

    cdef object dbs, decoders, entry_type, order_key, patient_key, encode
    cdef object db_instances, db_patients, db_studies, db_series, db_hot, db_order
    cdef object dec_instances, dec_patients, dec_studies, dec_series

    def __init__(self, dict dbs, dict decoders, entry_type, order_key, patient_key, encode):
        self.dbs = dbs
        self.decoders = decoders
        self.entry_type = entry_type
        self.order_key = order_key
        self.patient_key = patient_key
        self.encode = encode
        self.db_instances = dbs.get(_INSTANCES)
        self.db_patients = dbs.get(_PATIENTS)
        self.db_studies = dbs.get(_STUDIES)
        self.db_series = dbs.get(_SERIES)
        self.db_hot = dbs.get(b"ix_hot_activity")
        self.db_order = dbs.get(b"series_instances")
        self.dec_instances = decoders[_INSTANCES]
        self.dec_patients = decoders[_PATIENTS]
        self.dec_studies = decoders[_STUDIES]
        self.dec_series = decoders[_SERIES]

    cdef object _get(self, dict cache, object txn, object dbi, object dec, bytes k):
        cdef PyObject* found = PyDict_GetItem(cache, k)
        if found != NULL:
            return <object>found
        raw = txn.get(k, db=dbi)
        row = None if raw is None else dec.decode(raw)
        cache[k] = row
        return row

    def apply(self, w, rec):
        cdef dict caches = w._cache
        cdef dict inst_cache = caches[_INSTANCES]
        cdef object txn = w.txn
        cdef bytes sop = rec.sop_instance_uid.encode()
        if self.db_hot is None:
            return False
        if self._get(inst_cache, txn, self.db_instances, self.dec_instances, sop) is not None:
            return False
        patient_id = rec.patient_id
        issuer = rec.issuer_of_patient_id
        cdef bytes pkey = self.patient_key(patient_id, issuer)
        p = self._get(caches[_PATIENTS], txn, self.db_patients, self.dec_patients, pkey)
        if p is None or not _covers(p.attrs, rec.patient):
            return False
        study_uid = rec.study_uid
        cdef bytes study_k = study_uid.encode()
        st = self._get(caches[_STUDIES], txn, self.db_studies, self.dec_studies, study_k)
        if (st is None or st.patient_id != patient_id or st.issuer != issuer
                or not _covers(st.attrs, rec.study)):
            return False
        cdef bytes series_k = rec.series_uid.encode()
        se = self._get(caches[_SERIES], txn, self.db_series, self.dec_series, series_k)
        if se is None or se.study_uid != study_uid or not _covers(se.attrs, rec.series):
            return False
        stored_at = rec.stored_at
        listed = False
        if stored_at > st.last_stored:
            listed = txn.delete(_activity(st), study_k, db=self.db_hot)
            st.last_stored = stored_at
        cold = rec.cold
        if cold is None or listed:
            txn.put(_activity(st), study_k, db=self.db_hot, dupdata=False)
        sop_class = rec.sop_class_uid
        se.n_instances += 1
        _inc(se.sop_classes, sop_class)
        st.n_instances += 1
        _inc(st.sop_classes, sop_class)
        p.n_instances += 1
        instance = rec.instance
        txn.put(series_k, self.order_key(instance.get("InstanceNumber")) + sop,
                db=self.db_order, dupdata=True)
        inst_cache[sop] = self.entry_type(
            rec.sop_instance_uid, sop_class, rec.series_uid, rec.transfer_syntax_uid,
            rec.path, rec.size, stored_at, instance, cold,
        )
        dirty = w._dirty
        PySet_Add(dirty, (_SERIES, series_k))
        PySet_Add(dirty, (_STUDIES, study_k))
        PySet_Add(dirty, (_PATIENTS, pkey))
        PySet_Add(dirty, (_INSTANCES, sop))
        return True

    def flush(self, w):
        cdef object txn = w.txn
        cdef dict dbs = self.dbs
        cdef dict cache = w._cache
        cdef object encode = self.encode
        dirty = w._dirty
        for dbname, k in dirty:
            row = (<dict>cache[dbname])[k]
            if row is None:
                txn.delete(k, db=dbs[dbname])
            else:
                txn.put(k, encode(row), db=dbs[dbname])
        dirty.clear()
