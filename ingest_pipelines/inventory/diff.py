"""Compare a report with the previous one of its series: new and changed objects are candidates,
unchanged ones are left alone, deleted ones counted. Columnar (one Arrow hash lookup), no per-row Python."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest_pipelines.inventory.manifest import ReportRef
from ingest_pipelines.inventory.tags import IMAGE_KEY_PATTERN
from ingest_pipelines.state import StateStore

#: what is kept of a report for the next day's diff.
SNAPSHOT_COLUMNS = ["key", "fingerprint"]


@dataclass
class InventoryDiff:
    #: new or changed image objects: key, version_id, etag, size
    candidates: pa.Table
    new: int
    changed: int
    unchanged: int
    deleted: int
    #: new or changed objects that are not .png/.jpg/.jpeg
    not_images: int


def diff_reports(current: pa.Table, previous: pa.Table | None) -> InventoryDiff:
    """`current`: ROW_SCHEMA rows of this report; `previous`: SNAPSHOT_COLUMNS of the last one (None: first).

    One hash lookup of every current key in the previous key set (`index_in`), then the previous
    fingerprint is taken by position and compared: new = no match, changed = other fingerprint.
    Keys are unique within a report (non-current versions were dropped), so deleted = previous - matched.
    """
    if previous is None or previous.num_rows == 0:
        changed_mask = None
        new = current.num_rows
        deleted = 0
    else:
        position = pc.index_in(current.column("key"), value_set=previous.column("key").combine_chunks())
        previous_fingerprint = pc.take(previous.column("fingerprint"), position)
        changed_mask = pc.fill_null(pc.not_equal(previous_fingerprint, current.column("fingerprint")), True)
        new = position.null_count
        deleted = previous.num_rows - (current.num_rows - new)
    changed_rows = current if changed_mask is None else current.filter(changed_mask)
    is_image = pc.match_substring_regex(changed_rows.column("key"), IMAGE_KEY_PATTERN)
    # sorted candidates make the Batch manifest and the results report deterministic
    candidates = changed_rows.filter(is_image).select(["key", "version_id", "etag", "size"]).sort_by("key")
    return InventoryDiff(
        candidates=candidates,
        new=new,
        changed=changed_rows.num_rows - new,
        unchanged=current.num_rows - changed_rows.num_rows,
        deleted=deleted,
        not_images=changed_rows.num_rows - candidates.num_rows,
    )


class ReportSnapshots:
    """Each processed report's key set as Parquet in the state store, so day 2 diffs against day 1:
    `{workflow}/inventory/snapshots/{source-bucket}/{config-id}/{timestamp}.parquet`."""

    def __init__(self, state: StateStore, workflow: str):
        self.state = state
        self.base = f"{workflow}/inventory/snapshots/"

    def _key(self, ref: ReportRef) -> str:
        return f"{self.base}{ref.series}/{ref.timestamp}.parquet"

    def previous(self, ref: ReportRef) -> str | None:
        """The timestamp of the latest snapshot of the series older than `ref` (backfills diff against
        the day before them, not against the newest report)."""
        older = [
            key.rsplit("/", 1)[1].removesuffix(".parquet")
            for key in self.state.keys(f"{self.base}{ref.series}/")
            if key.endswith(".parquet")
        ]
        older = [stamp for stamp in older if stamp < ref.timestamp]
        return max(older) if older else None

    def load(self, ref: ReportRef, timestamp: str) -> pa.Table:
        key = f"{self.base}{ref.series}/{timestamp}.parquet"
        with tempfile.TemporaryDirectory(prefix="inventory-snapshot-") as tmp:
            path = Path(tmp, "snapshot.parquet")
            with self.state.store.open(key) as body, path.open("wb") as handle:
                while chunk := body.read(1024 * 1024):
                    handle.write(chunk)
            return pq.read_table(path, columns=SNAPSHOT_COLUMNS)

    @staticmethod
    def write(current: pa.Table, path: Path) -> None:
        """The report's snapshot as a local file (written right after the diff, so the report can be freed)."""
        pq.write_table(current.select(SNAPSHOT_COLUMNS), path, compression="zstd")

    def upload(self, ref: ReportRef, path: Path) -> str:
        key = self._key(ref)
        with path.open("rb") as handle:
            self.state.store.upload_fileobj(key, handle)
        return key

    def save(self, ref: ReportRef, current: pa.Table) -> str:
        with tempfile.TemporaryDirectory(prefix="inventory-snapshot-") as tmp:
            path = Path(tmp, "snapshot.parquet")
            self.write(current, path)
            return self.upload(ref, path)
