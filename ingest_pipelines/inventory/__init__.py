"""`inventory` workflows: S3 Inventory reports -> diff -> tag filter -> throttled indexing gateway (AWS bulk loader).

Pure Python (no Dagster): manifest, reader, diff, batch_manifest, tags, gateway, history, importer.
"""
