"""Compile for the Edge TPU with Coral's ``edgetpu_compiler`` when it is installed.

The compiler only exists for x86-64 Linux from Coral's apt repository. Without it the
CPU model stays in place and the result says so plainly; the static check
(``edgetpu_check``) still tells whether the model would compile fully.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMPILER = "edgetpu_compiler"
_ROW = re.compile(r"^(?P<op>[A-Z][A-Z0-9_]+)\s+(?P<count>\d+)\s+(?P<status>\S.*?)\s*$")
_MEMORY = re.compile(r"(?P<what>On-chip|Off-chip) memory used for (?:caching|streaming uncached) model parameters:\s*(?P<value>[\d.]+\s*\w+)")
_COUNT = re.compile(r"Number of operations that will run on (?P<where>Edge TPU|CPU):\s*(?P<n>\d+)")
_VERSION = re.compile(r"Edge TPU Compiler version\s+(?P<v>\S+)")


@dataclass
class CompileResult:
    compiled: bool
    summary: str
    model: Path | None = None
    log: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"compiled": self.compiled, "summary": self.summary, **self.log}


def parse_compiler_log(text: str) -> dict[str, Any]:
    """Operations mapped / not mapped, on-chip and off-chip memory, and the op table."""
    out: dict[str, Any] = {"operations": []}
    if m := _VERSION.search(text):
        out["compiler_version"] = m["v"]
    for m in _COUNT.finditer(text):
        out["ops_on_edgetpu" if m["where"] == "Edge TPU" else "ops_on_cpu"] = int(m["n"])
    for m in _MEMORY.finditer(text):
        out["on_chip_memory" if m["what"] == "On-chip" else "off_chip_memory"] = m["value"]
    for line in text.splitlines():
        if (m := _ROW.match(line.strip())) and m["op"] != "Operator":
            out["operations"].append({"operator": m["op"], "count": int(m["count"]), "status": m["status"]})
    if "ops_on_edgetpu" not in out and out["operations"]:  # stdout has the table, the .log has the totals
        mapped = sum(o["count"] for o in out["operations"] if o["status"] == "Mapped to Edge TPU")
        out["ops_on_edgetpu"] = mapped
        out["ops_on_cpu"] = sum(o["count"] for o in out["operations"]) - mapped
    return out


def compile_for_edgetpu(model: Path, out_dir: Path, timeout_s: int = 600) -> CompileResult:
    exe = shutil.which(COMPILER)
    if exe is None:
        return CompileResult(False, f"{COMPILER} is not installed on this machine (it runs only on x86-64 Linux "
                             "with Coral's apt repository); the bundle carries the CPU model only. "
                             "See the static check for Edge TPU compatibility.")
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([exe, "--show_operations", "--out_dir", str(out_dir), str(model)],
                          capture_output=True, text=True, timeout=timeout_s)
    text = proc.stdout + proc.stderr
    log = parse_compiler_log(text)
    produced = out_dir / f"{model.stem}_edgetpu.tflite"
    if proc.returncode != 0 or not produced.exists():
        tail = " ".join(text.strip().splitlines()[-3:])
        return CompileResult(False, f"{COMPILER} failed (exit {proc.returncode}): {tail}", None, log)
    on_tpu, on_cpu = log.get("ops_on_edgetpu"), log.get("ops_on_cpu")
    summary = (f"Compiled with {COMPILER} {log.get('compiler_version', '?')}: {on_tpu} operations on the Edge TPU, "
               f"{on_cpu} on the CPU; on-chip parameter memory {log.get('on_chip_memory', '?')}, "
               f"off-chip {log.get('off_chip_memory', '?')}.")
    return CompileResult(True, summary, produced, log)
