"""BlastScope converter: the workstation half (training, int8 quantization, Edge TPU checks,
bundle writing). Depends on ``edge`` so that training preprocesses exactly as the device."""
