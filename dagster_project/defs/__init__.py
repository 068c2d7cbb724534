"""The demo code location's defs folder: one folder per component (``<name>/defs.yaml``)."""
