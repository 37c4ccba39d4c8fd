"""Deployment exports: ONNX (``export_onnx``) with a parity check against PyTorch (``check_parity``).

onnx and onnxruntime are imported only when an export or a check runs, so ``import tmkd.deploy`` needs neither.
"""

from tmkd.deploy.onnx import DEFAULT_ATOL, DEFAULT_OPSET, check_parity, default_onnx_dir, export_onnx, onnx_file

__all__ = ["DEFAULT_ATOL", "DEFAULT_OPSET", "check_parity", "default_onnx_dir", "export_onnx", "onnx_file"]
