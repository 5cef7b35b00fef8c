"""Serving an export: the backends that follow the prediction contract (ONNX Runtime, PyTorch), batch
prediction, the HTTP service with its web page, the load test and the headless-browser helper."""
