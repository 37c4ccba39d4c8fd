"""Deployment: ONNX exports (``export_onnx``) with a parity check against PyTorch (``check_parity``), and CPU latency
of either backend (:mod:`tmkd.deploy.latency`, :func:`tmkd.deploy.onnx.onnx_latency`).

onnx and onnxruntime are imported only when an export or a check runs, so ``import tmkd.deploy`` needs neither.
"""

from tmkd.deploy.onnx import DEFAULT_ATOL, DEFAULT_OPSET, check_parity, default_onnx_dir, export_onnx, onnx_file

__all__ = ["DEFAULT_ATOL", "DEFAULT_OPSET", "check_parity", "default_onnx_dir", "export_onnx", "onnx_file"]
