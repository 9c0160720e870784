"""Curate: crawl Flickr into a catalog, then download, detect, align and crop faces into shards.

- catalog.py        the SQLite catalog (WAL): photos keyed by id with provenance and status, crawl windows
- catalog_stats.py  what a catalog holds (by status, licence, query, source, owner; windows): `catalog stats`
- crawl.py          the crawler: per-query date-window bisection, own pager, per-page commits, resume
- crawl_windows.py  upload-date windows, how to split them past the 4,000 cap, date parsing
- crawl_rows.py     one search result -> one catalog row (licence and no_cv filters, URL choice)
- flickr.py         flickrapi client, credentials, which failures are fatal / transient
- ratelimit.py      token bucket shared by all threads (calls per hour)
- retry.py          jittered exponential backoff around any flaky call (crawler and downloader)
- config.py         CurateConfig: download / detect / filter / align / shards options, their ranges; --part
- sources.py        catalog, --from-dir or --from-urls into one ledger; folder ids (path + bytes, key-safe)
- download.py       thread-pool fetch + decode, ordered and bounded; sniffing, caps, EXIF, sha256
- reasons.py        the fixed vocabulary of failure / skip reasons; old error texts → category
- detections.py     Detections (boxes, scores, 5 landmarks) and the Detector interface
- detect.py         the mtcnn and scrfd backends, their CPU parallelism, build_detector / close_detector
- detect_process.py a detector in a process of its own (own GIL), images through shared memory
- filters.py        inter-ocular, yaw, sharpness; the face filters with per-reason counts
- align.py          similarity transform (Umeyama) onto a loose 5-point template, anti-aliased warp
- samples.py        one photo -> its shard samples: aligned, measured, JPEG-encoded faces with provenance
- worklist.py       which photos a run takes: --part slice, pending rows, --retry-failed, known hashes
- recovery.py       after a crash: photos in complete shards but still pending are marked done
- sink.py           the writer thread: shards in input order, every catalog write of the run
- counts.py         RunCounts: what a run did, for its summary line and stats.json
- pipeline.py       the curate run: checks and the output lock first; overlap download/detect/encode/write,
                    resume, stop signals, --part
"""
