"""Streamlit UI for the pediatric chest X-ray pneumonia classifier.

UI only: every decision (preprocessing, prediction, thresholds, explanations,
faithfulness, reports) is made in ``model/``. ``main()`` wires one ``*_ui()``
function per section; each returns plain values.

User-supplied text (file names) is shown with ``st.text`` or inside tables,
never as markdown. Uploads are identified by their position in the upload
list and the SHA-256 of their bytes (hashed once per upload), never by name.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
from streamlit.logger import get_logger

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/streamlit_app.py` puts app/ first, not the repo root
    sys.path.insert(0, str(ROOT))

from app.server_config import (  # noqa: E402
    keep_uploads_in_memory,
    limit_malloc_arenas,
    release_freed_memory,
    release_uploads,
)
from model.artifact import SHIPPED_DIR, ArtifactError, ModelMetadata  # noqa: E402
from model.explain import CAM_METHODS, CamExplainer, color_bar, overlay_heatmap  # noqa: E402
from model.ood import HEADLINE  # noqa: E402
from model.operating_point import DEFAULT_PREVALENCE, PREVALENCE_REASON, operating_point  # noqa: E402
from model.predictor import Predictor  # noqa: E402
from model.preprocessing import ImageInputError  # noqa: E402
from model.report import DISCLAIMER, ReportContent, plain_summary, render_report  # noqa: E402
from model.service import (  # noqa: E402
    BatchItem,
    ImageAnalysis,
    Prediction,
    analyze_bytes,
    explain_with_check,
    reliability_note,
    results_rows,
    rows_to_csv,
    safe_download_name,
)

log = get_logger(__name__)  # follows `--logger.level`; never given file names, pixels or patient data
SAMPLES_DIR = ROOT / "app" / "samples"
MODEL_CARD = ROOT / "model" / "MODEL_CARD.md"
REPORTS_DIR = SHIPPED_DIR / "reports"
# No `type=` filter on the uploader: files are identified by content in model/ (a renamed X-ray still works, anything
# else gets a plain message), and Streamlit's own name check would answer a crafted name (a null byte) with its error.
COLORMAPS = ["jet", "inferno", "viridis", "magma"]
TARGETS = {"PNEUMONIA": "Evidence for pneumonia", "NORMAL": "Evidence for normal"}
MAX_FILES = 50  # one batch; more would make every interaction slow for everyone on a small server
MAX_BATCH_MB = 200

keep_uploads_in_memory(st.get_option("server.maxUploadSize"))
limit_malloc_arenas()


@dataclass(frozen=True)
class Upload:
    number: int  # 1-based position in the upload list: the identity of this file in the page
    name: str  # the user's file name: plain text only
    digest: str  # SHA-256 of the bytes: the cache key
    data: bytes


@dataclass(frozen=True)
class ExplainSettings:
    target: str
    method: str
    opacity: float
    colormap: str


# ---------- cached resources and results (no st.* drawing calls in here) ----------

@st.cache_resource(show_spinner="Loading the model…")
def load_model() -> tuple[Predictor, CamExplainer]:
    predictor = Predictor.load()
    log.info("model loaded: %s", predictor.metadata.model_name)
    return predictor, CamExplainer.for_predictor(predictor)


@st.cache_data(max_entries=16, show_spinner=False)
def analyze(digest: str, _data: bytes) -> tuple[ImageAnalysis | None, str | None]:
    """(analysis, None) or (None, human error message); cached by the bytes' SHA-256 (hashed once per upload)."""
    predictor, _ = load_model()
    try:
        return analyze_bytes(predictor, _data), None
    except ImageInputError as exc:
        return None, str(exc)
    except Exception as exc:  # one broken file never takes the page (or the batch) down
        log.error("analysis failed: %s", type(exc).__name__)
        return None, "This file could not be processed. Please try another file."


@st.cache_resource
def explanation_lock() -> threading.Lock:
    """One explanation at a time across sessions: each one's in-fill solves take tens of MB for a moment, and on a
    small CPU box concurrent ones would only queue for the cores anyway."""
    return threading.Lock()


@st.cache_data(max_entries=32, show_spinner=False)
def explain(digest: str, _data: bytes, method: str, target: str):
    predictor, explainer = load_model()
    analysis, _ = analyze(digest, _data)
    with explanation_lock():
        return explain_with_check(predictor, explainer, analysis, method, target)


@st.cache_data(show_spinner=False)
def sample_files() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(SAMPLES_DIR.glob("*.jpeg"))}


@st.cache_data(show_spinner=False)
def sample_strip() -> np.ndarray:
    """The gallery as one small image: six 120-px thumbnails side by side (light at any screen width)."""
    import cv2

    thumbs = []
    for data in sample_files().values():
        gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        thumbs.append(cv2.resize(gray, (120, 120), interpolation=cv2.INTER_AREA))
    gap = np.full((120, 6), 255, np.uint8)
    return np.hstack([x for thumb in thumbs for x in (thumb, gap)][:-1])


def digest_of(file_id: str, data: bytes) -> str:
    """SHA-256 of an upload, computed once per upload (``file_id``) and kept for the session."""
    digests = st.session_state.setdefault("digests", {})
    if file_id not in digests:
        digests[file_id] = hashlib.sha256(data).hexdigest()
    return digests[file_id]


def predictions_for(uploads: list[Upload]) -> list[BatchItem]:
    """Each upload's prediction, analysed once and kept (small) for the session; dropped with the upload."""
    kept = st.session_state.setdefault("predictions", {})
    for upload in uploads:
        if upload.digest not in kept:
            analysis, error = analyze(upload.digest, upload.data)
            kept[upload.digest] = (analysis.prediction if analysis else None, error)
    current = {u.digest for u in uploads}
    for digest in [d for d in kept if d not in current]:
        del kept[digest]
    return [BatchItem(u.number, u.name, *kept[u.digest]) for u in uploads]


# ---------- sections ----------

def header_ui() -> None:
    st.title("Pediatric chest X-ray: pneumonia classifier")
    st.warning(DISCLAIMER, icon="⚠️")


def input_ui() -> list[Upload]:
    """The files to analyse: uploads if any (within the batch limits), else the chosen sample."""
    files = st.file_uploader(f"Upload chest X-rays (JPEG, PNG 8/16-bit, DICOM; also TIFF, BMP, GIF, WebP). "
                             f"Up to {MAX_FILES} files and {MAX_BATCH_MB} MB at once, "
                             f"{st.get_option('server.maxUploadSize')} MB a file.",
                             accept_multiple_files=True, key="uploads")
    if files:
        return _within_limits(files)
    st.session_state.pop("digests", None)
    samples = sample_files()
    with st.expander("No X-ray at hand? Try a sample from the official test set", expanded=st.session_state.get("sample") is None):
        st.image(sample_strip(), width="stretch")
        names = list(samples)
        st.segmented_control("Sample", names, key="sample", format_func=lambda n: _sample_label(names, n),
                             label_visibility="collapsed")
    name = st.session_state.get("sample")
    if name not in samples:
        return []
    return [Upload(1, name, hashlib.sha256(samples[name]).hexdigest(), samples[name])]


def _sample_label(names: list[str], name: str) -> str:
    kind = name.split("_", 1)[0]
    flagged = " (flagged by the gate)" if name in flagged_samples() else ""
    return f"{kind.capitalize()} {[n for n in names if n.startswith(kind)].index(name) + 1}{flagged}"


@st.cache_data(show_spinner=False)
def flagged_samples() -> set[str]:
    """Gallery samples the out-of-distribution gate flags: labelled as such, so the demo never surprises."""
    flagged = set()
    for name, data in sample_files().items():
        analysis, _ = analyze(hashlib.sha256(data).hexdigest(), data)
        if analysis is not None and not analysis.prediction.ood.in_distribution:
            flagged.add(name)
    return flagged


def _within_limits(files) -> list[Upload]:
    uploads, total = [], 0
    for number, file in enumerate(files, start=1):
        total += file.size
        if number > MAX_FILES or total > MAX_BATCH_MB * 2**20:
            st.error(f"{len(files)} files ({sum(f.size for f in files) / 2**20:.0f} MB) were uploaded; one batch is "
                     f"at most {MAX_FILES} files and {MAX_BATCH_MB} MB. Only the first {len(uploads)} are analysed: "
                     "remove some files to analyse the others.")
            release_uploads([f.file_id for f in files[number - 1:]])  # the server stops holding the refused ones
            break
        if "\0" in file.name:
            st.error(f"File {number} was not analysed: its name contains a null byte. Rename it and upload it again.")
            continue
        data = file.getvalue()
        uploads.append(Upload(number, file.name, digest_of(file.file_id, data), data))
    live = {f.file_id for f in files}
    digests = st.session_state.get("digests", {})
    for file_id in [k for k in digests if k not in live]:
        del digests[file_id]
    return uploads


def threshold_ui(metadata: ModelMetadata) -> tuple[float, float]:
    """(threshold, prevalence). Presets set the slider to exactly the model's stored thresholds."""
    presets = metadata.thresholds.values()
    state = st.session_state
    state.setdefault("threshold", metadata.thresholds.default_value)
    state.setdefault("prevalence", DEFAULT_PREVALENCE * 100)
    # The widgets mirror values kept outside widget state, which Streamlit drops whenever a widget is not drawn.
    state.threshold_slider, state.prevalence_input = state.threshold, state.prevalence
    with st.container(border=True):
        st.markdown("**Decision threshold**")
        columns = st.columns(len(presets))
        for column, (name, value) in zip(columns, presets.items()):
            column.button(f"{name.capitalize()}: {value:.3f}", key=f"preset_{name}", width="stretch",
                          on_click=lambda v=value: st.session_state.update(threshold=v))
        st.caption(" ".join(f"{name.capitalize()}: {metadata.thresholds.named[name].rule}." for name in presets))
        st.slider("Call PNEUMONIA when the probability is at least", 0.001, 0.999, key="threshold_slider",
                  step=0.001, format="%.3f", on_change=lambda: state.update(threshold=state.threshold_slider))
        st.number_input("Prevalence of pneumonia where you work (for PPV/NPV), %", 1.0, 99.0, step=1.0,
                        key="prevalence_input", on_change=lambda: state.update(prevalence=state.prevalence_input))
        st.caption(PREVALENCE_REASON)
    return float(state.threshold), float(state.prevalence) / 100


def current_threshold(metadata: ModelMetadata) -> float:
    return float(st.session_state.get("threshold", metadata.thresholds.default_value))


def operating_ui(metadata: ModelMetadata, threshold: float, prevalence: float) -> None:
    point = operating_point(metadata, threshold, prevalence)
    st.caption(f"At threshold {threshold:.3f}, measured on the {point.source}:")
    columns = st.columns(4)
    columns[0].metric("Sensitivity", f"{point.sensitivity:.1%}", help="Share of pneumonia X-rays called PNEUMONIA")
    columns[1].metric("Specificity", f"{point.specificity:.1%}", help="Share of normal X-rays called NORMAL")
    columns[2].metric(f"PPV at {prevalence:.0%}", "n/a" if point.ppv is None else f"{point.ppv:.1%}",
                      help="If it says PNEUMONIA, how often that is right at this prevalence")
    columns[3].metric(f"NPV at {prevalence:.0%}", "n/a" if point.npv is None else f"{point.npv:.1%}",
                      help="If it says NORMAL, how often that is right at this prevalence")


def result_ui(prediction: Prediction, threshold: float, unreliable: str | None) -> str:
    label = prediction.label(threshold)
    left, right = st.columns([1, 2])
    left.metric("Pneumonia probability" + (" (unreliable)" if unreliable else ""), f"{prediction.probability:.1%}")
    side = "at or above" if label == "PNEUMONIA" else "below"
    statement = (f"**{label}** at threshold {threshold:.3f}: the calibrated probability "
                 f"{prediction.probability:.3f} is {side} the threshold.")
    if unreliable:
        right.error(f"{unreliable} The call below is shown because you asked for it: do not rely on it.", icon="🚫")
    (right.error if label == "PNEUMONIA" else right.success)(statement)
    for note in prediction.cautions(threshold):
        right.info(note, icon="⚖️")
    return label


def explain_settings_ui() -> ExplainSettings:
    columns = st.columns(4)
    target = columns[0].radio("Show", list(TARGETS), format_func=TARGETS.get, key="cam_target",
                              help="Where the network finds evidence for the class you choose; pneumonia by default.")
    method = columns[1].selectbox("Method", list(CAM_METHODS), key="method",
                                  format_func=lambda m: CAM_METHODS[m].label + (" (slower)" if CAM_METHODS[m].slow else ""))
    opacity = columns[2].slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05, key="opacity")
    colormap = columns[3].selectbox("Colour map", COLORMAPS, key="colormap")
    return ExplainSettings(target, method, opacity, colormap)


def explanation_ui(upload: Upload, analysis: ImageAnalysis, settings: ExplainSettings):
    with st.spinner(f"Computing {CAM_METHODS[settings.method].label}…"):
        heatmap, check = explain(upload.digest, upload.data, settings.method, settings.target)
    overlay = overlay_heatmap(analysis.display, heatmap, settings.colormap, settings.opacity)
    left, middle, right = st.columns([2, 2, 3])
    left.image(overlay, caption=f"{CAM_METHODS[settings.method].label}: {TARGETS[settings.target].lower()}", width="stretch")
    left.image(color_bar(settings.colormap), width="stretch")
    left.caption(f"Colour scale: left, none; right, the strongest {TARGETS[settings.target].lower()} in this image "
                 "(each map is scaled to its own maximum).")
    middle.image(analysis.network_view, caption="What the network saw: squashed to 224×224, CLAHE, blur",
                 width="stretch")
    verdict, detail = check.describe(settings.target)
    (right.success if check.faithful else right.warning)(f"**Faithfulness check.** {verdict}")
    right.caption(f"{detail} Removed pixels are in-filled from their surroundings (ROAD's noisy linear imputation).")
    return overlay


@st.cache_data(max_entries=8, show_spinner=False)
def report_bytes(key: tuple, _content: ReportContent, fmt: str) -> bytes:
    """The report, rendered in the run that draws its button (``key``: everything the page shows in it)."""
    return render_report(_content, fmt=fmt)


def report_ui(upload: Upload, content: ReportContent, key: tuple) -> None:
    # Bytes, not a deferred callable: a deferred download's id is replaced on every rerun, so a click that races a
    # threshold change found "Deferred file not found"; a stored file outlives the rerun that replaced it.
    columns = st.columns(2)
    for column, fmt, mime in ((columns[0], "png", "image/png"), (columns[1], "pdf", "application/pdf")):
        column.download_button(f"Download report ({fmt.upper()})", data=report_bytes(key, content, fmt),
                               file_name=safe_download_name(upload.name, f"_report.{fmt}"), mime=mime,
                               on_click="ignore", key=f"{fmt}_{upload.number}_{upload.digest[:12]}")


def batch_ui(uploads: list[Upload], threshold: float) -> Upload | None:
    """Results table and CSV for several uploads; returns the upload chosen for a closer look."""
    items = predictions_for(uploads)
    shown = {u.number for u in uploads if st.session_state.get(_show_key(u))}
    rows = results_rows(items, threshold, shown)
    st.dataframe(rows, hide_index=True, width="stretch", height=min(38 + 35 * len(rows), 720),
                 column_config={"#": st.column_config.NumberColumn(width="small"),
                                "message": st.column_config.TextColumn(width="large")})
    st.download_button("Download results (CSV)", rows_to_csv(rows), file_name="pneumonia_results.csv",
                       mime="text/csv", on_click="ignore", key="csv")
    readable = [u for u, item in zip(uploads, items) if item.prediction is not None]
    if not readable:
        return None
    return st.selectbox("Look closer at", readable, key="closer", format_func=lambda u: f"{u.number}. {u.name}")


_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]()#+-.!|~<>$:&"})


def plain(text: str) -> str:
    """Text for a markdown element (st.error & co.), escaped so that it shows as typed: no bold, link, image or math."""
    return text.translate(_MARKDOWN_SPECIAL)


def _show_key(upload: Upload) -> str:
    return f"show_anyway_{upload.number}_{upload.digest[:16]}"


def ood_ui(upload: Upload, prediction: Prediction) -> bool:
    """Explain why the image is flagged; True when the user still wants the (unreliable) output for THIS file."""
    st.warning(f"**{HEADLINE}.** The gate flagged this image: {prediction.ood.message}. The pneumonia probability is "
               "withheld: on such an image it would not mean much.", icon="🚫")
    return st.checkbox("Show the model's output anyway (unreliable)", key=_show_key(upload))


def single_image_ui(upload: Upload, metadata: ModelMetadata) -> None:
    st.text(f"File: {upload.name}")
    analysis, error = analyze(upload.digest, upload.data)
    if error:
        st.error(plain(error))
        return
    prediction = analysis.prediction
    unreliable = None if prediction.ood.in_distribution else reliability_note(prediction.ood)
    if unreliable and not ood_ui(upload, prediction):
        st.image(analysis.display, caption="Uploaded image", width=360)
        return
    threshold = current_threshold(metadata)
    left, right = st.columns([3, 2])
    with left:
        label = result_ui(prediction, threshold, unreliable)
    with right:
        threshold, prevalence = threshold_ui(metadata)
    operating_ui(metadata, threshold, prevalence)
    st.subheader("Explanation")
    settings = explain_settings_ui()
    overlay = explanation_ui(upload, analysis, settings)
    gate = "accepted" if prediction.ood.in_distribution else f"flagged: {prediction.ood.message}"
    content = ReportContent(upload.name, analysis.display, overlay, f"{CAM_METHODS[settings.method].label} "
                            f"({TARGETS[settings.target].lower()})", prediction.probability, label,
                            operating_point(metadata, threshold, prevalence), metadata, gate, unreliable,
                            tuple(prediction.cautions(threshold)))
    report_ui(upload, content, (upload.number, upload.name, upload.digest, threshold, prevalence, settings, unreliable,
                                int(time.time() // 60)))


def analyse_tab(metadata: ModelMetadata) -> None:
    uploads = input_ui()
    if not uploads:
        st.info("Upload one or more chest X-rays, or pick a sample above.")
        return
    if len(uploads) > 1:
        chosen = batch_ui(uploads, current_threshold(metadata))
        if chosen is None:
            return
        uploads = [chosen]
    single_image_ui(uploads[0], metadata)


def model_card_tab(metadata: ModelMetadata) -> None:
    st.info(plain_summary(metadata))
    if MODEL_CARD.exists():
        with st.expander("The full technical model card", expanded=False):
            st.markdown(MODEL_CARD.read_text())
    plots = sorted(REPORTS_DIR.glob("*.png")) if REPORTS_DIR.exists() else []
    for plot in plots:
        st.image(str(plot), caption=plot.stem.replace("_", " "), width="stretch")
    st.caption(f"Model file SHA-256 {metadata.sha256}")


def main() -> None:
    st.set_page_config(page_title="Chest X-ray pneumonia classifier", page_icon="🫁", layout="wide")
    header_ui()
    try:
        predictor, _ = load_model()
    except ArtifactError as exc:
        st.error(f"The model could not be loaded: {exc}")
        st.stop()
    analyse, card = st.tabs(["Analyse", "Model card"])
    with analyse:
        try:
            analyse_tab(predictor.metadata)
        except Exception as exc:  # never a traceback in the UI; no file names or pixels in the log
            log.error("analysis failed: %s", type(exc).__name__)
            st.error("Something went wrong while analysing this image. Please try another file.")
    with card:
        model_card_tab(predictor.metadata)
    release_freed_memory()


main()
