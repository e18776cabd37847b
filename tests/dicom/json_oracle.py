"""Holding our DICOM JSON to pydicom's ``to_json_dict``, modulo the model choices documented in
hpacs/dicom/dicomjson.py (null for empty multi-value items, no padding, bulk data only at the top
level, elements pydicom cannot convert)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydicom.dataset import Dataset

BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


def pydicom_reference(ds: Dataset) -> dict:
    """pydicom's JSON per element; elements pydicom cannot convert (invalid values) are left
    out of the comparison instead of failing it."""
    out = {}
    for elem in ds:
        try:
            out[f"{int(elem.tag):08X}"] = elem.to_json_dict(1024, lambda e: "bulk")
        except Exception:
            continue
    return out


def _norm_value(v):
    if isinstance(v, dict):
        return {k: _norm_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_norm_value(x) for x in v]
    if isinstance(v, str):
        v = v.strip()  # pydicom keeps padding inside multi-valued strings
        return v or None  # PS3.18 F.2.5: an empty value in a multi-valued element is null
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def compare_json(ours: dict, ref: dict, bulk_base: str, where: str = "",
                 top: bool = True) -> list[str]:
    """Differences between our JSON and pydicom's beyond the documented model choices."""
    problems = []
    for key, expected in ref.items():
        got = ours.get(key)
        at = f"{where}{key}"
        if got is None:
            problems.append(f"{at}: missing")
            continue
        vr = str(expected["vr"])
        if got["vr"] != vr:
            problems.append(f"{at}: VR {got['vr']} != {vr}")
            continue
        if vr == "SQ":
            items_o, items_r = got.get("Value", []), expected.get("Value", [])
            if len(items_o) != len(items_r):
                problems.append(f"{at}: {len(items_o)} items != {len(items_r)}")
                continue
            for i, (a, b) in enumerate(zip(items_o, items_r, strict=True)):
                problems += compare_json(a, b, bulk_base, f"{at}[{i}].", False)
            continue
        if vr in BINARY and ("BulkDataURI" in got or "BulkDataURI" in expected):
            # our rule: bulk at the top level only, inline below (the bulkdata route addresses
            # top-level tags); pydicom's handler is called at any depth
            uri = urlsplit(got.get("BulkDataURI", "")).path
            if top and uri != urlsplit(f"{bulk_base}/bulkdata/{key}").path:
                problems.append(f"{at}: BulkDataURI {uri!r}")
            elif not top and "InlineBinary" not in got:
                problems.append(f"{at}: not inline")
            continue
        if _norm_value(got) != _norm_value(expected):
            problems.append(f"{at}: {str(got)[:100]} != {str(expected)[:100]}")
    return problems  # keys only we have: values pydicom could not convert (see _reference)
