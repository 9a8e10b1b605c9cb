"""A signed-out case as DICOM, for the district's second read (issue 37).

Each counted field is one Secondary Capture instance made with highdicom (well kept, and it
builds the modules a validator expects, where hand-written pydicom would have to): the field as
the device analysed it, in the slide coordinate system, the container and the specimen
identified by the case code (a slide number, never a name; also the patient ID, which a
DICOMDIR requires), the device and model as equipment, and in its comments the field's call
and cell counts and the case's final call. Nothing else of the patient module is filled:
nothing the clinic did not enter about the patient is sent, and BlastScope asks for nothing
about the patient.

UIDs are derived from the device, the case and the field (``pydicom.uid.generate_uid`` with
those as its entropy), so a resend carries the same UIDs and the server keeps one instance.

The district's second read comes back the same way: a DICOM Enhanced SR in the case's study
(``second_read_sr``, made by ``blastscope-edge district-read``), which the device reads with
``parse_second_read``: the reader as the person observer, the call as the finding, the comment.

Beside the fields, one Enhanced SR per case version (``case_summary_sr``) carries what the
hematologist reads first: the final call, the white cells counted, the blasts among them and
their percentage, and the differential count per class (model and, where cells were reviewed,
reviewed), with the screening-aid disclaimer. An SR rather than an encapsulated PDF: a viewer
lists its items and a program reads them back (``parse_second_read`` reads the reply the same
way). Codes: the DICOM and LOINC codes where they exist (finding, comment), the project's own
scheme ``99BLASTSCOPE`` for the counts. Not done: the FHIR DiagnosticReport on the server
(the device exports one per case; Orthanc keeps DICOM only).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from edge.analysis.case import differential
from edge.analysis.imagefile import read_rgb
from edge.analysis.labels import is_blast
from edge.analysis.result import DISCLAIMER
from edge.record.second_reads import SecondRead, check_read

#: The series number of second reads in a case's study (the fields are series 1).
SECOND_READ_SERIES = 90
_REPORT = ("18748-4", "LN", "Diagnostic imaging report")
_FINDING = ("121071", "DCM", "Finding")
_COMMENT = ("121106", "DCM", "Comment")
_OBSERVER_NAME = "121008"  # DCM "Person Observer Name"


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


#: The case summary's title and the project's coding scheme for the counts.
_SUMMARY = ("11526-1", "LN", "Pathology study")
_SCHEME = "99BLASTSCOPE"
SUMMARY_SERIES = 2


def _num(code: str, meaning: str, value: float, unit: tuple[str, str]) -> Any:
    return hd.sr.NumContentItem(name=hd.sr.CodedConcept(code, _SCHEME, meaning), value=value,
                                unit=hd.sr.CodedConcept(unit[0], "UCUM", unit[1]), relationship_type="CONTAINS")


def case_summary_sr(case: Mapping[str, Any], counted: list[Mapping[str, Any]], fields: list[Dataset], device: str,
                    model_id: str, final_call: str | None) -> Dataset:
    """The case's call and differential count over its ``counted`` field records as an Enhanced
    SR in the case's study, their instances (``fields``) the evidence; one instance per case
    version (an amended case sent again adds its new one)."""
    model = differential(counted)
    white = sum(model.values())
    blasts = sum(v for k, v in model.items() if is_blast(k))
    cells = ("{cells}", "cells")
    items: list[Any] = [
        hd.sr.TextContentItem(name=hd.sr.CodedConcept(*_FINDING), value=f"final call: {final_call or 'none'}",
                              relationship_type="CONTAINS"),
        _num("WBC", "White cells counted (model)", white, cells),
        _num("BLAST", "Blasts among them (model)", blasts, cells),
    ]
    if white:
        items.append(_num("BLASTPCT", "Blast percentage (model)", round(100.0 * blasts / white, 1), ("%", "percent")))
    items += [_num(f"DIFF-{k}", f"Cells read as {k} (model)", v, cells) for k, v in model.items()]
    if any(f.get("cell_reviews") for f in counted):
        items += [_num(f"RDIFF-{k}", f"Cells reviewed as {k}", v, cells)
                  for k, v in differential(counted, reviewed=True).items()]
    items.append(hd.sr.TextContentItem(name=hd.sr.CodedConcept(*_COMMENT), relationship_type="CONTAINS",
                                       value=f"BlastScope case {case['code']}, model {model_id}. {DISCLAIMER}"[:1024]))
    root = hd.sr.ContainerContentItem(name=hd.sr.CodedConcept(*_SUMMARY), template_id="2000")
    root.ContentSequence = items  # type: ignore[assignment]  # highdicom accepts a list of content items
    sr = hd.sr.EnhancedSR(evidence=fields, content=root, series_instance_uid=_uid("blastscope", device, "case", case["id"],
                                                                                 "summary"),
                          series_number=SUMMARY_SERIES,
                          sop_instance_uid=_uid("blastscope", device, "case", case["id"], "summary", case.get("version", 1)),
                          instance_number=1, manufacturer="BlastScope", is_complete=True, is_final=True)
    sr.SeriesDescription = "BlastScope case summary"
    sr.StationName = device[:16]
    return sr


def case_study_uid(device: str, case_id: int) -> str:
    """The study a device's case is sent as (the same at every resend)."""
    return _uid("blastscope", device, "case", case_id)


def second_read_sr(evidence: Dataset, call: str, comment: str, reader: str, station: str = "district") -> Dataset:
    """A district reader's second read of the study ``evidence`` (one of its instances, or its
    metadata) belongs to, as an Enhanced SR (highdicom): the reader the person observer, the
    call the finding, the comment a comment; patient and study copied from the evidence."""
    from pydicom.sr.codedict import codes

    check_read(call, reader)
    observer = hd.sr.ObserverContext(observer_type=codes.DCM.Person,
                                     observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=reader))
    root = hd.sr.ContainerContentItem(name=hd.sr.CodedConcept(*_REPORT), template_id="2000")
    root.ContentSequence = [  # type: ignore[assignment]  # highdicom accepts a list of content items
        *observer,
        hd.sr.TextContentItem(name=hd.sr.CodedConcept(*_FINDING), value=call, relationship_type="CONTAINS"),
        hd.sr.TextContentItem(name=hd.sr.CodedConcept(*_COMMENT), value=comment or "", relationship_type="CONTAINS"),
    ]
    sr = hd.sr.EnhancedSR(evidence=[evidence], content=root, series_instance_uid=generate_uid(),
                          series_number=SECOND_READ_SERIES, sop_instance_uid=generate_uid(), instance_number=1,
                          manufacturer="BlastScope district", is_complete=True, is_final=True)
    sr.SeriesDescription = "District second read"
    sr.StationName = station[:16]
    return sr


def parse_second_read(ds: Dataset) -> SecondRead:
    """The second read an SR of ``second_read_sr``'s form carries; ValueError for anything else."""
    if ds.get("Modality") != "SR" or "ContentSequence" not in ds:
        raise ValueError("not a structured report")
    concept = ds.get("ConceptNameCodeSequence")
    if not concept or concept[0].CodeValue != _REPORT[0]:
        raise ValueError("not a second read (its title is not a diagnostic imaging report)")
    reader = call = comment = None
    for item in ds.ContentSequence:
        code = item.ConceptNameCodeSequence[0].CodeValue
        if item.ValueType == "PNAME" and code == _OBSERVER_NAME:
            reader = str(item.PersonName).replace("^", " ").strip()
        elif item.ValueType == "TEXT" and code == _FINDING[0]:
            call = str(item.TextValue)
        elif item.ValueType == "TEXT" and code == _COMMENT[0]:
            comment = str(item.TextValue)
    if reader is None or call is None:
        raise ValueError("a second read names its reader and its call")
    when = f"{ds.get('ContentDate', '')}{ds.get('ContentTime', '')}"
    read_at = (f"{when[:4]}-{when[4:6]}-{when[6:8]} {when[8:10]}:{when[10:12]}" if len(when) >= 12 else "")
    return SecondRead(sop_uid=str(ds.SOPInstanceUID), reader=reader, call=call, comment=comment or "", read_at=read_at)


def case_instances(case: Mapping[str, Any], image_of: Callable[[int], Path | None], device: str, model_id: str,
                   final_call: str | None) -> list[Dataset]:
    """The case's counted fields as Secondary Capture instances, then its summary SR (see the
    module docstring)."""
    code = str(case["code"])
    study = case_study_uid(device, int(case["id"]))
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
            # the case code as the patient ID: the clinic's own lab number for the slide, never a
            # name; a DICOMDIR (the USB copy) needs one, and the server then lists a case a "patient"
            patient_id=code[:64],
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
    if out:  # the case's call and counts beside its fields
        out.append(case_summary_sr(case, fields, out, device, model_id, final_call))
    return out
