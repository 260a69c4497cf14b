"""From a training run to a guard bundle: ONNX export, int8 quantization, the parity gate, calibrated thresholds,
and the manifest (``guard.json``) that ``guard_sdk`` loads."""

from .bundle import ExportConfig, ParityReport, export_bundle

__all__ = ["ExportConfig", "ParityReport", "export_bundle"]
