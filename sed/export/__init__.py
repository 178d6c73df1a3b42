"""Export: a trained model as a file that runs without the training code (ONNX with the front end
inside, int8 quantisation). The modules of this stage land with the deployment work."""
