"""FileStore: uploaded and generated files, contents on disk under a directory the server owns."""
from __future__ import annotations

import itertools
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from services.sandbox import ids
from services.sandbox.errors import not_found
from services.sandbox.listing import cursor_page

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
EXPIRING_PURPOSES = ("batch", "batch_output")
BATCH_FILE_LIMIT = 200 * 1024 * 1024
FILE_TTL_SECONDS = 30 * 24 * 3600


@dataclass
class FileRecord:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    path: str
    seq: int

    def to_api(self) -> dict[str, Any]:
        expires = self.created_at + FILE_TTL_SECONDS if self.purpose in EXPIRING_PURPOSES else None
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "expires_at": expires, "filename": self.filename, "purpose": self.purpose,
                "status": "processed", "status_details": None}


class FileStore:
    def __init__(self, root: str):
        self.root = root
        self.staging = os.path.join(root, "staging")
        os.makedirs(self.staging, exist_ok=True)
        self._files: dict[str, FileRecord] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count()

    def staging_file(self) -> IO[bytes]:
        """A new writable file in the staging area; ``add`` later moves it into the store."""
        return tempfile.NamedTemporaryFile(dir=self.staging, prefix="part-", delete=False)

    def add(self, staged_path: str, filename: str, purpose: str) -> FileRecord:
        file_id = ids.file_id()
        path = os.path.join(self.root, file_id)
        os.replace(staged_path, path)
        record = FileRecord(file_id, filename, purpose, os.path.getsize(path), int(time.time()), path, next(self._seq))
        with self._lock:
            self._files[file_id] = record
        return record

    def get(self, file_id: str) -> FileRecord:
        with self._lock:
            record = self._files.get(file_id)
        if record is None:
            raise not_found("file", file_id)
        return record

    def delete(self, file_id: str) -> FileRecord:
        with self._lock:
            record = self._files.pop(file_id, None)
        if record is None:
            raise not_found("file", file_id)
        _unlink(record.path)
        return record

    def page(self, *, purpose: str | None, order: str, limit: int, after: str | None) -> dict[str, Any]:
        with self._lock:
            records = sorted(self._files.values(), key=lambda r: r.seq, reverse=(order == "desc"))
        if purpose:
            records = [r for r in records if r.purpose == purpose]
        return cursor_page(records, FileRecord.to_api, limit=limit, after=after, key=lambda r: r.id)

    def clear(self) -> None:
        with self._lock:
            records, self._files = list(self._files.values()), {}
        for record in records:
            _unlink(record.path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
