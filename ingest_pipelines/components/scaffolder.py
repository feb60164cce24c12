"""`dg scaffold defs ingest_pipelines.components.IngestWorkflowsComponent <folder>`: a defs.yaml and a starter
ingest.yaml that load as they are (folders only, no AWS account or server needed)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml
from dagster.components.component_scaffolding import scaffold_component

STARTER_HEADER = """\
# A starter ingest.yaml: one sync workflow copying every file of inbox/ to outbox/ (snapshot first, then
# changes: new, changed and deleted files). Turn its sensor on in the Dagster UI (Automation), drop files
# into inbox/, and watch the `{name}/snapshot` and `{name}/changes` assets. Replace the folders with S3
# buckets (type: s3, bucket:, endpoint:, accessKeyID: $VAR ...) as in docs/configuration.md.
# Relative `path:` values resolve against the working directory of the Dagster process, so these are absolute.
"""

STARTER_WORKFLOW = "inbox-to-outbox"


def starter_document(folder: Path) -> dict:
    """The starter ingest.yaml for a component folder (a dict, dumped as YAML by the scaffolder)."""
    return {
        "sources": [{"name": "inbox", "type": "filesystem", "path": str(folder / "inbox")}],
        "destinations": [{"name": "outbox", "type": "filesystem", "path": str(folder / "outbox"), "deletes": True}],
        "workflows": [
            {
                "name": STARTER_WORKFLOW,
                "kind": "sync",
                "source": "inbox",
                "destinations": ["outbox"],
                "interval": "30s",
            }
        ],
    }


class IngestWorkflowsScaffolder(dg.Scaffolder):
    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        scaffold_component(request, {"path": "ingest.yaml"})
        folder = request.target_path.resolve()
        config = folder / "ingest.yaml"
        if config.exists():  # an ingest.yaml already there is the user's: point at it as it is
            return
        (folder / "inbox").mkdir(parents=True, exist_ok=True)
        (folder / "inbox" / "hello.txt").write_text("Copied to outbox/ by the inbox-to-outbox workflow.\n")
        # what the workflow writes beside its config (the copies, the state and its SQLite ledger) is data, not code
        (folder / ".gitignore").write_text("outbox/\n.ingest-state/\n")
        document = starter_document(folder)
        config.write_text(STARTER_HEADER.format(name=STARTER_WORKFLOW.replace("-", "_")) + yaml.safe_dump(document, sort_keys=False))
