"""`bundle` workflows: Pacifica-style tar bundles (metadata.txt + data/) validated while streamed into an archive.

Bundle format, streamed validation, staging and promotion, the job state store and the HTTP front door.
"""
