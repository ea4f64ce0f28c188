"""Streamlit UI for the pediatric chest X-ray pneumonia classifier.

UI only: every decision (preprocessing, prediction, thresholds, explanations,
faithfulness, reports) is made in ``model/``. ``main()`` wires one ``*_ui()``
function per section; each returns plain values.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.logger import get_logger

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/streamlit_app.py` puts app/ first, not the repo root
    sys.path.insert(0, str(ROOT))

from model.analysis import ImageAnalysis, analyze_bytes, faithfulness, results_rows, rows_to_csv  # noqa: E402
from model.artifact import SHIPPED_DIR, ArtifactError  # noqa: E402
from model.explain import METHOD_LABELS, CamExplainer, overlay_heatmap  # noqa: E402
from model.operating import operating_point, threshold_presets  # noqa: E402
from model.predictor import Predictor  # noqa: E402
from model.preprocessing import ImageInputError  # noqa: E402
from model.report import DISCLAIMER, render_report  # noqa: E402

log = get_logger(__name__)  # follows `--logger.level`; never given file names, pixels or patient data
SAMPLES_DIR = ROOT / "app" / "samples"
MODEL_CARD = ROOT / "model" / "MODEL_CARD.md"
REPORTS_DIR = SHIPPED_DIR / "reports"
UPLOAD_TYPES = ["jpg", "jpeg", "png", "dcm", "dicom", "tif", "tiff", "bmp", "gif", "webp"]
COLORMAPS = ["jet", "inferno", "viridis", "magma"]


@dataclass(frozen=True)
class Settings:
    threshold: float
    prevalence: float
    method: str
    opacity: float
    colormap: str


# ---------- cached resources and results (no st.* drawing calls in here) ----------

@st.cache_resource(show_spinner="Loading the model…")
def load_model() -> tuple[Predictor, CamExplainer]:
    predictor = Predictor.load()
    log.info("model loaded: %s", predictor.metadata["model_name"])
    return predictor, CamExplainer.for_predictor(predictor)


@st.cache_data(max_entries=128, show_spinner=False)
def analyze(data: bytes) -> tuple[ImageAnalysis | None, str | None]:
    """(analysis, None) or (None, human error message); cached by the file's bytes."""
    predictor, _ = load_model()
    try:
        return analyze_bytes(predictor, data), None
    except ImageInputError as exc:
        return None, str(exc)


@st.cache_data(max_entries=128, show_spinner=False)
def explain(data: bytes, method: str, target: str):
    predictor, explainer = load_model()
    analysis, _ = analyze(data)
    return faithfulness(predictor, explainer, analysis.model_input, method, target)


@st.cache_data(max_entries=32, show_spinner=False)
def sample_files() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(SAMPLES_DIR.glob("*.jpeg"))}


# ---------- sections ----------

def header_ui() -> None:
    st.title("Pediatric chest X-ray: pneumonia classifier")
    st.warning(DISCLAIMER, icon="⚠️")


def settings_ui(metadata: dict) -> Settings:
    presets = threshold_presets(metadata)
    default = presets[metadata["thresholds"]["default"]]
    if "threshold" not in st.session_state:
        st.session_state.threshold = round(default, 2)
    with st.sidebar:
        st.header("Decision threshold")
        for name, value in presets.items():
            st.button(f"{name.capitalize()} preset: {value:.2f}", key=f"preset_{name}", width="stretch",
                          on_click=lambda v=value: st.session_state.update(threshold=round(v, 2)),
                          help=metadata["thresholds"][name]["rule"])
        threshold = st.slider("Call PNEUMONIA when the probability is at least", 0.01, 0.99, key="threshold",
                              step=0.01)
        prevalence = st.slider("Prevalence of pneumonia where you work (for PPV/NPV)", 0.01, 0.99,
                               value=round(float(metadata.get("validation_prevalence", 0.5)), 2), step=0.01,
                               key="prevalence")
        st.header("Explanation")
        method = st.selectbox("Method", list(METHOD_LABELS), format_func=lambda m: METHOD_LABELS[m]
                              + (" (slower)" if m == "scorecam" else ""), key="method")
        opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05, key="opacity")
        colormap = st.selectbox("Colour map", COLORMAPS, key="colormap")
    return Settings(threshold, prevalence, method, opacity, colormap)


def input_ui() -> list[tuple[str, bytes]]:
    """The files to analyse: uploads if any, else the chosen sample."""
    uploads = st.file_uploader("Upload chest X-rays (JPEG, PNG 8/16-bit, DICOM; also TIFF, BMP, GIF, WebP)", type=UPLOAD_TYPES,
                               accept_multiple_files=True, key="uploads")
    if uploads:
        return [(upload.name, upload.getvalue()) for upload in uploads]
    samples = sample_files()
    with st.expander("No X-ray at hand? Try a sample from the official test set", expanded="sample" not in st.session_state):
        columns = st.columns(len(samples))
        for column, (name, data) in zip(columns, samples.items()):
            column.image(data, caption=name.split("_", 1)[0].capitalize(), width="stretch")
            column.button("Analyse", key=f"sample_{name}", width="stretch",
                          on_click=lambda n=name: st.session_state.update(sample=n))
    name = st.session_state.get("sample")
    return [(name, samples[name])] if name in samples else []


def operating_ui(metadata: dict, settings: Settings) -> None:
    point = operating_point(metadata, settings.threshold, settings.prevalence)
    st.caption(f"At threshold {settings.threshold:.2f}, on the validation split (patients never seen in training):")
    columns = st.columns(4)
    columns[0].metric("Sensitivity", f"{point.sensitivity:.1%}", help="Share of pneumonia X-rays called PNEUMONIA")
    columns[1].metric("Specificity", f"{point.specificity:.1%}", help="Share of normal X-rays called NORMAL")
    columns[2].metric(f"PPV at {settings.prevalence:.0%}", "n/a" if point.ppv is None else f"{point.ppv:.1%}",
                      help="If it says PNEUMONIA, how often that is right at this prevalence")
    columns[3].metric(f"NPV at {settings.prevalence:.0%}", "n/a" if point.npv is None else f"{point.npv:.1%}",
                      help="If it says NORMAL, how often that is right at this prevalence")


def result_ui(analysis: ImageAnalysis, settings: Settings) -> str:
    label = analysis.label(settings.threshold)
    left, right = st.columns([1, 2])
    left.metric("Pneumonia probability", f"{analysis.probability:.1%}")
    statement = (f"**{label}** at threshold {settings.threshold:.2f}: the calibrated probability "
                 f"{analysis.probability:.3f} is {'at or above' if label == 'PNEUMONIA' else 'below'} the threshold.")
    (right.error if label == "PNEUMONIA" else right.success)(statement)
    return label


def explanation_ui(name: str, data: bytes, analysis: ImageAnalysis, settings: Settings, label: str):
    with st.spinner(f"Computing {METHOD_LABELS[settings.method]}…"):
        heatmap, check = explain(data, settings.method, label)
    overlay = overlay_heatmap(analysis.display, heatmap, settings.colormap, settings.opacity)
    left, middle, right = st.columns([2, 2, 3])
    left.image(overlay, caption=f"{METHOD_LABELS[settings.method]} for {label}, on the uploaded image", width="stretch")
    middle.image(analysis.model_input[:, :, 0], caption="What the network saw: squashed to 224×224, CLAHE, blur",
                 width="stretch", clamp=True)
    verdict = ("The highlighted region drives the decision more than a random one of the same size."
               if check.faithful else
               "Caution: removing the highlighted region changes the prediction no more than removing a random one.")
    right.markdown(f"**Faithfulness check.** Removing the {check.fraction:.0%} of the image the heatmap ranks "
                f"highest moves the evidence for {label} from {check.original:+.2f} to {check.cam_removed:+.2f} log-odds "
                f"(P = {check.probability(check.original):.3f} → {check.probability(check.cam_removed):.3f}); "
                f"removing the same area at random "
                f"lowers it by {check.random_drop:.2f} ± {check.random_spread:.2f} log-odds. "
                f"{verdict} Removed pixels are in-filled from their surroundings (ROAD's noisy linear imputation).")
    return overlay


def report_ui(name: str, analysis: ImageAnalysis, overlay, settings: Settings, metadata: dict, label: str) -> None:
    point = operating_point(metadata, settings.threshold, settings.prevalence)
    args = (analysis.display, overlay, analysis.probability, label, point, metadata, METHOD_LABELS[settings.method])
    stem = Path(name).stem
    columns = st.columns(2)
    columns[0].download_button("Download report (PNG)", data=lambda: render_report(*args, fmt="png"),
                               file_name=f"{stem}_report.png", mime="image/png", on_click="ignore", key=f"png_{name}")
    columns[1].download_button("Download report (PDF)", data=lambda: render_report(*args, fmt="pdf"),
                               file_name=f"{stem}_report.pdf", mime="application/pdf", on_click="ignore",
                               key=f"pdf_{name}")


def batch_ui(files: list[tuple[str, bytes]], settings: Settings) -> str | None:
    """Results table and CSV for several uploads; returns the file chosen for a closer look."""
    results = [(name, *analyze(data)) for name, data in files]
    rows = results_rows(results, settings.threshold)
    st.dataframe(rows, hide_index=True, width="stretch")
    st.download_button("Download results (CSV)", rows_to_csv(rows), file_name="pneumonia_results.csv",
                       mime="text/csv", on_click="ignore", key="csv")
    readable = [name for name, analysis, _ in results if analysis is not None]
    return st.selectbox("Look closer at", readable, key="closer") if readable else None


def ood_ui(analysis: ImageAnalysis) -> bool:
    """Warn about inputs unlike the training X-rays; True when the user still wants the (unreliable) output."""
    st.warning(f"**Not a chest X-ray like the training data.** {analysis.ood.message} "
               "The pneumonia probability is withheld: on such an image it would not mean anything.", icon="🚫")
    return st.checkbox("Show the model's output anyway (unreliable)", key="show_unreliable")


def single_image_ui(name: str, data: bytes, settings: Settings, metadata: dict) -> None:
    analysis, error = analyze(data)
    if error:
        st.error(f"**{name}**: {error}")
        return
    st.subheader(name)
    if not analysis.ood.in_distribution and not ood_ui(analysis):
        st.image(analysis.display, caption="Uploaded image", width=360)
        return
    label = result_ui(analysis, settings)
    operating_ui(metadata, settings)
    overlay = explanation_ui(name, data, analysis, settings, label)
    report_ui(name, analysis, overlay, settings, metadata, label)


def analyse_tab(metadata: dict, settings: Settings) -> None:
    files = input_ui()
    if not files:
        st.info("Upload one or more chest X-rays, or pick a sample above.")
        return
    if len(files) > 1:
        chosen = batch_ui(files, settings)
        files = [f for f in files if f[0] == chosen]
        if not files:
            return
    single_image_ui(files[0][0], files[0][1], settings, metadata)


def model_card_tab(metadata: dict) -> None:
    if MODEL_CARD.exists():
        st.markdown(MODEL_CARD.read_text())
    plots = sorted(REPORTS_DIR.glob("*.png")) if REPORTS_DIR.exists() else []
    for plot in plots:
        st.image(str(plot), caption=plot.stem.replace("_", " "), width=560)
    st.caption(f"Model file SHA-256 {metadata['sha256']}")


def main() -> None:
    st.set_page_config(page_title="Chest X-ray pneumonia classifier", page_icon="🫁", layout="wide")
    header_ui()
    try:
        predictor, _ = load_model()
    except ArtifactError as exc:
        st.error(f"The model could not be loaded: {exc}")
        st.stop()
    settings = settings_ui(predictor.metadata)
    analyse, card = st.tabs(["Analyse", "Model card"])
    with analyse:
        try:
            analyse_tab(predictor.metadata, settings)
        except Exception as exc:  # never a traceback in the UI; no file names or pixels in the log
            log.error("analysis failed: %s", type(exc).__name__)
            st.error("Something went wrong while analysing this image. Please try another file.")
    with card:
        model_card_tab(predictor.metadata)


main()
