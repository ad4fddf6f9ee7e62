"""``dir://`` object notifications: a local directory watched, its files reported as S3 events.

A new or changed file is reported as ``ObjectCreated:Put`` once it is
complete: its size and mtime held still for the notification's ``settle``
(default 1s), so a file still being written is reported once, after its last
write. (A writer that pauses longer than ``settle`` mid-file looks done; the
safe pattern is to write a hidden ``.name`` and rename it, as rsync does:
names starting with ``.`` are ignored.) A removed file that had been
reported is reported as ``ObjectRemoved:Delete``.

Restarts: every reported file's path, size and mtime are kept in the store
(``object_files``) once its invocation is enqueued; at start the directory
is compared with them, so files already reported are not reported again,
and files changed or removed meanwhile are. The idempotency key is made of
the path, size and mtime, so a crash between enqueue and that record makes
no second invocation.

watchfiles (inotify on Linux, through Rust's notify crate) says which paths
changed; every ``settle / 4`` the changed paths are looked at again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from broker.config.notifications import ObjectNotificationConfig
from broker.errors import ConfigError, UsageError
from broker.events.s3 import S3Record, encode_key, lambda_event, object_key
from broker.ids import new_id
from broker.models import NewInvocation, Origin
from broker.sources.pollers import PollerContext
from broker.store.object_files import SeenFile, forget_seen, record_seen, seen_files

try:
    from watchfiles import awatch
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "dir:// object notifications need watchfiles: pip install 'eventwire[notifications]'"
    ) from None

log = logging.getLogger("eventwire.notifications")

PUT = "s3:ObjectCreated:Put"
DELETE = "s3:ObjectRemoved:Delete"


@dataclass
class _Watch:
    """The state of one ``dir://`` notification."""

    config: ObjectNotificationConfig
    root: Path
    seen: dict[str, SeenFile]
    # path -> (size, mtime_ns) last observed, monotonic time it was first observed so
    pending: dict[str, tuple[tuple[int, int] | None, float]]


class DirectoryWatcher:
    """Every ``dir://`` notification of the configuration, in one poller."""

    name = "object-notifications-dir"

    def __init__(self, context: PollerContext, notifications: list[ObjectNotificationConfig]):
        self.context = context
        self.engine = context.engine
        self.queue = context.queue
        self.region = context.settings.region
        self.watches = [_Watch(n, Path(n.directory), {}, {}) for n in notifications]
        self.tick_s = min(n.settle_s for n in notifications) / 4 if notifications else 0.25
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        for watch in self.watches:
            if not watch.root.is_dir():
                raise UsageError(
                    f"object notification {watch.config.name}: {watch.root} is not a directory"
                )
            watch.seen = await seen_files(self.engine, watch.config.name)
            log.info(
                "object notifications: %s: watching %s (%d files reported before)",
                watch.config.name,
                watch.root,
                len(watch.seen),
            )

    async def run(self) -> None:
        if not self.watches:
            return
        roots = {str(watch.root): watch for watch in self.watches}
        scanned = False
        async for changes in awatch(
            *roots,
            watch_filter=None,
            debounce=max(int(self.tick_s * 1000), 50),
            rust_timeout=max(int(self.tick_s * 1000), 50),
            yield_on_timeout=True,
            stop_event=self._stop,
            ignore_permission_denied=True,
        ):
            if not scanned:  # the watcher is live now: nothing falls between scan and watch
                for watch in self.watches:
                    await asyncio.to_thread(self._scan, watch)
                scanned = True
            paths = [path for _, path in changes]
            for owner, relative in await asyncio.to_thread(_changed_keys, roots, paths):
                owner.pending.setdefault(relative, (None, 0.0))
            for watch in self.watches:
                await self._settle(watch)

    def _scan(self, watch: _Watch) -> None:
        """At start: every file not reported as it is now, and every reported file gone."""
        present: set[str] = set()
        for folder, dirs, files in os.walk(watch.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                relative = _relative(watch.root, os.path.join(folder, name))
                if relative is None:
                    continue
                present.add(relative)
                seen = watch.seen.get(relative)
                now = _stat(watch.root / relative)
                if seen is None or now != (seen.size, seen.mtime_ns):
                    watch.pending.setdefault(relative, (None, 0.0))
        for gone in set(watch.seen) - present:
            watch.pending.setdefault(gone, (None, 0.0))

    async def _settle(self, watch: _Watch) -> None:
        """Report what held still for ``settle``; keep watching the rest."""
        clock = asyncio.get_running_loop().time()
        for relative, (observed, since) in list(watch.pending.items()):
            current = _stat(watch.root / relative)
            if current is None:
                del watch.pending[relative]
                if relative in watch.seen:
                    await self._removed(watch, relative)
                continue
            if current != observed:
                watch.pending[relative] = (current, clock)
                continue
            if clock - since < watch.config.settle_s:
                continue
            del watch.pending[relative]
            seen = watch.seen.get(relative)
            if seen is None or (seen.size, seen.mtime_ns) != current:
                await self._created(watch, relative, *current)

    async def _created(self, watch: _Watch, relative: str, size: int, mtime_ns: int) -> None:
        try:
            etag = await asyncio.to_thread(_md5, watch.root / relative)
        except OSError as exc:  # removed or unreadable meanwhile: looked at again if it changes
            log.warning(
                "object notifications: %s: cannot read %s (%s)", watch.config.name, relative, exc
            )
            return
        file = SeenFile(relative, size, mtime_ns, etag)
        record = S3Record(
            event_name=PUT,
            bucket=watch.config.bucket_name,
            key=encode_key(relative),
            size=size,
            etag=etag,
            sequencer=f"{mtime_ns:016X}",
            event_time=_iso(mtime_ns),
        )
        if await self._enqueue(watch, record, f"{size}:{mtime_ns}"):
            await record_seen(self.engine, watch.config.name, file, datetime.now(UTC))
            watch.seen[relative] = file

    async def _removed(self, watch: _Watch, relative: str) -> None:
        last = watch.seen[relative]
        now_ns = max(datetime.now(UTC).timestamp() * 1e9, last.mtime_ns + 1)
        record = S3Record(
            event_name=DELETE,
            bucket=watch.config.bucket_name,
            key=encode_key(relative),
            sequencer=f"{int(now_ns):016X}",
            event_time=_iso(int(now_ns)),
        )
        if await self._enqueue(watch, record, f"{last.size}:{last.mtime_ns}"):
            await forget_seen(self.engine, watch.config.name, relative)
            del watch.seen[relative]

    async def _enqueue(self, watch: _Watch, record: S3Record, version: str) -> bool:
        config = watch.config
        if not config.filter.matches(record):
            return True  # filtered out: remembered all the same, so it is not looked at again
        event = lambda_event(record, region=self.region)
        invocation = NewInvocation(
            id=new_id(),
            function=config.function,
            payload=json.dumps(event, separators=(",", ":")).encode(),
            origin=Origin.OBJECT_NOTIFICATION,
            idempotency_key=object_key(
                config.name, record.bucket, record.key, record.event_name, version
            ),
            source={
                "notification": config.name,
                "event": record.event_name,
                "bucket": record.bucket,
                "key": record.key,
            },
        )
        try:
            [answer] = await self.queue.enqueue([invocation])
        except Exception as exc:
            log.warning(
                "object notifications: %s: could not enqueue %s (%s); trying again",
                config.name,
                record.key,
                exc,
            )
            watch.pending.setdefault(record.decoded_key, (None, 0.0))
            return False
        log.info(
            "object notifications: %s: %s %s → %s%s",
            config.name,
            record.event_name.removeprefix("s3:"),
            record.key,
            config.function,
            "" if answer.created else " (already enqueued)",
        )
        return True


def _owner(roots: dict[str, _Watch], path: str) -> _Watch | None:
    for root, watch in roots.items():
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return watch
    return None


def _relative(root: Path, path: str) -> str | None:
    """The object key of ``path``: relative, with '/'; None for hidden names."""
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        return None
    if not parts or any(part.startswith(".") for part in parts):
        return None
    return "/".join(parts)


def _changed_keys(roots: dict[str, _Watch], paths: list[str]) -> list[tuple[_Watch, str]]:
    """The object keys the changed ``paths`` stand for, with their watch.

    A changed folder stands for the files below it: files written into a new
    folder before the watcher watched it have no event of their own.
    """
    keys = []
    for path in paths:
        owner = _owner(roots, path)
        relative = _relative(owner.root, path) if owner is not None else None
        if owner is None or relative is None:
            continue
        if os.path.isdir(path):
            keys += [(owner, inside) for inside in _files_under(owner.root, path)]
        else:
            keys.append((owner, relative))
    return keys


def _files_under(root: Path, folder: str) -> list[str]:
    """The object keys of the files below ``folder``, hidden ones left out."""
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            relative = _relative(root, os.path.join(parent, name))
            if relative is not None:
                found.append(relative)
    return found


def _stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a regular file; None when it is not one (or is gone)."""
    try:
        info = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return info.st_size, info.st_mtime_ns


def _md5(path: Path) -> str:
    """S3's eTag of a single-part upload: the MD5 of the content."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _iso(ns: int) -> str:
    moment = datetime.fromtimestamp(ns / 1e9, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def create(context: PollerContext) -> DirectoryWatcher:
    notifications = [n for n in context.config.object_notifications if not n.is_webhook]
    return DirectoryWatcher(context, notifications)
