"""A change record: one object change as the Conduit S3 destination writes it.

The sync engine builds these from change batches; the record file formats (files.py) encode them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Conduit's operations; `snapshot` is an object read during the initial snapshot.
OPERATIONS = frozenset({"snapshot", "create", "update", "delete"})


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One change of one object. `key` is relative to the source prefix; `payload` is b"" for delete."""

    operation: str
    position: str
    key: str
    metadata: dict[str, str]
    payload: bytes

    def __post_init__(self) -> None:
        # Checked here, where the record is made, so a bad record never reaches a file.
        if self.operation not in OPERATIONS:
            raise ValueError(f"{self.key}: unknown operation {self.operation!r} (expected one of {', '.join(sorted(OPERATIONS))})")
        if self.operation == "delete" and self.payload:
            raise ValueError(f"{self.key}: a delete record has no payload (got {len(self.payload)} bytes)")
