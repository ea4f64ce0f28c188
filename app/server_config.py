"""Server settings the app applies to the Streamlit server it runs in (nothing here draws).

Streamlit 1.67 parses uploads with Starlette, which spools any multipart part
over 1 MB to an unnamed temporary file on disk. Raising Starlette's spool
limit above the upload limit keeps every upload in memory: no X-ray, and no
DICOM header with a patient's name in it, is ever written to disk.

Uploads: Streamlit stores each file the browser sends in its upload manager
(in memory) as soon as it arrives, before the script runs: a batch limit
checked by the script comes after the server already holds the whole batch
(50 files of 30 MB took the server to 3.4 GB). ``limit_session_uploads``
makes the manager refuse, with HTTP 413, any file that would take one
session over the app's batch limit, so a session never holds more than the
batch limit; the browser marks those files as failed and the script is told
how many were refused. Freed upload buffers go back to the OS at once
(``return_large_buffers``).

Memory: Streamlit runs each session's script in its own thread, and glibc gives
threads their own malloc arenas, which keep freed memory and fragment; under a
few concurrent sessions the server's resident size climbs by hundreds of MB
that Python has already freed. Two malloc arenas and a trim after each run keep
it near what is actually in use (no effect where the C library is not glibc).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time

MB = 2**20


def keep_uploads_in_memory(max_upload_mb: int) -> None:
    """Never spool an upload of up to ``max_upload_mb`` (plus multipart framing) to a temporary file."""
    from starlette.formparsers import MultiPartParser

    limit = (int(max_upload_mb) + 1) * MB
    if MultiPartParser.spool_max_size < limit:
        MultiPartParser.spool_max_size = limit


# One budget for decoding and inference across all sessions (model/admission.py): the memory the server may use,
# its size idle, and the most one analysis adds above that (python -m bench hostile: a 9700² PNG, about 360 MB).
SERVER_MEMORY_MB = 690  # the hosted tier; APP_MEMORY_MB overrides it, else a cgroup limit below it
IDLE_MB = 200
ANALYSIS_PEAK_MB = 360


def analysis_slots(memory_mb: float | None = None) -> int:
    """How many analyses may run at once: (memory - idle) // the costliest analysis, at least 1."""
    if memory_mb is None:
        memory_mb = _memory_limit_mb()
    return max(1, int((memory_mb - IDLE_MB) // ANALYSIS_PEAK_MB))


def _memory_limit_mb() -> float:
    """APP_MEMORY_MB if set, else the cgroup's memory.max if lower than SERVER_MEMORY_MB, else SERVER_MEMORY_MB."""
    import os

    if os.environ.get("APP_MEMORY_MB", "").strip().isdigit():
        return float(os.environ["APP_MEMORY_MB"])
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
    except OSError:
        limit = "max"
    return min(SERVER_MEMORY_MB, int(limit) / MB) if limit.isdigit() else SERVER_MEMORY_MB


M_ARENA_MAX = -8  # glibc mallopt parameters
M_MMAP_THRESHOLD = -3


LIBC_SONAME = "libc.so.6"  # glibc's fixed soname on every Linux it ships on


def _glibc():
    """The C library, found without starting a program: ``ctypes.util.find_library`` runs ``ldconfig -p`` (a child
    process). glibc by its fixed soname; otherwise the symbols already loaded into this process (dlopen(NULL)),
    which include whatever C library Python runs on; the mallopt/malloc_trim calls check their symbol exists."""
    for name in (LIBC_SONAME, None):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


_LIBC = _glibc()


def limit_malloc_arenas(arenas: int = 2) -> None:
    """At most ``arenas`` malloc arenas for threads created from now on."""
    if _LIBC is not None and hasattr(_LIBC, "mallopt"):
        _LIBC.mallopt(M_ARENA_MAX, arenas)


def return_large_buffers(threshold_mb: int = 1) -> None:
    """Allocate every buffer of ``threshold_mb`` or more with its own mmap, so freeing it returns it to the OS.

    glibc's default threshold rises to the largest buffer freed so far (up to 32 MB): after the first upload is
    freed, later uploads of up to 32 MB come from the heap, which keeps them resident after they are freed.
    A fixed threshold turns that off.
    """
    if _LIBC is not None and hasattr(_LIBC, "mallopt"):
        _LIBC.mallopt(M_MMAP_THRESHOLD, int(threshold_mb * MB))


def release_freed_memory() -> None:
    """Hand memory that Python and NumPy have freed back to the operating system."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def release_uploads(file_ids: list[str]) -> None:
    """Drop these uploads of the current session from Streamlit's in-memory upload store (the browser still lists
    them until the user removes them; their bytes are gone from the server)."""
    from streamlit.runtime import exists, get_instance
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None or not exists():
        return
    manager = get_instance().uploaded_file_mgr
    for file_id in file_ids:
        manager.remove_file(ctx.session_id, file_id)


def share_uploads_between_runs() -> None:
    """Make a deep copy of an UploadedFile share its bytes instead of copying them.

    Streamlit deep-copies every widget's value on every run (so a script cannot mutate widget state), and a BytesIO
    copies its whole buffer when deep-copied: each rerun of a tab holding a 100 MB batch allocated and copied
    100 MB more, a threshold change included. The copy made here is a new UploadedFile over the same immutable bytes
    (a BytesIO built from ``bytes`` shares them until written to), so the script still cannot touch the stored one.
    Idempotent."""
    from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

    if getattr(UploadedFile, "_shares_bytes", False):
        return

    def share(self, memo):
        record = UploadedFileRec(file_id=self.file_id, name=self.name, type=self.type, data=self.getvalue())
        return UploadedFile(record, self._file_urls)

    UploadedFile.__deepcopy__ = share
    UploadedFile._shares_bytes = True


def upload_bytes(file) -> bytes:
    """The bytes of an upload the script was given (``st.file_uploader``'s UploadedFile), as held by the upload
    manager, and the script's copy closed.

    Streamlit deep-copies a widget's value on every run, so each UploadedFile the script sees owned a second copy of
    the file (a BytesIO cannot share through ``deepcopy`` unless :func:`share_uploads_between_runs` is in effect);
    kept, that copy doubled what a batch holds (3 × 30 MB held 90 MB twice). The manager's own record is the one
    copy; the script's copy is closed. Outside a script run, the script's copy is returned."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    manager = getattr(ctx, "uploaded_file_mgr", None)  # the one st.file_uploader read this file from
    records = manager.get_files(ctx.session_id, [file.file_id]) if manager is not None else []
    data = records[0].data if records and isinstance(records[0].data, bytes) else file.getvalue()
    file.close()  # frees this run's deep copy (the manager's record, and ``data``, are other objects)
    return data


_refused: dict[str, int] = {}  # session id -> files refused by its batch limit since the script last asked
_refused_for_server: dict[str, int] = {}  # session id -> files refused because the server held too much for everyone


def limit_session_uploads(max_files: int, max_mb: float, server_mb: float | None = None) -> None:
    """Make Streamlit's upload manager refuse (HTTP 413) a file that takes its session over ``max_files`` files or
    ``max_mb`` MB held at once, or the whole server over ``server_mb`` MB of uploads held for all sessions; the
    file's bytes are dropped at once instead of being held until the script runs. Idempotent (the app calls it on
    every run); does nothing outside a running server."""
    from streamlit.runtime import exists, get_instance

    if exists():
        install_upload_budget(get_instance().uploaded_file_mgr, max_files, max_mb, server_mb)


def install_upload_budget(manager, max_files: int, max_mb: float, server_mb: float | None = None) -> None:
    """``limit_session_uploads`` on a given (memory) upload manager."""
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager

    budget = (max_files, max_mb, server_mb)
    if not isinstance(manager, MemoryUploadedFileManager) or getattr(manager, "_session_budget", None) == budget:
        return  # AppTest's stand-in manager holds nothing
    add_file = MemoryUploadedFileManager.add_file.__get__(manager)
    max_bytes, server_bytes = int(max_mb * MB), None if server_mb is None else int(server_mb * MB)

    def add_within_budget(session_id: str, file) -> None:
        from starlette.exceptions import HTTPException

        with manager._lock:
            others = [(sid, k, len(f.data)) for sid, files in manager.file_storage.items() for k, f in files.items()
                      if (sid, k) != (session_id, file.file_id)]  # the same file sent again replaces itself
            mine = [size for sid, _, size in others if sid == session_id]
            over = len(mine) + 1 > max_files or sum(mine) + len(file.data) > max_bytes
            crowded = not over and server_bytes is not None and sum(n for *_, n in others) + len(file.data) > server_bytes
            if over or crowded:
                counter = _refused if over else _refused_for_server
                counter[session_id] = counter.get(session_id, 0) + 1
        if over:
            raise HTTPException(status_code=413, detail=f"Over this app's batch limit ({max_files} files, "
                                                        f"{max_mb:g} MB at once)")
        if crowded:
            raise HTTPException(status_code=413, detail=f"The server holds {server_mb:g} MB of uploads at most, "
                                                        "for all visitors together")
        add_file(session_id=session_id, file=file)

    manager.add_file = add_within_budget
    manager._session_budget = budget


def refused_uploads() -> tuple[int, int]:
    """How many files the upload manager refused for the current session since the last call (then resets): (over
    the session's batch limit, over the server's budget for all visitors)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:
        return 0, 0
    counts = _refused.pop(ctx.session_id, 0), _refused_for_server.pop(ctx.session_id, 0)
    if any(counts):  # a refused request's bytes stay in a reference cycle (its exception's frames) until a collection
        gc.collect()
        release_freed_memory()
    return counts


EXPIRED_SESSION_SWEEP_S = 10.0
_sweep_lock = threading.Lock()
log = logging.getLogger(__name__)


def shut_down_expired_sessions(sweep_s: float = EXPIRED_SESSION_SWEEP_S) -> None:
    """Give a closed tab's memory back once its session can no longer be resumed.

    A closed tab's session is kept for ``server.disconnectedSessionTTL`` (120 s) so that a reconnecting tab finds it.
    Streamlit 1.67 then drops it from its session store without shutting it down, so its uploads stayed in the
    upload manager for the life of the server (a closed tab's 3 × 30 MB batch was still held minutes later). Here a
    session the store drops, expired or evicted, is shut down as closing it would be (uploads and media released),
    and the store is swept every ``sweep_s`` seconds on the server's event loop, the only thread that touches it.
    Idempotent; does nothing outside a running server (AppTest) or where the store is not Streamlit's in-memory one.
    """
    from streamlit.runtime import exists, get_instance

    if not exists():
        return
    runtime = get_instance()
    cache = getattr(getattr(getattr(runtime, "_session_mgr", None), "_session_storage", None), "_cache", None)
    with _sweep_lock:
        if cache is None or not hasattr(cache, "expire") or getattr(cache, "_shuts_down_dropped", False):
            return
        loop = runtime._get_async_objs().eventloop
        _shut_down_what_the_store_drops(cache, loop)
        threading.Thread(target=_sweep, args=(cache, loop, sweep_s), name="expired-session-sweep", daemon=True).start()


def _shut_down_what_the_store_drops(cache, loop) -> None:
    """Wrap the store's own removals (it reaps while Streamlit saves a session, under its storage lock): each
    dropped session is shut down, a failure logged rather than raised into Streamlit's disconnect; freed memory
    is handed back afterwards, off the lock."""
    expire, evict = cache.expire, cache._evict_lru

    def shut_down(info) -> None:
        try:
            info.session.shutdown()
            if getattr(info.session, "_scriptrunner", None) is None:  # no script of it still unwinding
                # the server's message loop may hold the last session it served until another one sends: its
                # state (the uploader's files among it) is dropped now, not then
                info.session.session_state.clear()
        except Exception:  # noqa: BLE001 - one session's failure must not stop the others or the caller
            log.exception("an ended session could not be shut down")
        _refused.pop(info.session.id, None)
        _refused_for_server.pop(info.session.id, None)

    def expire_and_shut_down(at_time=None):
        removed = expire(at_time)
        for _, info in removed:
            shut_down(info)
        if removed:
            loop.call_soon(_collect_and_release)
        return removed

    def evict_and_shut_down(reason):
        info = evict(reason)
        shut_down(info)
        loop.call_soon(_collect_and_release)
        return info

    cache.expire, cache._evict_lru, cache._shuts_down_dropped = expire_and_shut_down, evict_and_shut_down, True


def _collect_and_release() -> None:
    gc.collect()
    release_freed_memory()


def _sweep(cache, loop, every_s: float) -> None:
    """Ask the event loop to reap the store every ``every_s`` seconds (it only reaps when touched)."""
    while not loop.is_closed():
        time.sleep(every_s)
        try:
            loop.call_soon_threadsafe(cache.expire)
        except RuntimeError:  # the loop closed while this slept
            return
