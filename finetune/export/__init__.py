"""Export: the self-contained model folder with its model card, and its ONNX models, checked through the serving
backends before they are kept."""
