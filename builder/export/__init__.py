"""From a finished training run to a guard bundle:

onnx       optimum's export, the graph fused, an embedding guard's head appended, int8 quantization
parity     torch vs ONNX fp32 vs ONNX int8 on the validation split: past the tolerances, no bundle
calibrate  thresholds and metrics on the runtime's own scores (texts, and an embedding guard's sentences)
bundle     all of the above in a staging folder, the manifest (``guard.json``), renamed into place
"""

from .bundle import ExportConfig, export_bundle

__all__ = ["ExportConfig", "export_bundle"]
