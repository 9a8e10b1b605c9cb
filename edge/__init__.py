"""BlastScope edge: the on-device half (capture, quality, segmentation, inference, results).

Never imports TensorFlow: the device runs a TFLite runtime only.
"""

__version__ = "0.1.0"
