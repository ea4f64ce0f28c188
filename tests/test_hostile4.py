"""Issue 26 (hostile input, round four): each class with a small generated file, built here."""

from __future__ import annotations

import importlib
import os
import subprocess


def _forbid_child_processes(monkeypatch) -> list:
    started = []

    def refuse(*args, **kwargs):
        started.append(args[:1])
        raise AssertionError("tried to start a process")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv", "execve"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)
    return started


def test_server_config_finds_libc_without_a_child_process(monkeypatch):
    """Item 11: ctypes.util.find_library("c") ran ``ldconfig -p``; the C library is opened by soname instead."""
    from app import server_config

    started = _forbid_child_processes(monkeypatch)
    reloaded = importlib.reload(server_config)
    assert started == []
    if os.path.exists("/proc/self/maps") and "libc.so.6" in open("/proc/self/maps").read():
        assert reloaded._LIBC is not None and hasattr(reloaded._LIBC, "malloc_trim")
    monkeypatch.setattr(reloaded, "LIBC_SONAME", "libc-that-does-not-exist.so.99")
    assert reloaded._glibc() is not None  # falls back to the symbols already loaded, still without a process
    assert started == []
    reloaded.release_freed_memory()
