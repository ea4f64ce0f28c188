"""Server settings the app applies to the Streamlit server it runs in (nothing here draws).

Streamlit 1.67 parses uploads with Starlette, which spools any multipart part
over 1 MB to an unnamed temporary file on disk. Raising Starlette's spool
limit above the upload limit keeps every upload in memory: no X-ray, and no
DICOM header with a patient's name in it, is ever written to disk.
"""

from __future__ import annotations

MB = 2**20


def keep_uploads_in_memory(max_upload_mb: int) -> None:
    """Never spool an upload of up to ``max_upload_mb`` (plus multipart framing) to a temporary file."""
    from starlette.formparsers import MultiPartParser

    limit = (int(max_upload_mb) + 1) * MB
    if MultiPartParser.spool_max_size < limit:
        MultiPartParser.spool_max_size = limit
