"""BlastScope edge: the on-device half (capture, quality, segmentation, inference, results).

Never imports TensorFlow: the device runs a TFLite runtime only.
"""

from pathlib import Path

#: The one version of the whole project (pyproject.toml reads it; CHANGELOG.md says what changed).
__version__ = "0.4.0"

#: Real sample fields shipped with the package (see samples/ATTRIBUTION.md): the demo's
#: camera, the benchmark's input and the smoke test of a newly installed model.
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
