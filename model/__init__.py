"""The pneumonia classifier's core, shared by training, the CLI and the app.

- ``model.preprocessing``: the one preprocessing path (bytes -> model input)
- ``model.backbones``: backbone registry and the flat classifier graph
- ``model.artifact``: the ``.keras`` + metadata JSON artifact, checksum-verified
- ``model.predictor``: load once, predict fast
- ``model.explain``: Grad-CAM, Grad-CAM++, Score-CAM and overlays

Importing this package is cheap: TensorFlow loads only when a model is built or loaded.
"""
