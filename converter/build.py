"""The whole converter pipeline: data -> split -> train -> int8 -> calibrate -> evaluate
-> Edge TPU check/compile -> bundle."""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

import edge
from edge.model.bundle import CPU_MODEL, EDGETPU_MODEL
from edge.evaluation.dataset import Sample, load_dataset
from edge.evaluation.evaluate import classify_samples, evaluation_report
from edge.model.inference import BackendManager
from edge.analysis.labels import LABELS
from edge.evaluation.metrics import summarize
from edge.pipeline import Pipeline
from edge.evaluation.robustness import run as run_suite, table as robustness_table
from edge.model.bundle import Bundle
from edge.analysis.screening import Calibration
from edge.analysis.segmentation import SegmentationParams

from converter.augment import augment
from converter.bundle import write_bundle
from converter.calibration import fit_calibration
from converter.compile import compile_for_edgetpu
from converter.gate import clean_figures, fit_gate
from converter.edgetpu_check import check_model
from converter.inputs import load_fields, model_inputs
from converter.model import build_model
from converter.quantize import quantize
from converter.refit import case_figures, fit_case_rule
from converter.split import SplitConfig, select, split_record, split_samples
from converter.train import TrainConfig, train

TRAINED_MODEL = "trained.keras"
TRAINING_HISTORY = "training_history.json"


@dataclass
class BuildConfig:
    data: Path
    out: Path
    weights: str = "imagenet"
    work: Path | None = None  # keeps the trained Keras model; reused when present
    train: TrainConfig = field(default_factory=TrainConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    segmentation: SegmentationParams = field(default_factory=SegmentationParams)
    representative_size: int = 300
    command: str = "blastscope-convert build"


def _labels(samples: list[Sample]) -> np.ndarray:
    return np.array([LABELS.index(s.label) for s in samples])


def _float_probabilities(model: keras.Model, fields: np.ndarray, params: SegmentationParams,
                         rejected: list[bool]) -> list[np.ndarray | None]:
    """Float model probabilities; None where the device rejected the field (same gate)."""
    probs = np.concatenate([model.predict(model_inputs(fields[i : i + 32], params), verbose=0)
                            for i in range(0, len(fields), 32)])
    return [None if r else p for p, r in zip(probs, rejected)]


def representative_fields(fields: np.ndarray, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """The int8 calibration set: the same number of training fields from each class, every
    other one augmented as in training, so the quantization ranges cover the capture
    conditions the device meets and not only clean fields of the commonest class."""
    rng = np.random.default_rng(seed)
    per_class = max(1, size // len(LABELS))
    chosen = []
    for k in range(len(LABELS)):
        members = np.flatnonzero(labels == k)
        chosen.extend(rng.choice(members, size=min(per_class, len(members)), replace=False).tolist())
    return np.stack([augment(fields[i], rng) if n % 2 else fields[i] for n, i in enumerate(sorted(chosen))])


def edgetpu_files(cpu_model: Path, tmp: Path, log: Callable[[str], None]):
    """The static Edge TPU check, the compiled model when the compiler is present, and the
    bundle's model files."""
    check = check_model(cpu_model)
    log(check.table())
    files = {CPU_MODEL: cpu_model}
    compiled = compile_for_edgetpu(cpu_model, tmp / "edgetpu")
    log(compiled.summary)
    if compiled.model is not None:
        files[EDGETPU_MODEL] = compiled.model
    return check, compiled, files


def io_record(backend) -> dict[str, Any]:
    """The model's named inputs and its probabilities output, as the manifest records them."""
    def quant(d) -> dict[str, Any]:
        return {"scale": float(d["quantization"][0]), "zero_point": int(d["quantization"][1])}

    return {
        "inputs": [{"name": name, "index": int(d["index"]), "shape": [int(v) for v in d["shape"]],
                    "dtype": np.dtype(d["dtype"]).name, "quantization": quant(d)} for name, d in backend.inputs.items()],
        "output": {"name": "probabilities", "shape": [int(v) for v in backend.output["shape"]],
                   "dtype": np.dtype(backend.output["dtype"]).name, "quantization": quant(backend.output)},
    }


def _tool_versions() -> dict[str, str]:
    import tensorflow as tf

    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    # OpenCV decides which pixels a cell is cut from and the LiteRT build computes the int8
    # model: both move near-tied fields, so the figures are reproducible only beside them.
    return {"blastscope": edge.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version(), "numpy": np.__version__,
            "opencv": installed("opencv-python-headless"), "ai-edge-litert": installed("ai-edge-litert")}


def build(cfg: BuildConfig, log: Callable[[str], None] = print) -> Path:
    started = time.monotonic()
    dataset = load_dataset(cfg.data)
    for path, reason in dataset.skipped:
        log(f"skipped {path}: {reason}")
    split = split_samples(dataset.samples, cfg.split)
    parts = {name: select(dataset.samples, keys) for name, keys in split.items()}
    log(f"{len(dataset.samples)} fields {dataset.counts()}; split " + ", ".join(f"{k}={len(v)}" for k, v in parts.items()))
    fields = {name: load_fields(samples) for name, samples in parts.items()}
    labels = {name: _labels(samples) for name, samples in parts.items()}

    trained_path = cfg.work / TRAINED_MODEL if cfg.work else None
    history_path = cfg.work / TRAINING_HISTORY if cfg.work else None
    if trained_path is not None and trained_path.exists():
        log(f"reusing trained model {trained_path}")
        model = keras.models.load_model(trained_path)
        history: dict[str, Any] = (json.loads(history_path.read_text())
                                   if history_path is not None and history_path.exists() else {})
        history["reused"] = str(trained_path)
    else:
        model = build_model(cfg.weights)
        history = train(model, fields["train"], labels["train"], fields["val"], labels["val"], cfg.segmentation, cfg.train, log)
        if trained_path is not None and history_path is not None:
            trained_path.parent.mkdir(parents=True, exist_ok=True)
            model.save(trained_path)
            history_path.write_text(json.dumps(history, indent=2))
            log(f"saved {trained_path}")

    representative = representative_fields(fields["train"], labels["train"], cfg.representative_size, cfg.split.seed)
    log(f"quantizing with {len(representative)} representative training fields (stratified, half augmented)")
    tflite = quantize(model, model_inputs(representative, cfg.segmentation))

    with tempfile.TemporaryDirectory() as tmp:
        cpu_model = Path(tmp) / CPU_MODEL
        cpu_model.write_bytes(tflite)
        backends = BackendManager(cpu_model, None, mode="cpu")
        backend = backends.cpu
        provisional = Bundle(Path(tmp), {"model_id": "provisional"}, cfg.segmentation, Calibration())

        pipeline = Pipeline(provisional, backends)
        val_raw = classify_samples(pipeline, parts["val"]).raws
        usable = [i for i, r in enumerate(val_raw) if r is not None]
        fit = fit_calibration(np.stack([r for r in val_raw if r is not None]), labels["val"][usable])
        calibration = fit.calibration
        log(f"calibration {calibration}; bootstrap {fit.report}")

        gate = fit_gate(Pipeline(dataclasses.replace(provisional, calibration=calibration), backends), parts["val"],
                        clean_figures(parts["train"] + parts["val"]), log=log)
        gated = dataclasses.replace(provisional, calibration=calibration,
                                    manifest={"model_id": "provisional", "quality_gate": gate})
        pipeline = Pipeline(gated, backends)
        val_read = classify_samples(pipeline, parts["val"])
        test_read = classify_samples(pipeline, parts["test"])
        val_raw, test_raw = val_read.raws, test_read.raws
        usable = [i for i, r in enumerate(val_raw) if r is not None]
        float_val = _float_probabilities(model, fields["val"], cfg.segmentation, [r is None for r in val_raw])
        float_fit = fit_calibration(np.stack([float_val[i] for i in usable]),  # type: ignore[misc]  # floats for every field
                                    labels["val"][usable])
        log(f"float calibration {float_fit.calibration}")
        case_rule = fit_case_rule(pipeline.bundle, parts["val"], val_read, "validation split, int8 on the device pipeline")
        log(f"case rule {case_rule.to_dict()}")
        pipeline = Pipeline(dataclasses.replace(gated, manifest={
            **gated.manifest, "case_rule": case_rule.to_dict(), "split": {"block_size": cfg.split.block_size}}),
            backends)
        truth = {name: [s.label for s in parts[name]] for name in ("val", "test")}
        metrics: dict[str, Any] = {
            "float_val": summarize(truth["val"], float_val, float_fit.calibration),
            "int8_val": summarize(truth["val"], val_raw, calibration),
            "float_test": summarize(truth["test"], _float_probabilities(model, fields["test"], cfg.segmentation,
                                                                       [r is None for r in test_raw]),
                                    float_fit.calibration),
            "int8_test": evaluation_report(pipeline, parts["test"], test_read),
            "cases_test": case_figures(pipeline.bundle, parts["test"], test_read),
        }
        for name, m in metrics.items():
            if name == "cases_test":
                continue
            log(f"{name}: accuracy={m['accuracy']:.4f} sensitivity={m['malignant_sensitivity']} specificity={m['benign_specificity']}")

        log("capture-condition suite on the test split (blastscope-edge robustness)")
        robustness = run_suite(pipeline, parts["test"])
        log(robustness_table(robustness))

        check, compiled, files = edgetpu_files(cpu_model, Path(tmp), log)
        manifest = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": cfg.command,
            **io_record(backend),
            "segmentation": cfg.segmentation.to_dict(),
            "calibration": calibration.to_dict(),
            "quality_gate": gate,
            "calibration_fit": {"int8": fit.report, "float": {**float_fit.report,
                                                              "calibration": float_fit.calibration.to_dict()}},
            "case_rule": case_rule.to_dict(),
            "split": split_record(split, cfg.split),
            "metrics": metrics,
            "robustness_test": robustness,
            "training": {"weights": str(cfg.weights), "history": history, "representative_size": int(len(representative)),
                         "seconds": round(time.monotonic() - started, 1)},
            "edgetpu_check": check.to_dict(),
            "edgetpu": compiled.to_dict(),
            "tools": _tool_versions(),
            "dataset": {"root": str(cfg.data), "counts": dataset.counts(), "skipped": [[str(p), r] for p, r in dataset.skipped]},
            "training_config": asdict(cfg.train),
            "platform": f"{platform.system()} {platform.machine()} python {sys.version.split()[0]}",
        }
        return write_bundle(cfg.out, files, manifest)
