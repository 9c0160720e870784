"""Shards: the webdataset format every stage reads and writes; knows no producer or consumer.

- format.py   sample keys and the per-face metadata schema (DESIGN.md §2)
- index.py    `index.json` (wids-compatible) and resolving any shard spec to URLs
- config.py   InfoConfig / VerifyConfig / SplitConfig / SampleConfig: `shards` subcommand options
- split.py    nested deterministic fractions by hashing (seed, key); `shards split`: methods, key lists on disk
- reader.py   streaming tar readers: keys, chosen members only, raw bytes (no decoding); DamagedShard
- damaged.py  the damaged-shard policy: read up to the damage, name it once, count it, exit 1
- rows.py     index order as row numbers: samples per shard (checked: scan_counts), rank slices, rows streamed
- info.py     `shards info`: counts, sizes, licence/source/query/detector breakdowns from json
- verify.py   `shards verify`: decode every sample, sha256/nsamples vs index, duplicate keys
- contact_sheet.py  `shards sample N`: seeded reservoir sample drawn as a PNG grid
- merge.py    `shards merge-index`: per-part indexes (curate --part K/N) into one index.json
- writer.py   the shard writer: atomic temp+rename shards, groups never split, commit callback, recovery
"""
