"""``blastscope-edge district-read``: a district hematologist's second read of a case, stored on
the district's DICOMweb server as a structured report in the case's study (issue 37).

Run where the district server is (it needs the ``district`` extra, not a device): the case is
found by its case code (the study's accession number) or its study UID, the read is made by
``edge.record.dicom.second_read_sr`` with one of the study's own instances as evidence (so the
report joins that study), and stored by STOW-RS. The device that sent the case fetches it back
(``edge.device.district.DistrictSender.fetch_reads``) and shows it on the case, audited.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from edge.device.district import dicomweb_client

#: Each request to the district server bounded (a hung link is an error, not a wait for ever).
TIMEOUT_S = 120.0


def find_study(client: Any, case_code: str | None, study_uid: str | None) -> str:
    """The study of the case; ValueError naming the problem when there is none or several."""
    if study_uid:
        return study_uid
    found = client.search_for_studies(search_filters={"AccessionNumber": case_code})
    uids = [str(s.get("0020000D", {}).get("Value", [""])[0]) for s in found]
    if not uids:
        raise ValueError(f"no study on the server for case {case_code}")
    if len(uids) > 1:
        raise ValueError(f"{len(uids)} studies on the server for case {case_code} (two devices used the same "
                         f"code): give one with --study: {', '.join(uids)}")
    return uids[0]


def store_read(client: Any, study: str, call: str, comment: str, reader: str) -> str:
    """Store the read in ``study``; its SOP instance UID."""
    from pydicom.dataset import Dataset

    from edge.record.dicom import second_read_sr

    metadata = [m for m in client.retrieve_study_metadata(study) if m.get("00080060", {}).get("Value", [""])[0] != "SR"]
    if not metadata:
        raise ValueError(f"study {study} holds no field of a case to read")
    with warnings.catch_warnings():  # the pixel data's bulk-data link is not needed for the evidence
        warnings.simplefilter("ignore")
        evidence = Dataset.from_json(metadata[0])
    sr = second_read_sr(evidence, call, comment, reader)
    client.store_instances([sr])
    return str(sr.SOPInstanceUID)


def main(args: argparse.Namespace) -> int:
    import requests

    if not (args.case or args.study):
        print("error: name the case: --case CODE or --study UID", file=sys.stderr)
        return 2
    try:
        client = dicomweb_client(args.url, args.user, args.password_file, TIMEOUT_S)
        study = find_study(client, args.case, args.study)
        uid = store_read(client, study, args.call, args.comment, args.reader)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except requests.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else 0
        print(f"error: the server answered {code}" + (" (wrong credentials)" if code in (401, 403) else ""), file=sys.stderr)
        return 2
    except requests.ConnectionError as exc:
        print(f"error: the server at {args.url} is not reachable: {type(exc).__name__}", file=sys.stderr)
        return 2
    print(f"second read stored in study {study}: {args.call} by {args.reader} (instance {uid}); the device that "
          f"sent the case shows it when it next looks")
    return 0


def import_main(args: argparse.Namespace) -> int:
    """``district-import FOLDER``: one device's USB export, checked, stored, acknowledged."""
    import requests

    from edge.device.district_usb import import_stick

    folder = Path(args.folder)
    try:
        secret = Path(args.device_password_file).read_text().strip()
        client = dicomweb_client(args.url, args.user, args.password_file, TIMEOUT_S)
        payload = import_stick(folder, secret, client.store_instances)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (requests.HTTPError, requests.ConnectionError) as exc:
        print(f"error: the server at {args.url}: {type(exc).__name__}: {exc}; nothing acknowledged", file=sys.stderr)
        return 2
    print(f"{len(payload['cases'])} case(s) of device {payload['device']} stored; the acknowledgement is on the stick "
          f"for the device (blastscope-edge district usb-ack)")
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser | None = None) -> None:
    i = sub.add_parser("district-import", help="(at the district) store one device's USB export on the district server "
                                               "and write the acknowledgement the device reads back")
    i.add_argument("folder", help="the stick's BLASTSCOPE/<device> folder")
    i.add_argument("--url", required=True)
    i.add_argument("--user", default="")
    i.add_argument("--password-file", help="a file holding the password for the server")
    i.add_argument("--device-password-file", required=True,
                   help="a file holding the device's district password: it authenticates the stick's manifest")
    i.set_defaults(func=import_main)
    d = sub.add_parser("district-read", help="store a district hematologist's second read of a case on the district "
                                             "DICOMweb server (run at the district; needs the district extra)")
    d.add_argument("--url", required=True, help="the DICOMweb root, e.g. https://district.example/dicom-web")
    d.add_argument("--user", default="")
    d.add_argument("--password-file", help="a file holding the password")
    d.add_argument("--case", help="the case code (the study's accession number)")
    d.add_argument("--study", help="the study instance UID (when two devices used one case code)")
    d.add_argument("--call", required=True, choices=["positive", "negative", "uncertain"])
    d.add_argument("--comment", default="")
    d.add_argument("--reader", required=True, help="the reader's name, as it signs the read")
    d.set_defaults(func=main)
