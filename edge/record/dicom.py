"""A signed-out case as DICOM, for the district's second read (issue 37).

Each counted field is one Secondary Capture instance made with highdicom (well kept, and it
builds the modules a validator expects, where hand-written pydicom would have to): the field as
the device analysed it, in the slide coordinate system, the container and the specimen
identified by the case code (a slide number, never a name), the device and model as
equipment, and in its comments the field's call and cell counts and the case's final call. The
patient module is left empty: nothing the clinic did not enter about the patient is sent, and
BlastScope asks for nothing about the patient.

UIDs are derived from the device, the case and the field (``pydicom.uid.generate_uid`` with
those as its entropy), so a resend carries the same UIDs and the server keeps one instance.

Not done yet: the differential as a structured report (TID 1500) and the FHIR report beside
it; the counts travel as text in each instance's comments meanwhile.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from edge.analysis.imagefile import read_rgb
from edge.analysis.result import DISCLAIMER


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def case_instances(case: Mapping[str, Any], image_of: Callable[[int], Path | None], device: str, model_id: str,
                   final_call: str | None) -> list[Dataset]:
    """The case's counted fields as Secondary Capture instances (see the module docstring)."""
    code = str(case["code"])
    study = _uid("blastscope", device, "case", case["id"])
    series = _uid("blastscope", device, "case", case["id"], "fields")
    created = datetime.datetime.fromtimestamp(float(case["created"]))
    signed = case.get("signed") or {}
    out: list[Dataset] = []
    fields = [f for f in case["fields"] if not f.get("excluded") and f.get("status") == "classified"]
    for number, field in enumerate(fields, 1):
        path = image_of(int(field["id"]))
        if path is None:
            continue
        pixels = read_rgb(path)
        cells = field.get("white_cells")
        comments = (f"BlastScope field #{field['id']}: {field.get('call')} ({field.get('label')})"
                    + (f"; {field.get('blasts')} blasts among {cells} white cells" if cells else "")
                    + f". Case {code}: final call {final_call or 'none'}"
                    + (f", signed out by {signed.get('reviewer')}" if signed else "")
                    + f". Model {model_id}. {DISCLAIMER}")
        instance = hd.sc.SCImage(
            pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8, coordinate_system="SLIDE",
            study_instance_uid=study, series_instance_uid=series, series_number=1,
            sop_instance_uid=_uid("blastscope", device, "case", case["id"], "field", field["id"]),
            instance_number=number, manufacturer="BlastScope", accession_number=code[:16], study_id=code[:16],
            study_date=created.date(), study_time=created.time().replace(microsecond=0),
            container_identifier=code,
            specimen_descriptions=[hd.SpecimenDescription(specimen_id=code, specimen_uid=_uid("blastscope", device,
                                                                                             "specimen", case["id"]))],
        )
        instance.PatientOrientation = ""  # type: ignore[assignment]  # type 2C: present, empty (a smear has no patient orientation)
        instance.ImageComments = comments[:10240]
        instance.StudyDescription = f"BlastScope screening aid, case {code}"[:64]
        instance.SeriesDescription = "Smear fields as analysed"
        instance.StationName = device[:16]
        instance.SoftwareVersions = model_id[:64]
        out.append(instance)
    return out
