"""The review app: a local web page to hear, fix and re-voice the lines of a built dub.

It reads what the workflow wrote (``work/``, ``out/``) and writes only the workflow's own
inputs (``edits/<name>.<lang>.tsv``, ``edits/<name>.voices.yaml``), then runs Snakemake to
rebuild. This package's top level imports nothing heavy: the rules import
:mod:`dubflow.review.choices` to merge the voice choices into a video's settings.
"""
