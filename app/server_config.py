"""Server settings the app applies to the Streamlit server it runs in (nothing here draws).

Streamlit 1.67 parses uploads with Starlette, which spools any multipart part
over 1 MB to an unnamed temporary file on disk. Raising Starlette's spool
limit above the upload limit keeps every upload in memory: no X-ray, and no
DICOM header with a patient's name in it, is ever written to disk.

Memory: Streamlit runs each session's script in its own thread, and glibc gives
threads their own malloc arenas, which keep freed memory and fragment; under a
few concurrent sessions the server's resident size climbs by hundreds of MB
that Python has already freed. Two malloc arenas and a trim after each run keep
it near what is actually in use (no effect where the C library is not glibc).
"""

from __future__ import annotations

import ctypes
import ctypes.util

MB = 2**20


def keep_uploads_in_memory(max_upload_mb: int) -> None:
    """Never spool an upload of up to ``max_upload_mb`` (plus multipart framing) to a temporary file."""
    from starlette.formparsers import MultiPartParser

    limit = (int(max_upload_mb) + 1) * MB
    if MultiPartParser.spool_max_size < limit:
        MultiPartParser.spool_max_size = limit


M_ARENA_MAX = -8  # glibc mallopt parameter


def _glibc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _glibc()


def limit_malloc_arenas(arenas: int = 2) -> None:
    """At most ``arenas`` malloc arenas for threads created from now on."""
    if _LIBC is not None and hasattr(_LIBC, "mallopt"):
        _LIBC.mallopt(M_ARENA_MAX, arenas)


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
