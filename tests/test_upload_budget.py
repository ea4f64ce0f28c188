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


def test_a_session_dropped_from_the_store_is_shut_down_and_a_resumed_one_is_not(monkeypatch):
    """Streamlit keeps a closed tab's session for reconnection, then drops it without shutting it down (its uploads
    stayed held for good): a session that expires or is evicted is shut down; one taken back by its tab is not."""
    import types

    import streamlit.runtime as st_runtime
    from streamlit.runtime.caching.ttl_cache import TTLCache

    class Session:
        def __init__(self, name):
            self.id, self.session_state, self.down = name, {"uploads": b"x" * 10}, False

        def shutdown(self):
            self.down = True
            if self.id == "broken":
                raise RuntimeError("a release hook failed")

    def info(name):
        return types.SimpleNamespace(session=Session(name))

    now = [0.0]
    cache = TTLCache(maxsize=3, ttl=120, timer=lambda: now[0])
    loop = types.SimpleNamespace(call_soon=lambda f: f())
    storage = types.SimpleNamespace(_session_storage=types.SimpleNamespace(_cache=cache))
    runtime = types.SimpleNamespace(_session_mgr=storage, _get_async_objs=lambda: types.SimpleNamespace(eventloop=loop))
    monkeypatch.setattr(st_runtime, "exists", lambda: True)
    monkeypatch.setattr(st_runtime, "get_instance", lambda: runtime)
    monkeypatch.setattr(server_config, "_sweep", lambda *args: None)  # no thread: the test reaps the store itself
    server_config.shut_down_expired_sessions()
    server_config.shut_down_expired_sessions()  # idempotent
    broken, closed, resumed = info("broken"), info("closed"), info("resumed")
    cache["broken"], cache["closed"], cache["resumed"] = broken, closed, resumed
    del cache["resumed"]  # its tab came back: Streamlit takes it out of the store to use it again
    now[0] = 121.0
    assert len(cache) == 0  # a read of the store reaps what expired
    assert closed.session.down and closed.session.session_state == {}  # though the one before it failed
    assert not resumed.session.down and resumed.session.session_state
    evicted, first, second, third = info("evicted"), info("a"), info("b"), info("c")
    cache["evicted"], cache["a"], cache["b"] = evicted, first, second
    cache["c"] = third  # over the store's size: the least recently used is evicted, and shut down
    assert evicted.session.down and not first.session.down
