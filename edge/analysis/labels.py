"""Canonical class labels, shared by the converter, the bundle and the device."""

from __future__ import annotations

#: Model output order. Changing it changes every bundle: the manifest records it.
LABELS: tuple[str, ...] = ("benign", "early_pre_b", "pre_b", "pro_b")

BENIGN = "benign"

DISPLAY_NAMES: dict[str, str] = {
    "benign": "Benign (hematogones)",
    "early_pre_b": "Early Pre-B ALL",
    "pre_b": "Pre-B ALL",
    "pro_b": "Pro-B ALL",
}

#: What a cell may be: the differential a hematologist counts (issue 32). The four labels come
#: first, so a 4-class cell model's outputs are its first four; a differential bundle records
#: its output order as ``cell_labels`` in the manifest. "benign" is then any benign lymphoid
#: cell (a lymphocyte or a hematogone), and "not_a_white_cell" (platelets, clumps, smudges,
#: stain debris) is never counted.
DIFFERENTIAL: tuple[str, ...] = (*LABELS, "neutrophil", "monocyte", "eosinophil", "basophil", "ig", "erythroblast",
                                 "not_a_white_cell")
BLASTS: tuple[str, ...] = ("early_pre_b", "pre_b", "pro_b")
NOT_A_WHITE_CELL = "not_a_white_cell"

#: A cell's class in words. The B-ALL subtype of a blast is a hint, not a diagnosis (the
#: subtypes are defined by flow cytometry), so a blast is named a blast first.
CELL_NAMES: dict[str, str] = {
    "benign": "Benign lymphoid (lymphocyte or hematogone)",
    # the field's subtype names, as a hint on a blast: "Pre-B ALL" -> "Blast (pattern suggests Pre-B)"
    **{b: f"Blast (pattern suggests {DISPLAY_NAMES[b].removesuffix(' ALL')})" for b in BLASTS},
    **dict(neutrophil="Neutrophil", monocyte="Monocyte", eosinophil="Eosinophil", basophil="Basophil",
           ig="Immature granulocyte", erythroblast="Erythroblast (nucleated red cell)", not_a_white_cell="Not a white cell"),
}


def is_blast(label: str | None) -> bool:
    return label in BLASTS
