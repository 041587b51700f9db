"""Objects as files under a root folder (the default: the data dir)."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import tempfile
from pathlib import Path

from .base import check_key, check_prefix
from .errors import ObjectNotFound, StorageFull, StorageUnavailable

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class FileStore:
    """Each key is a file below ``root``. Writes go to a temporary file renamed into place."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        await asyncio.to_thread(self._put, self._path(key), bytes(data))

    def _put(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            kind = StorageFull if exc.errno in _FULL else StorageUnavailable
            raise kind(f"Cannot write {path.name}: {exc.strerror or exc}") from exc

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"No object at {key!r}.") from None
        except OSError as exc:
            raise StorageUnavailable(f"Cannot read {key!r}: {exc.strerror or exc}") from exc

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except IsADirectoryError:
            pass
        except OSError as exc:
            raise StorageUnavailable(f"Cannot delete {key!r}: {exc.strerror or exc}") from exc

    async def delete_prefix(self, prefix: str) -> int:
        folder = self.root.joinpath(*check_prefix(prefix)[:-1].split("/"))
        return await asyncio.to_thread(self._delete_tree, folder)

    @staticmethod
    def _delete_tree(folder: Path) -> int:
        if not folder.is_dir():
            return 0
        count = sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageUnavailable(f"Cannot delete {folder.name}/: {exc.strerror or exc}") from exc
        return count

    async def free_bytes(self) -> int | None:
        try:
            return await asyncio.to_thread(free_bytes_at, self.root)
        except OSError as exc:
            raise StorageUnavailable(f"Cannot stat the storage folder: {exc.strerror or exc}") from exc

    async def close(self) -> None:
        pass


def free_bytes_at(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the disk holding ``path`` (or, if absent, its nearest parent)."""
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize
