"""The upload manager refuses a file over a session's batch limit before holding it (issue 21, item 13)."""

from __future__ import annotations

import pytest
from starlette.exceptions import HTTPException
from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.runtime.uploaded_file_manager import UploadedFileRec

from app import server_config


def _file(file_id: str, mb: float) -> UploadedFileRec:
    return UploadedFileRec(file_id=file_id, name=f"{file_id}.png", type="image/png", data=b"\0" * int(mb * 2**20))


def test_a_session_never_holds_more_than_the_batch_limit():
    manager = MemoryUploadedFileManager("/upload")
    server_config.install_upload_budget(manager, max_files=3, max_mb=10)
    server_config.install_upload_budget(manager, max_files=3, max_mb=10)  # idempotent
    manager.add_file("a", _file("1", 4))
    manager.add_file("a", _file("2", 4))
    with pytest.raises(HTTPException) as refused:
        manager.add_file("a", _file("3", 4))  # 12 MB > 10 MB
    assert refused.value.status_code == 413
    manager.add_file("a", _file("2", 5))  # the same file sent again replaces itself: 9 MB
    manager.add_file("b", _file("1", 9))  # another session has its own budget
    manager.add_file("a", _file("4", 0.5))
    with pytest.raises(HTTPException):
        manager.add_file("a", _file("5", 0.1))  # a fourth file
    assert [len(manager.get_files("a", ["1", "2", "3", "4", "5"]))] == [3]
    assert server_config._refused.pop("a") == 2
    manager.remove_file("a", "1")
    manager.add_file("a", _file("5", 0.1))  # removing a file frees its room


def test_all_sessions_together_never_hold_more_than_the_server_budget():
    manager = MemoryUploadedFileManager("/upload")
    server_config.install_upload_budget(manager, max_files=3, max_mb=10, server_mb=15)
    manager.add_file("a", _file("1", 8))
    manager.add_file("b", _file("1", 6))
    with pytest.raises(HTTPException) as crowded:
        manager.add_file("c", _file("1", 2))  # 16 MB held for everyone: refused, though c's own batch is empty
    assert crowded.value.status_code == 413 and "all visitors" in crowded.value.detail
    assert server_config._refused_for_server.pop("c") == 1 and "c" not in server_config._refused
    manager.add_file("b", _file("1", 7))  # b's file sent again replaces itself: 15 MB
    manager.remove_session_files("a")  # a visitor leaves: room for others
    manager.add_file("c", _file("1", 2))
    assert len(manager.get_files("c", ["1"])) == 1
