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
    analysis_slots,
    keep_uploads_in_memory,
    limit_malloc_arenas,
    limit_session_uploads,
    refused_uploads,
    release_freed_memory,
    release_uploads,
    return_large_buffers,
    share_uploads_between_runs,
    shut_down_expired_sessions,
    upload_bytes,
)
from model.admission import AnalysisQueue  # noqa: E402
from model.artifact import SHIPPED_DIR, ArtifactError, ModelMetadata  # noqa: E402
from model.explain import CAM_METHODS, CamExplainer, EvidenceMap, OcclusionMethod, color_bar, overlay_heatmap  # noqa: E402
from model.faithfulness import FaithfulnessResult  # noqa: E402
from model.ood import HEADLINE, REASON_SHORT  # noqa: E402
from model.operating_point import DEFAULT_PREVALENCE, PREVALENCE_REASON, edge_of_range, operating_point  # noqa: E402
from model.predictor import Predictor  # noqa: E402
from model.preprocessing import ImageInputError, colour_preview  # noqa: E402
from model.report import DISCLAIMER, NOT_A_DIAGNOSIS, ReportContent, plain_summary, render_report  # noqa: E402
from model.service import (  # noqa: E402
    DISPLAY_MAX_SIDE,
    BatchItem,
    ImageAnalysis,
    Prediction,
    Trust,
    analyze_bytes,
    explain_with_check,
    reliability_note,
    results_rows,
    rows_to_csv,
    safe_download_name,
    shown_first,
    shown_name,
    trust_of,
)
from model.visitor_card import visitor_card  # noqa: E402

log = get_logger(__name__)  # follows `--logger.level`; never given file names, pixels or patient data
SAMPLES_DIR = ROOT / "app" / "samples"
MODEL_CARD = ROOT / "model" / "MODEL_CARD.md"
REPORTS_DIR = SHIPPED_DIR / "reports"
FAITHFULNESS_JSON = ROOT / "bench" / "faithfulness.json"  # how often the heatmap passes its own check (python -m bench)
# No `type=` filter on the uploader: files are identified by content in model/ (a renamed X-ray still works, anything
# else gets a plain message), and Streamlit's own name check would answer a crafted name (a null byte) with its error.
COLORMAPS = ["jet", "inferno", "viridis", "magma"]
TARGETS = {"PNEUMONIA": "Evidence for pneumonia", "NORMAL": "Evidence for normal"}
WHICH_CLASS = {"call": "the call", "other": "the other class"}  # the map's class, relative to the call: each image opens on its own call
MAX_FILES = 50  # one batch; more would make every interaction slow for everyone on a small server
CHOSEN = ":material/check:"  # marks the chosen sample and the active preset (with the button's colour); never an emoji
MAX_BATCH_MB = 100  # held by the server while the batch is shown: 100 MB of the hosted tier's 690 (issue 21)
# all visitors' uploads held at once: the tier's 690 MB less a server with the model loaded and explaining (~280 MB)
# and one typical analysis (~100 MB; the worst admitted one, +360 MB, would still pass 690 on top of a full budget);
# without it four tabs with full batches took the server past 690 MB
SERVER_UPLOADS_MB = 300

keep_uploads_in_memory(st.get_option("server.maxUploadSize"))
limit_malloc_arenas()
return_large_buffers()
limit_session_uploads(MAX_FILES, MAX_BATCH_MB, SERVER_UPLOADS_MB)
shut_down_expired_sessions()
share_uploads_between_runs()


@dataclass(frozen=True)
class Upload:
    number: int  # 1-based position in the upload list: the identity of this file in the page
    name: str  # the user's file name: plain text only
    digest: str  # SHA-256 of the bytes: the cache key
    data: bytes
    key: str = ""  # the uploader's id of this file (or the sample's name): which uploads are new


@dataclass(frozen=True)
class ExplainSettings:
    target: str
    method: str
    opacity: float
    colormap: str
    per_image: bool  # stretch each map to its own strongest spot instead of the model's fixed scale


# ---------- cached resources and results (no st.* drawing calls in here) ----------

@st.cache_resource(show_spinner="Loading the model…")
def load_model() -> tuple[Predictor, CamExplainer]:
    predictor = Predictor.load(lanes=2)  # every image shown is explained: the map's passes run side by side
    log.info("model loaded: %s", predictor.metadata.model_name)
    return predictor, CamExplainer.for_predictor(predictor)


@st.cache_data(max_entries=16, show_spinner=False)
def analyze(digest: str, _data: bytes) -> tuple[ImageAnalysis | None, str | None]:
    """(analysis, None) or (None, human error message); cached by the bytes' SHA-256 (hashed once per upload)."""
    predictor, _ = load_model()
    try:
        with analysis_queue().slot():  # one budget for the whole server: see analysed()
            return analyze_bytes(predictor, _data), None
    except ImageInputError as exc:
        return None, str(exc)
    except Exception as exc:  # one broken file never takes the page (or the batch) down
        log.error("analysis failed: %s", type(exc).__name__)
        return None, "This file could not be processed. Please try another file."


@st.cache_resource
def analysis_queue() -> AnalysisQueue:
    """Decoding and inference for the whole server: at most ``analysis_slots()`` at once (sized from the memory the
    server may use), the rest wait in line. Eight visitors' largest images at once took the server to 1.5 GB."""
    return AnalysisQueue(analysis_slots())


BUSY_MESSAGE = ("Busy: the server is analysing other visitors' images. Yours is in line and starts as soon as one "
                "finishes (a few seconds each).")


def analysed(upload: Upload) -> tuple[ImageAnalysis | None, str | None]:
    """``analyze`` for one upload, saying so while it waits for the server's analysis queue (a cached result never
    waits: the queue is only entered when the analysis actually runs)."""
    if analysis_queue().busy:
        with st.spinner(BUSY_MESSAGE):
            return analyze(upload.digest, upload.data)
    return analyze(upload.digest, upload.data)


@st.cache_resource
def explanation_lock() -> threading.Lock:
    """One explanation at a time across sessions: each one's in-fill solves take tens of MB for a moment, and on a
    small CPU box concurrent ones would only queue for the cores anyway."""
    return threading.Lock()


@st.cache_data(max_entries=64, show_spinner=False)
def explain(digest: str, _data: bytes, method: str, target: str):
    predictor, explainer = load_model()
    analysis, _ = analyze(digest, _data)
    with explanation_lock():
        return explain_with_check(predictor, explainer, analysis, method, target)


@st.cache_data(show_spinner=False)
def sample_files() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(SAMPLES_DIR.glob("*.jpeg"))}


@st.cache_data(show_spinner=False)
def sample_thumbnails() -> dict[str, np.ndarray]:
    """The gallery: one small 110-px thumbnail per sample (light at any screen width)."""
    import cv2

    return {name: cv2.resize(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE), (110, 110),
                             interpolation=cv2.INTER_AREA) for name, data in sample_files().items()}


@st.cache_data(max_entries=4, show_spinner=False)
def colour_copy(digest: str, _data: bytes) -> np.ndarray | None:
    with analysis_queue().slot():  # a full decode: the same server-wide budget as analyze()
        return colour_preview(_data, DISPLAY_MAX_SIDE)


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
            analysis, error = analysed(upload)
            kept[upload.digest] = (analysis.prediction if analysis else None, error)
    current = {u.digest for u in uploads}
    for digest in [d for d in kept if d not in current]:
        del kept[digest]
    return [BatchItem(u.number, u.name, *kept[u.digest]) for u in uploads]


def trust_for(upload: Upload, prediction: Prediction, threshold: float, metadata: ModelMetadata) -> Trust:
    """The one trust verdict of this upload at this threshold (page, table, CSV and reports alike): it checks the map
    shown first, the evidence for the call itself (cached per image, method and class)."""
    return trust_of(prediction, threshold, shown_first(metadata),
                    lambda method, label: explain(upload.digest, upload.data, method, label)[1],
                    edge_cautions(metadata, threshold, prediction.label(threshold)))


# ---------- sections ----------

def header_ui() -> None:
    st.title("Pediatric chest X-ray: pneumonia classifier")
    st.warning(DISCLAIMER, icon=":material/warning:")


def input_ui() -> list[Upload]:
    """The files to analyse: uploads if any (within the batch limits), else the chosen sample."""
    files = st.file_uploader(f"Upload chest X-rays (JPEG, PNG 8/16-bit, DICOM; also TIFF, BMP, GIF, WebP). "
                             f"Up to {MAX_FILES} files and {MAX_BATCH_MB} MB at once, "
                             f"{st.get_option('server.maxUploadSize')} MB a file.",
                             accept_multiple_files=True, key="uploads")
    if files:
        return _within_limits(files)
    st.session_state.pop("digests", None)
    for key in ("refused", "crowded", "accepted_ids"):
        st.session_state.pop(key, None)
    return sample_ui()


def sample_ui() -> list[Upload]:
    """The gallery: each thumbnail with its button under it; the chosen one stays marked."""
    samples, thumbnails = sample_files(), sample_thumbnails()
    chosen = st.session_state.get("sample")
    st.markdown("**No X-ray at hand? Try a sample from the official test set**")
    names = list(samples)
    with st.container(horizontal=True, gap="small"):
        for index, name in enumerate(names):
            with st.container(width=120, gap="small", horizontal_alignment="center"):
                st.image(thumbnails[name], width=110)
                st.button(_sample_label(names, name), key=f"sample_{index}", width="stretch",
                          type="primary" if name == chosen else "secondary", icon=CHOSEN if name == chosen else None,
                          on_click=lambda n=name: st.session_state.update(sample=n))
    if flagged_samples():
        st.caption("A sample marked with * is one the out-of-distribution gate flags: it shows what a refusal looks like.")
    if chosen not in samples:
        return []
    return [Upload(1, chosen, hashlib.sha256(samples[chosen]).hexdigest(), samples[chosen], f"sample:{chosen}")]


def _sample_label(names: list[str], name: str) -> str:
    kind = name.split("_", 1)[0]
    flagged = "*" if name in flagged_samples() else ""
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
    """The files of this batch to analyse. The server already refused (HTTP 413, marked failed in the browser) any
    file over the batch limit before the script runs; this says so, and drops anything still over it."""
    over_batch, over_server = refused_uploads()
    state, ids = st.session_state, {f.file_id for f in files}
    if not (over_batch or over_server) and ids - state.get("accepted_ids", set()):
        state.refused = state.crowded = 0  # files added since, all accepted: the earlier refusals are history
    state.accepted_ids = ids
    refused = state["refused"] = state.get("refused", 0) + over_batch
    crowded = state["crowded"] = state.get("crowded", 0) + over_server
    held = [f for f in files if hasattr(f, "size")]  # a file released from the server comes back without its bytes
    for count, why in ((refused, f"one batch is at most {MAX_FILES} files and {MAX_BATCH_MB} MB. Remove some files to "
                                 "add others."),
                       (crowded, f"the server is holding other visitors' files ({SERVER_UPLOADS_MB} MB at most for "
                                 "everyone). Remove the failed files and add them again in a few minutes, or send fewer "
                                 "at once.")):
        if count:
            st.error(f"{count} file{'s' if count > 1 else ''} (marked in red above) {'were' if count > 1 else 'was'} "
                     f"not accepted: {why}")
    uploads, total = [], 0
    for number, file in enumerate(held, start=1):
        total += file.size
        if number > MAX_FILES or total > MAX_BATCH_MB * 2**20:
            st.error(f"{len(held)} files ({sum(f.size for f in held) / 2**20:.0f} MB) were uploaded; one batch is "
                     f"at most {MAX_FILES} files and {MAX_BATCH_MB} MB. Only the first {len(uploads)} are analysed: "
                     "remove some files to analyse the others.")
            release_uploads([f.file_id for f in held[number - 1:]])  # the server stops holding the refused ones
            break
        if "\0" in file.name:
            st.error(f"File {number} was not analysed: its name contains a null byte. Rename it and upload it again.")
            continue
        data = upload_bytes(file)  # the upload manager's copy: one copy per upload
        uploads.append(Upload(number, shown_name(file.name), digest_of(file.file_id, data), data, file.file_id))
    live = {f.file_id for f in files}
    digests = st.session_state.get("digests", {})
    for file_id in [k for k in digests if k not in live]:
        del digests[file_id]
    return uploads


def follow_new_uploads(uploads: list[Upload]) -> None:
    """The newest upload is the one shown: one new file is shown on its own; several new at once open the table."""
    state = st.session_state
    seen = state.get("seen_uploads", set())
    new = [u for u in uploads if u.key not in seen]
    state.seen_uploads = {u.key for u in uploads}
    if new:
        state.closer = new[0].key if len(new) > 1 else new[-1].key
        state.show_table = len(new) > 1
    if state.get("closer") not in {u.key for u in uploads}:
        state.closer = uploads[-1].key


def choose_ui(uploads: list[Upload], metadata: ModelMetadata) -> Upload:
    """With several files: which one is shown, and (when asked or just uploaded together) the table of all."""
    st.toggle(f"Show a table of all {len(uploads)} files", key="show_table")
    if st.session_state.show_table:
        batch_ui(uploads, current_threshold(metadata), metadata)
    # the widget keeps its format function for the session: it sees the names, never an upload's bytes
    labels = {u.key: f"{u.number}. {u.name}" for u in uploads}
    key = st.selectbox("Shown below", list(labels), key="closer", format_func=labels.__getitem__)
    return next(u for u in uploads if u.key == key)


def batch_ui(uploads: list[Upload], threshold: float, metadata: ModelMetadata) -> None:
    """Results table and CSV for several uploads: three short columns on screen (readable at 400 px), all in the CSV."""
    items = predictions_for(uploads)
    shown = {u.number for u in uploads if st.session_state.get(_show_key(u))}
    trusts = batch_trusts(uploads, items, threshold, metadata)
    rows = results_rows(items, threshold, shown, trusts)
    screen = [{"file": f"{row['#']}. {row['file']}", "result": row["result"], "note": _short_note(item, trusts.get(item.number))}
              for row, item in zip(rows, items)]
    lines = max(1, *(-(-len(r["note"]) // 20) for r in screen), *(-(-len(r["file"]) // 16) for r in screen))
    row_height = min(24 + 20 * lines, 150)
    st.dataframe(screen, hide_index=True, width="stretch", row_height=row_height,
                 height=min(40 + row_height * len(rows), 760),
                 column_config={"file": st.column_config.TextColumn(width=120),
                                "result": st.column_config.TextColumn(width=100),
                                "note": st.column_config.TextColumn(width=148)})
    st.caption("The full message for each file is in the CSV, and beside the result when you show that file below.")
    st.download_button("Download results (CSV)", rows_to_csv(rows), file_name="pneumonia_results.csv",
                       mime="text/csv", on_click="ignore", key="csv")


def batch_trusts(uploads: list[Upload], items: list[BatchItem], threshold: float, metadata: ModelMetadata) -> dict:
    """Each analysed file's trust verdict, the one its own page shows; the maps are checked once per file and class,
    with a progress bar while new ones are."""
    todo = [(u, i) for u, i in zip(uploads, items) if i.prediction is not None]
    progress = st.progress(0.0, text="Checking each file's heatmap…") if todo else None
    trusts = {}
    for done, (upload, item) in enumerate(todo, 1):
        trusts[item.number] = trust_for(upload, item.prediction, threshold, metadata)
        progress.progress(done / len(todo), text=f"Checking each file's heatmap… {done} of {len(todo)}")
    if progress:
        progress.empty()
    return trusts


def _short_note(item: BatchItem, trust: Trust | None) -> str:
    """A few words on why a result is missing or needs care: the table's third column (the trust verdict's own)."""
    if item.prediction is None:
        return item.error or "could not be read"
    ood = item.prediction.ood
    if not ood.in_distribution:
        return "outside what the model knows: " + ", ".join(REASON_SHORT[r] for r in ood.reasons)
    return "; ".join(trust.notes) if trust else ""


def _show_key(upload: Upload) -> str:
    return f"show_anyway_{upload.number}_{upload.digest[:16]}"


def threshold_ui(metadata: ModelMetadata, prevalence: float) -> None:
    """Presets in threshold order, each with what it does on the official test split; then the slider. Presets
    whose rules gave one threshold (one clamped to its neighbour to keep the order) share one button."""
    state = st.session_state
    named = metadata.thresholds.named
    groups = metadata.thresholds.by_value()
    st.markdown("**Decision threshold**")
    held_out = operating_point(metadata, metadata.thresholds.default_value, prevalence)
    st.caption("Presets, from most to fewest PNEUMONIA calls. Under each: on the "
               + ("official test split (X-rays the model never saw)" if held_out.held_out else "validation split") +
               ", the share of pneumonia X-rays it finds and of normal X-rays it clears.")
    columns = st.columns(len(groups))
    for column, (value, names) in zip(columns, groups.items()):
        point = operating_point(metadata, value, prevalence)
        active = abs(float(state.threshold) - value) < 5e-4
        default = " (default)" if metadata.thresholds.default in names else ""
        label = " = ".join(name.capitalize() for name in names)
        column.button(f"{label}{default}", key=f"preset_{names[0]}", width="stretch",
                      type="primary" if active else "secondary", icon=CHOSEN if active else None,
                      on_click=lambda v=value: st.session_state.update(threshold=v))
        column.caption(f"{value:.3f}: finds {point.sensitivity:.0%}, clears {point.specificity:.0%}")
    st.slider("Call PNEUMONIA when the probability is at least", 0.001, 0.999, key="threshold_slider",
              step=0.001, format="%.3f", on_change=lambda: state.update(threshold=state.threshold_slider))
    edge = edge_of_range(operating_point(metadata, float(state.threshold), prevalence))
    if edge:
        st.warning(edge.meaning, icon=":material/warning:")
    with st.expander("How is this computed?"):
        st.markdown("How each preset was chosen (on the model's validation data, before any test image was seen):")
        for names in groups.values():
            for name in names:
                st.markdown(f"- {name.capitalize()} ({named[name].value:.3f}): {named[name].rule}.")


def prevalence_ui() -> float:
    state = st.session_state
    st.number_input("How common is pneumonia among the children you X-ray? (%)", 1, 99, step=1, format="%d",
                    key="prevalence_input", on_change=lambda: state.update(prevalence=state.prevalence_input),
                    help="Used only for PPV and NPV, the two 'how often is it right' figures. Any whole number from "
                         "1 to 99 %: at 0 % there is no pneumonia to find, so a PNEUMONIA call could never be right.")
    st.caption(PREVALENCE_REASON)  # the default, said once, with why
    return float(state.prevalence) / 100


def settings_state(metadata: ModelMetadata) -> None:
    """The threshold and prevalence live outside widget state, which Streamlit drops whenever a widget is not drawn."""
    state = st.session_state
    state.setdefault("threshold", metadata.thresholds.default_value)
    state.setdefault("prevalence", round(DEFAULT_PREVALENCE * 100))
    state.threshold_slider, state.prevalence_input = state.threshold, int(round(state.prevalence))


def current_threshold(metadata: ModelMetadata) -> float:
    return float(st.session_state.get("threshold", metadata.thresholds.default_value))


def operating_ui(metadata: ModelMetadata, threshold: float, prevalence: float, unreliable: bool = False) -> None:
    point = operating_point(metadata, threshold, prevalence)
    st.markdown("**What this threshold means**")
    st.caption(f"At threshold {threshold:.3f}, measured on the {point.source}:"
               + (" X-rays like the model's own. They say nothing about this image, which is not." if unreliable else ""))
    top, bottom = st.columns(2), st.columns(2)
    top[0].metric("Sensitivity", f"{point.sensitivity:.1%}", help="Share of pneumonia X-rays called PNEUMONIA")
    top[1].metric("Specificity", f"{point.specificity:.1%}", help="Share of normal X-rays called NORMAL")
    bottom[0].metric(f"PPV at {prevalence:.0%}", "n/a" if point.ppv is None else f"{point.ppv:.1%}",
                     help="If it says PNEUMONIA, how often that is right at this prevalence")
    bottom[1].metric(f"NPV at {prevalence:.0%}", "n/a" if point.npv is None else f"{point.npv:.1%}",
                     help="If it says NORMAL, how often that is right at this prevalence")


def result_ui(upload: Upload, prediction: Prediction, threshold: float, unreliable: str | None):
    """The result box; returns (label, an empty slot in it for the trust verdict, filled once the map is checked)."""
    label = prediction.label(threshold)
    with st.container(border=True):
        st.text(f"File: {upload.name}")
        left, right = st.columns([1, 3])
        left.metric("Pneumonia probability (unreliable)" if unreliable else "Pneumonia probability",
                    f"{prediction.probability:.1%}")
        if unreliable:  # under the number, in full (a metric's label is cut short in a narrow column)
            left.caption(f"Unreliable: {NOT_A_DIAGNOSIS}.")
        side = "at or above" if label == "PNEUMONIA" else "below"
        with right:
            if unreliable:  # shown against the gate's advice: no call colour, no bold call
                st.warning(f"Shown anyway: the model's output would read {label} at threshold {threshold:.3f} (the "
                           f"probability {prediction.probability:.3f} is {side} it), but the image is outside what this "
                           f"model knows, so this is {NOT_A_DIAGNOSIS}.", icon=":material/report:")
            else:
                (st.error if label == "PNEUMONIA" else st.success)(
                    f"**{label}** at threshold {threshold:.3f}: the calibrated probability "
                    f"{prediction.probability:.3f} is {side} the threshold.")
            slot = st.empty()
            slot.caption("Checking how far to trust this result…")
    return label, slot


TRUST_BOXES = {"outside": ("error", ":material/block:"), "caution": ("warning", ":material/warning:"),
               "no warning": ("info", ":material/check_circle:")}  # the headline's words carry the meaning


def trust_ui(slot, trust: Trust, shown_anyway: bool = False) -> None:
    """How far to trust this output, and why: the gate, a borderline call and the map's check, in one place."""
    kind, icon = TRUST_BOXES[trust.level]
    lines = [f"**{trust.headline}**", *trust.reasons]
    if shown_anyway:
        lines.append("The call above is shown because you asked for it.")
    with slot.container():
        getattr(st, kind)("  \n".join(lines), icon=icon)


def explain_settings_ui(metadata: ModelMetadata, label: str) -> ExplainSettings:
    """The map's class (the call's own first) and method (the model's shown-first method first), then its looks."""
    first = shown_first(metadata)
    other = next(c for c in TARGETS if c != label)
    columns = st.columns(4)
    which = columns[0].radio("Evidence for", list(WHICH_CLASS), key="cam_which",
                             format_func=lambda w: f"{WHICH_CLASS[w]} ({(label if w == 'call' else other).lower()})",
                             help="Where the network finds evidence for a class: the call's own class first.")
    target = label if which == "call" else other
    methods = [first, *(m for m in CAM_METHODS if m != first)]
    method = columns[1].selectbox("Method", methods, key="method", format_func=lambda m: _method_label(m, first))
    opacity = columns[2].slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05, key="opacity")
    colormap = columns[3].selectbox("Colour map", COLORMAPS, key="colormap")
    per_image = st.toggle("Per-image contrast", key="per_image",
                          help="Stretch the map to this image's own strongest spot: the shape shows even when the "
                               "evidence is weak, but a faint map then looks as bright as a strong one.")
    return ExplainSettings(target, method, opacity, colormap, per_image)


def _method_label(method: str, first: str) -> str:
    cam = CAM_METHODS[method]
    if method == first:
        return f"{cam.label} (shown first)"
    return cam.label + (" (slower)" if cam.extra_passes > CAM_METHODS[first].extra_passes else "")


def sanity_note(metadata: ModelMetadata, method: str) -> str | None:
    """A plain sentence when ``method`` failed the model's sanity check (its map barely changes with a random top)."""
    choice = metadata.explanation
    if choice is None or not choice.fails_sanity(method):
        return None
    return (f"{CAM_METHODS[method].label} barely changes when the top of the network is replaced by random weights "
            f"(its ranking of areas keeps a correlation of {choice.sanity(method):.2f} with the real one): it shows the image's "
            "structure more than what this model uses. Read it with that in mind.")


EMPTY_MAP = 0.005  # a map whose strongest spot is below this share of full colour shows as 0 %: nothing to show


def empty_map(evidence: EvidenceMap) -> bool:
    """The map is blank: all zero, or its strongest spot rounds to 0 % of the model's full colour."""
    return float(evidence.cam.max()) <= 0.0 or (evidence.absolute and evidence.peak < EMPTY_MAP)


def no_evidence_sentence(settings: ExplainSettings) -> str:
    return (f"{CAM_METHODS[settings.method].label} found no {TARGETS[settings.target].lower()} to show in this image: "
            "its map is empty (the strongest spot is under 1 % of full colour).")


def map_note(evidence: EvidenceMap, settings: ExplainSettings, metadata: ModelMetadata) -> tuple[str, str]:
    """(what the colour bar's right end means, a sentence on how strong the evidence is), in plain words that
    follow from the numbers: an empty map is said to be empty, never 'reaches 0 %'."""
    what = TARGETS[settings.target].lower()
    scale = metadata.cam_scale
    if not evidence.absolute:
        if empty_map(evidence):
            return "the strongest spot in this image, however weak", no_evidence_sentence(settings)
        return ("the strongest spot in this image, however weak",
                "This model has no fitted heatmap scale, so each map is stretched to its own strongest spot: a faint "
                "map looks as bright as a strong one.")
    share = f"{evidence.peak:.0%} of full colour"
    top = f"the top {100 - scale.percentile:.0f} %" if scale else "the strongest"
    reference = (f"as strong as in {top} of the maps on the model's validation "
                 f"{'pneumonia' if settings.target == 'PNEUMONIA' else 'normal'} X-rays")
    if empty_map(evidence):
        if settings.per_image:
            return ("the strongest spot in this image, however weak",
                    f"{no_evidence_sentence(settings)} Per-image contrast stretches that near-nothing to full colour: "
                    "the colours you see are not evidence. Turn it off to see the map on the fixed scale.")
        return reference, no_evidence_sentence(settings)
    if settings.per_image:
        return ("the strongest spot in this image, however weak",
                f"Per-image contrast is on: the map is stretched to its own strongest spot, which reaches {share} "
                f"on the fixed scale (full colour: {reference}).")
    if evidence.little_evidence and isinstance(CAM_METHODS[settings.method], OcclusionMethod):
        return (reference, f"No single patch carries much of the {what}: hiding the strongest one alone lowers it by "
                           f"only {share}. The evidence is spread over the image (the check below hides many patches at once).")
    if evidence.little_evidence:
        return (reference, f"Little {what} anywhere in this image: its strongest spot reaches only {share}.")
    return (reference, f"The strongest {what} reaches {share}; anything above full colour is shown as full colour.")


def explanation_ui(upload: Upload, analysis: ImageAnalysis, settings: ExplainSettings, metadata: ModelMetadata,
                   label: str, unreliable: bool = False) -> tuple[np.ndarray, FaithfulnessResult | None, str]:
    with st.spinner(f"Computing {CAM_METHODS[settings.method].label} and checking it…"):
        evidence, check = explain(upload.digest, upload.data, settings.method, settings.target)
    overlay = overlay_heatmap(analysis.display, evidence.heatmap(per_image=settings.per_image), settings.colormap,
                              settings.opacity)
    right_end, strength = map_note(evidence, settings, metadata)
    what = TARGETS[settings.target].lower()
    left, middle, right = st.columns([2, 2, 3])
    left.image(overlay, caption=f"{CAM_METHODS[settings.method].label}: {what}", width="stretch")
    left.image(color_bar(settings.colormap), width="stretch")
    left.caption(f"Colour scale: left end, no {what}; right end, {right_end}.")
    middle.image(analysis.network_view, caption="What the network saw: squashed to a square, contrast evened out",
                 width="stretch")
    first = shown_first(metadata)
    trust_map = (settings.method, settings.target) == (first, label)
    empty = empty_map(evidence)
    with right:
        (st.info if evidence.little_evidence or empty else st.markdown)(strength)
        if note := sanity_note(metadata, settings.method):
            st.warning(note)
        subject = "this output" if trust_map else f"the evidence for {settings.target.lower()} it shows"
        sentence, detail = check.describe(settings.target, subject)
        box = st.info if unreliable else {"supports": st.success, "weak": st.warning, "does not support": st.error}[check.verdict]
        if empty:  # no highlighted area to hide: the check has nothing to test
            sentence, box = "Nothing to check: the map highlights no area, so there is nothing to hide.", st.info
            detail = f"The check still ran on the map's faint shape, stretched to its own maximum. {detail}"
        heading = "Does the map explain the output?" if trust_map else "Does this map explain what it shows?"
        box(f"**{heading}** {sentence}")
        if not trust_map:
            st.caption(f"The verdict on trust above checks the map shown first: {CAM_METHODS[first].label}, evidence "
                       f"for {label.lower()}, the call itself. This map's check is about this map only.")
        with st.expander("How is this computed?"):
            st.markdown(
                f"**The check.** {detail} Removed pixels are in-filled from their surroundings (ROAD's noisy linear "
                "imputation), which itself moves the evidence a little; the comparison with random removal cancels "
                "most of that. *Supports*: the fall clears the margin, clears it again beyond random removal, and is at "
                "least as large as random removal's own effect either way. "
                "*Does not support*: no fall, or no more than one spread beyond random removal. *Weak*: in between.\n\n"
                f"**The colours.** {_scale_detail(metadata, settings)} Evidence is in log-odds: the logarithm of "
                "P / (1 − P), where a change of 1 multiplies the odds by e ≈ 2.7.")
    if empty:  # the report then says only what the page says: no evidence, nothing to check
        return overlay, None, f"{strength} Nothing for the map's check to test. Colour bar: right end = {right_end}."
    return overlay, check, f"{strength} Colour bar: right end = {right_end}."


def _scale_detail(metadata: ModelMetadata, settings: ExplainSettings) -> str:
    scale = metadata.cam_scale
    if scale is None or scale.value(settings.method, settings.target) is None:
        return "This model has no fitted scale for this map, so it is stretched to its own strongest spot."
    images = scale.images.get(settings.target, {}).get(settings.method, 0)
    text = (f"Full colour is {scale.value(settings.method, settings.target):.4g} in the method's own units: the "
            f"{scale.percentile:.0f}th percentile of the strongest spot of each map over {images} validation "
            f"{settings.target.lower()} X-rays, fitted with the model.")
    if settings.method == "scorecam":
        text += (" Score-CAM weighs each region by the probability the network gives the image masked to that region "
                 "alone; on this model that is high on normal X-rays too, so its maps can look strong on a normal "
                 "film. Judge them by the check.")
    return text


@st.cache_data(max_entries=8, show_spinner=False)
def report_bytes(key: tuple, _content: ReportContent, fmt: str) -> bytes:
    """The report, rendered in the run that draws its button (``key``: everything the page shows in it)."""
    return render_report(_content, fmt=fmt)


@st.fragment
def report_ui(name: str, tag: str, content: ReportContent, key: tuple) -> None:
    # Rendered only when asked for: rendering both formats took about 2 s, and it ran on every threshold or opacity
    # change. "Prepare" reruns this fragment alone, which renders that format once for these settings (``key``) and
    # shows its download button until a setting changes. The fragment's arguments are kept for its reruns: the file's
    # name and a tag for its widgets, never the upload (its bytes would outlive the upload).
    # Bytes, not a deferred callable: a deferred download's id is replaced on every rerun, so a click that races a
    # threshold change found "Deferred file not found"; a stored file outlives the rerun that replaced it.
    ready = st.session_state.get("reports_ready", {})  # format -> the settings it was prepared for
    wanted = repr(key)  # by value: the script's own classes (ExplainSettings) are new objects on every run
    columns = st.columns(2)
    for column, fmt, mime in ((columns[0], "png", "image/png"), (columns[1], "pdf", "application/pdf")):
        if ready.get(fmt) == wanted:
            column.download_button(f"Download report ({fmt.upper()})", data=report_bytes(key, content, fmt),
                                   file_name=safe_download_name(name, f"_report.{fmt}"), mime=mime,
                                   on_click="ignore", key=f"{fmt}_{tag}")
        else:
            column.button(f"Prepare report ({fmt.upper()})", key=f"prepare_{fmt}_{tag}",
                          width="stretch", on_click=lambda f=fmt: st.session_state.update(reports_ready={**ready, f: wanted}))


_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]()#+-.!|~<>$:&"})


def plain(text: str) -> str:
    """Text for a markdown element (st.error & co.), escaped so that it shows as typed: no bold, link, image or math."""
    return text.translate(_MARKDOWN_SPECIAL)


def ood_ui(upload: Upload, analysis: ImageAnalysis) -> bool:
    """Explain why the image is flagged; True when the user still wants the (unreliable) output for THIS file."""
    prediction = analysis.prediction
    with st.container(border=True):
        st.text(f"File: {upload.name}")
        ood = prediction.ood
        st.error(f"**{HEADLINE}: {ood.summary}.** The pneumonia probability is withheld: on such an image it "
                   "would not mean much.", icon=":material/block:")
        with st.expander("How is this computed?"):
            st.markdown(f"The population gate checks every image before the model answers: {ood.message}. "
                        f"Its feature distance is {ood.distance:.2f}× its limit; its population head gives "
                        f"{ood.outside_probability:.0%} for *not a young child's chest X-ray* against a limit of "
                        f"{ood.outside_limit:.0%}. Both limits let through all but about 0.5 % of clean validation "
                        "X-rays of the model's own population. See the model card: *Who this model is "
                        "for, and what the gate refuses*.")
        shown = st.checkbox("Show the model's output anyway (unreliable)", key=_show_key(upload))
    if not shown:
        colour = colour_copy(upload.digest, upload.data) if "colour" in prediction.ood.reasons else None
        st.image(analysis.display if colour is None else colour,
                 caption="Uploaded image" + (" (in colour, as uploaded)" if colour is not None else ""), width=360)
    return shown


def edge_cautions(metadata: ModelMetadata, threshold: float, label: str) -> tuple[str, ...]:
    """A caution for the trust verdict when the threshold is at the edge of its range and the call goes its way:
    there "not borderline" would claim too much (sensitivity and specificity do not depend on the prevalence)."""
    edge = edge_of_range(operating_point(metadata, threshold, DEFAULT_PREVALENCE))
    caution = edge.caution(label) if edge else None
    return (caution,) if caution else ()


def single_image_ui(upload: Upload, metadata: ModelMetadata) -> None:
    analysis, error = analysed(upload)
    if error:
        with st.container(border=True):
            st.text(f"File: {upload.name}")
            st.error(plain(error))
        return
    prediction = analysis.prediction
    unreliable = None if prediction.ood.in_distribution else reliability_note(prediction.ood)
    if unreliable and not ood_ui(upload, analysis):
        return
    settings_state(metadata)
    threshold = current_threshold(metadata)
    label, trust_slot = result_ui(upload, prediction, threshold, unreliable)
    left, right = st.columns([3, 2], gap="large")
    with right:
        prevalence = prevalence_ui()
    with left:
        threshold_ui(metadata, prevalence)
    with right:
        operating_ui(metadata, threshold, prevalence, unreliable is not None)
    st.subheader("Where is the evidence?")
    settings = explain_settings_ui(metadata, label)
    overlay, check, note = explanation_ui(upload, analysis, settings, metadata, label, unreliable is not None)
    trust = trust_for(upload, prediction, threshold, metadata)  # the map shown first: cached, often the one on screen
    trust_ui(trust_slot, trust, unreliable is not None)
    gate = "accepted" if prediction.ood.in_distribution else f"flagged: {prediction.ood.message}"
    content = ReportContent(upload.name, analysis.display, overlay, f"{CAM_METHODS[settings.method].label} "
                            f"({TARGETS[settings.target].lower()})", prediction.probability, label,
                            operating_point(metadata, threshold, prevalence), metadata, gate, unreliable,
                            tuple(prediction.cautions(threshold)), check, settings.target, note, trust.text,
                            (settings.method, settings.target) == (shown_first(metadata), label))
    report_ui(upload.name, f"{upload.number}_{upload.digest[:12]}", content,
              (upload.number, upload.name, upload.digest, threshold, prevalence, settings, unreliable, trust,
               int(time.time() // 60)))


def analyse_tab(metadata: ModelMetadata) -> None:
    uploads = input_ui()
    if not uploads:
        st.info("Upload one or more chest X-rays, or pick a sample above.")
        return
    follow_new_uploads(uploads)
    shown = choose_ui(uploads, metadata) if len(uploads) > 1 else uploads[0]
    single_image_ui(shown, metadata)


PLOT_CAPTIONS = {
    "training_history": "How training went: the loss (lower is better) and the ROC AUC (higher is better) after each "
                        "pass over the training images, on the training images and on the held-back validation ones.",
    "test_roc": "How well the model ranks pneumonia above normal on the official test split, at every threshold.",
    "test_pr": "On the test split: how many PNEUMONIA calls are right (precision) against how many pneumonia cases "
               "are found (recall), at every threshold.",
    "test_confusion": "On the test split, at the default threshold: the model's calls against the truth.",
    "test_reliability": "Calibration on the test split: when the model says 70 %, is it right about 70 % of the time?",
    "test_heatmap_samples": "The map the app shows first, on eight test X-rays (four normal, four pneumonia): where the "
                            "evidence for each call lies, on the model's fixed scale (faint means little evidence), "
                            "with its check's verdict; red titles are wrong calls.",
}
PLOT_ORDER = list(PLOT_CAPTIONS)


NARROW_TABLES_CSS = ("<style>[data-testid=stMarkdownContainer] table {display: block; max-width: 100%; overflow-x: auto;}"
                     "</style>")  # a wide table scrolls inside its own box on a phone instead of widening the page


@st.cache_data(show_spinner=False)
def _aspect(path: Path) -> float:
    from PIL import Image

    with Image.open(path) as image:
        return image.width / image.height


def _caption(plot: Path) -> str:
    return PLOT_CAPTIONS.get(plot.stem, plot.stem.replace("_", " "))


@st.cache_data(show_spinner=False)
def report_json(path: Path) -> dict | None:
    """A report JSON the visitor's card reads its figures from; None when it is missing or unreadable."""
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def visitor_card_ui(metadata: ModelMetadata) -> None:
    """One phone screen of plain sentences and one small table, from the metadata and report JSONs."""
    card = visitor_card(metadata, report_json(REPORTS_DIR / "population.json"), report_json(FAITHFULNESS_JSON))
    with st.container(border=True, key="visitor_card"):
        for heading, text in card.sections:
            st.markdown(f"**{heading}.** {text}")
            if heading == card.table_after and card.table:
                columns = list(card.table[0])
                st.markdown("\n".join([" | ".join(columns), " | ".join("---" for _ in columns),
                                        *(" | ".join(row.values()) for row in card.table)]))


WIDE_PLOT_MIN_SHARE = 0.75  # a wide plot is never drawn narrower than this share of its own width: its text stays readable


def plot_ui(plot: Path) -> None:
    """One plot at a readable size. A square plot takes its column (at least 330 px on a phone: two thirds of its
    own width or more); a wide one keeps at least 75 % of its width and, on a narrow screen, scrolls sideways in
    its own box instead of shrinking its text to a few pixels."""
    if _aspect(plot) > 1.3:
        from PIL import Image

        with Image.open(plot) as image:
            width = image.width
        key = f"plot_{plot.stem}"
        st.html(f"<style>.st-key-{key} {{overflow-x: auto;}} .st-key-{key} img {{min-width: "
                f"{int(width * WIDE_PLOT_MIN_SHARE)}px;}}</style>")
        with st.container(key=key):
            st.image(str(plot), width="stretch")
        st.caption(_caption(plot) + " On a narrow screen, scroll the plot sideways.")
    else:
        with st.container(key=f"plot_{plot.stem}"):
            st.image(str(plot), width="stretch")
        st.caption(_caption(plot))


def model_card_tab(metadata: ModelMetadata) -> None:
    st.html(NARROW_TABLES_CSS)
    visitor_card_ui(metadata)
    plots = sorted(REPORTS_DIR.glob("*.png"), key=lambda p: (PLOT_ORDER.index(p.stem) if p.stem in PLOT_ORDER else 99,
                                                             p.stem)) if REPORTS_DIR.exists() else []
    with st.expander("The full technical model card", expanded=False):
        st.info(plain_summary(metadata))
        wide = [p for p in plots if _aspect(p) > 1.3]
        square = [p for p in plots if p not in wide]
        for plot in wide:  # about 1000 px on a wide screen (a column), wider than a phone (scrolling in its own box)
            with st.columns([4, 1])[0]:
                plot_ui(plot)
        for start in range(0, len(square), 2):  # square plots two to a row (one under another on a phone)
            for column, plot in zip(st.columns([2, 2, 1]), square[start:start + 2]):
                with column:
                    plot_ui(plot)
        if MODEL_CARD.exists():
            st.markdown(MODEL_CARD.read_text())
    st.caption(f"Model file SHA-256 {metadata.sha256}")


def main() -> None:
    st.set_page_config(page_title="Chest X-ray pneumonia classifier", page_icon=":material/pulmonology:", layout="wide")
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
