"""Shards: the webdataset format every stage reads and writes; knows no producer or consumer.

- format.py   sample keys and the per-face metadata schema (DESIGN.md §2)
- index.py    `index.json` (wids-compatible) and resolving any shard spec to URLs
- split.py    nested deterministic fractions by hashing (seed, key)
"""
