"""TEST DOUBLE for Coral's pycoral: the Edge TPU cannot exist on this machine. Put on
PYTHONPATH only by the tests that need an Edge TPU that opens (tests/model/test_edgetpu_process.py)."""
