"""Export: a trained model as a file that runs without the training code: ONNX with the front end
inside (onnx.py), int8 quantisation (quantize.py), an NVIDIA Triton model repository (triton.py)."""
