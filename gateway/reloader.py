"""Keeps the live Runtime in step with the config file: file watch and on-demand reload.

An invalid file is rejected and logged; the running config stays. A valid one goes live for the
next request, except the start-only settings (`gateway.settings.START_ONLY`): a change to one of
those is reported (the reload's answer, a warning in the log, `GET /admin/config`) as waiting for
a restart, and the process keeps what it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

from gateway import config
from gateway.runtime import Runtime
from gateway.settings import needs_restart

log = logging.getLogger("gateway.config")


@dataclass(frozen=True)
class ReloadResult:
    changed: bool
    version: str
    problems: list[str]
    restart_required: list[str]
    """Start-only settings that differ from what this process started with."""


class Reloader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.runtime = Runtime(config.load(path))
        self.started = self.runtime.settings
        """The settings this process started with; its start-only parts stay until a restart."""
        self._stamp = _stamp(path)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def reload(self) -> ReloadResult:
        """Load the file again; swap the runtime if it is valid and different."""
        async with self._lock:
            self._stamp = _stamp(self.path)
            try:
                loaded = config.load(self.path)
            except config.ConfigError as exc:
                problems = [p.render(exc.source) for p in exc.problems]
                log.error("config reload rejected, keeping version %s:\n%s", self.runtime.version, "\n".join(problems))
                return ReloadResult(False, self.runtime.version, problems, self.restart_required())
            if loaded.version == self.runtime.version:
                return ReloadResult(False, loaded.version, [], self.restart_required())
            old, self.runtime = self.runtime, Runtime(loaded, previous=self.runtime)
            self.runtime.start()
            old.retire()
            log.info("config reloaded: version %s -> %s", old.version, loaded.version)
            if waiting := self.restart_required():
                log.warning("these settings changed but take effect only after a restart: %s", ", ".join(waiting))
            return ReloadResult(True, loaded.version, [], waiting)

    def restart_required(self) -> list[str]:
        """Start-only settings of the live config that differ from what this process started with."""
        return needs_restart(self.started, self.runtime.settings)

    def start_watching(self) -> None:
        self.runtime.start()
        settings = self.runtime.settings.reload
        if settings.watch:
            self._task = asyncio.get_running_loop().create_task(self._watch(settings.interval_s))

    async def _watch(self, interval: float) -> None:
        """Reload once a change has settled: the same stamp on two polls in a row. A file caught
        while an editor or `kubectl` writes it (truncated, half written) is not read, so a valid
        edit is never first rejected as empty."""
        seen = self._stamp
        while True:
            await asyncio.sleep(interval)
            stamp = _stamp(self.path)
            if stamp != self._stamp and stamp == seen:
                await self.reload()
            seen = stamp

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.runtime.retire()
        await self.runtime.closed()


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
