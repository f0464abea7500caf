"""Data: manifests of utterances, importers that write them from public corpora."""
