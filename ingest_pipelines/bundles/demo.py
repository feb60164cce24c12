"""Demo data for `bundle` workflows: a drop bucket holding a good sample bundle and an empty archive bucket.

The drop sensor runs from the start, so the sample is ingested within a tick of `dagster dev` coming up.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Any

SAMPLE_FILES = {
    "mywork/project/proposal.doc": b"Proposal 1234: measure everything twice.\n",
    "mywork/experiment/results.csv": b"sample,value\n1,0.5\n2,0.7\n",
    "mywork/experiment/results.doc": b"The values went up.\n",
}


def sample_bundle(files: dict[str, bytes] = SAMPLE_FILES) -> bytes:
    """A Pacifica bundle: data/ files then metadata.txt (as `tar -tf mybundle.tar` shows it)."""
    entries: list[dict[str, Any]] = [{"destinationTable": "Transactions.proposal", "value": "1234"}]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for index, (path, data) in enumerate(files.items()):
            info = tarfile.TarInfo(f"data/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            subdir, _, name = path.rpartition("/")
            entries.append(
                {
                    "destinationTable": "Files",
                    "_id": index + 1,
                    "name": name,
                    "subdir": subdir,
                    "size": len(data),
                    "hashsum": hashlib.sha1(data).hexdigest(),
                    "hashtype": "sha1",
                }
            )
        meta = json.dumps(entries, indent=2).encode()
        info = tarfile.TarInfo("metadata.txt")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return buffer.getvalue()


def seed(ctx: Any) -> dict[str, list[dict[str, Any]]]:
    source = ctx.s3_source("bundle-drop", "bundle-drop", "incoming/")
    destination = ctx.s3_source("bundle-archive", "bundle-archive", "archive/")
    ctx.s3.put_object(Bucket="bundle-drop", Key="incoming/sample.tar", Body=sample_bundle())
    workflow = {
        "name": "pacifica-bundles",
        "kind": "bundle",
        "source": "bundle-drop",
        "destinations": ["bundle-archive"],
        "interval": "30s",
        "sensor": "running",
    }
    return {"sources": [source], "destinations": [destination], "workflows": [workflow]}
