"""Running ``eventwire`` as a user would: real processes, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any ``EVENTWIRE_*`` of the developer's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWIRE_")}
    env.update(extra)
    return env


def eventwire(
    *args: str, env: dict[str, str], timeout: float = 60, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run one ``eventwire`` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,
    )


def eventwire_json(*args: str, env: dict[str, str]) -> Any:
    """What one ``eventwire ... --json`` command prints, parsed; it must succeed."""
    done = eventwire(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class Serve:
    """An ``eventwire serve`` process; its log goes to a file the test can read."""

    def __init__(
        self,
        config: Path,
        env: dict[str, str],
        log: Path,
        *args: str,
        module: str = "broker.cli",
        program: list[str] | None = None,
        cwd: Path = REPO,
    ) -> None:
        """``program`` (default ``python -m module``) ``serve -c config *args`` in ``cwd``."""
        self.log_path = log
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [*(program or [sys.executable, "-m", module]), "serve", "-c", str(config), *args],
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(self, timeout_s: float = 30) -> None:
        wait_for(lambda: "serving" in self.log() or self.process.poll() is not None, timeout_s)
        if self.process.poll() is not None:
            raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log()}")

    def logged(self, pattern: str, what: str, timeout_s: float = 30) -> str:
        """The first group of ``pattern`` once the log has it (an address serve prints)."""
        found = wait_for(lambda: re.search(pattern, self.log()), timeout_s, what)
        return str(found.group(1))

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self, timeout_s: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_s)
        self._log.close()
        return code


def children(pid: int, marker: str) -> list[int]:
    """Live (not zombie) child processes of ``pid`` whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone meanwhile
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == pid and state != "Z" and marker in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait_for(check: Callable[[], object], timeout_s: float, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s}s")
        time.sleep(0.02)
