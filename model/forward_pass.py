"""One forward pass for prediction and explanation, on two engines.

The pass returns everything downstream code needs from the network at once:
the PNEUMONIA logit, the pooled features (for the out-of-distribution gate),
the Grad-CAM layer's activations and the gradient of the logit with respect to
them (for every CAM method). It is written once, as a ``tf.function`` over the
Keras model, and used two ways:

- in process with TensorFlow (training, where the model is being fitted);
- exported to a LiteRT (TFLite) flat buffer that the app and the CLI run with
  the small ``ai-edge-litert`` interpreter. TensorFlow alone takes ~650 MB of
  memory once imported; the whole app on LiteRT stays well under the ~690 MB a
  small hosted container allows, and one image runs in about half the time.

Both engines compute the same graph; tests hold them to 1e-4.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.artifact import NetworkLayout


@dataclass(frozen=True)
class ForwardPass:
    logits: np.ndarray  # (N,) raw PNEUMONIA logits, before temperature scaling
    features: np.ndarray  # (N, D) the population gate's input: the metadata's feature layer, average-pooled
    activations: np.ndarray  # (N, h, w, C) the Grad-CAM layer's output
    gradients: np.ndarray  # (N, h, w, C) d logit / d activations


def _to_pass(outputs: dict) -> ForwardPass:
    return ForwardPass(np.asarray(outputs["logits"])[:, 0], np.asarray(outputs["features"]),
                       np.asarray(outputs["activations"]), np.asarray(outputs["gradients"]))


def run_in_batches(forward, images: np.ndarray, batch_size: int):
    """``forward`` (images -> a dataclass of per-image arrays) over ``images`` in batches, results concatenated:
    bounds the memory of a large batch on either engine."""
    return _concatenate([forward(images[i:i + batch_size]) for i in range(0, max(len(images), 1), batch_size)])


def _concatenate(parts: list):
    """Dataclasses of per-image arrays joined along the batch axis."""
    if len(parts) == 1:
        return parts[0]
    kind = type(parts[0])
    return kind(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(kind)))


def serving_function(model, network: NetworkLayout):
    """The forward pass as a ``tf.function`` over (N, S, S, 3) float32 images, returning a dict of tensors."""
    import keras
    import tensorflow as tf

    try:
        cam = model.get_layer(network.cam_layer)
    except ValueError:
        raise ValueError(f"model has no layer named {network.cam_layer!r} for Grad-CAM") from None
    view = keras.Model(model.inputs, [model.get_layer(network.logit_layer).output,
                                      model.get_layer(network.feature_layer).output, cam.output])
    size = network.input_size

    def forward(images):
        with tf.GradientTape() as tape:
            logits, features, activations = view(images, training=False)
            if len(features.shape) == 4:  # a feature map (an earlier block): the gate reads its spatial mean
                features = tf.reduce_mean(features, axis=[1, 2])
            tape.watch(activations)
            # Each logit depends on its own image only, so the gradient of the sum is per image
            # (and a sum, unlike slicing, converts to LiteRT built-in ops).
            total = tf.reduce_sum(logits)
        return {"logits": logits, "features": features, "activations": activations,
                "gradients": tape.gradient(total, activations)}

    function = tf.function(forward, input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32)])
    function.view = view  # keeps the view model (and its variables) alive and trackable for export
    return function


def keras_forward(model, network: NetworkLayout):
    """images -> :class:`ForwardPass`, traced once, in this process's TensorFlow."""
    function = serving_function(model, network)
    size = network.input_size
    function(np.zeros((1, size, size, 3), np.float32))  # trace once, up front
    return lambda images: _to_pass(function(np.asarray(images, dtype=np.float32)))


def export_litert(model, network: NetworkLayout, path: str | os.PathLike, float16: bool = False) -> Path:
    """Write the forward pass of ``model`` as a LiteRT flat buffer: float32, or with float16 weights
    (half the file; computed in float32 after the weights are expanded at load, so a model whose
    weights are already float16-representable gives the same numbers)."""
    import keras
    import tensorflow as tf

    function = serving_function(model, network)
    archive = keras.export.ExportArchive()
    archive.track(function.view)
    archive.add_endpoint("serve", function)
    with tempfile.TemporaryDirectory() as saved_model:
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        if float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        flat_buffer = converter.convert()
    path = Path(path)
    path.write_bytes(flat_buffer)
    return path


def _default_threads() -> int:
    """The CPUs this process may use, at most 4: hosted containers often report the host's many cores, and
    one small image gains little beyond four threads."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, available))


class _Engine:
    """One interpreter behind its own lock (an interpreter is not re-entrant)."""

    def __init__(self, model: bytes, num_threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.run = Interpreter(model_content=model, num_threads=num_threads).get_signature_runner()
        self.lock = threading.Lock()

    def __call__(self, images: np.ndarray) -> ForwardPass:
        """One pass per image."""
        return run_in_batches(self._one, images, 1)

    def _one(self, image: np.ndarray) -> ForwardPass:
        with self.lock:
            outputs = {name: np.array(value) for name, value in self.run(images=image).items()}  # copies
        return _to_pass(outputs)


class LiteRtForward:
    """images -> :class:`ForwardPass` with the LiteRT interpreter; safe to call from several threads.

    Images run one at a time: an interpreter keeps the arena of the largest batch
    it has ever seen (a batch of 10 holds ~85 MB more for good), and on a CPU one
    image at a time is as fast per image as a batch. A single image (a prediction)
    runs on an interpreter using every core: about 10 ms on two.

    ``lanes`` 2 adds two interpreters of half the threads each (about 22 MB each:
    packed weights and working memory; the model's bytes are read once and
    shared): a batch (an occlusion map's patches, the heatmap check's removals)
    is split between them and run side by side, 7.7 ms an image on two cores
    instead of 9, because one small image does not keep two threads busy. The app
    explains every image it shows and uses them; a process that predicts does not.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None, lanes: int = 1):
        if lanes not in (1, 2):
            raise ValueError(f"lanes must be 1 or 2, got {lanes}")
        self._model = Path(path).read_bytes()  # read once, shared by the interpreters
        threads = num_threads or _default_threads()
        self._whole = _Engine(self._model, threads)
        side_by_side = lanes == 2 and threads >= 2
        self._lanes = [_Engine(self._model, threads // 2) for _ in range(2)] if side_by_side else []
        self._helper = ThreadPoolExecutor(1, thread_name_prefix="litert-lane") if side_by_side else None
        shapes = {name: detail["shape"][1:] for name, detail in self._whole.run.get_output_details().items()}
        self._empty = _to_pass({name: np.zeros((0, *shape), np.float32) for name, shape in shapes.items()})

    def __call__(self, images: np.ndarray) -> ForwardPass:
        """One pass per image; an empty batch gets empty outputs, as the TensorFlow engine gives (the
        interpreter cannot run a batch of none)."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if len(images) == 0:
            return self._empty
        if len(images) == 1 or not self._lanes:
            return self._whole(images)
        half = (len(images) + 1) // 2
        tail = self._helper.submit(self._lanes[1], images[half:])
        head = self._lanes[0](images[:half])
        return _concatenate([head, tail.result()])
