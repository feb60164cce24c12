"""`bundle` workflows: Pacifica-style tar bundles (metadata.txt + data/) validated while streamed into an archive.

Bundle format, streamed validation, the archive folder (written once, metadata.json last), the job state
store, attempts and their retries, and the HTTP front door.
"""
