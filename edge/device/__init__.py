"""The running device: its settings, installed models, camera, the service that wires the
pipeline to the record, systemd notification and the HTTP server."""
