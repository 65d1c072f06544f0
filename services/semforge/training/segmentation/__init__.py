"""Segmentation models: training data, weight maps, UNet++ training, ONNX export, evaluation."""
