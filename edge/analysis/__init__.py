"""Image analysis of one field: numpy and OpenCV only, no model, no device, no record."""
