"""Curate: crawl Flickr into a catalog, then download, detect, align and crop faces into shards.

- catalog.py        the SQLite catalog (WAL): photos keyed by id with provenance and status, crawl windows
- crawl.py          the crawler: per-query date-window bisection, own pager, per-page commits, resume
- crawl_windows.py  upload-date windows, how to split them past the 4,000 cap, date parsing
- crawl_rows.py     one search result -> one catalog row (licence and no_cv filters, URL choice)
- flickr.py         flickrapi client, credentials, which failures are fatal / transient
- ratelimit.py      token bucket shared by all threads (calls per hour)
- retry.py          jittered exponential backoff around any flaky call (crawler and downloader)
- config.py         CurateConfig: download / detect / filter / align / shards options
- sources.py        catalog, --from-dir or --from-urls into one ledger; licence URLs
- download.py       thread-pool fetch + decode, ordered and bounded; sniffing, caps, EXIF, sha256
- detect.py         Detector interface (boxes, scores, 5 landmarks); mtcnn and scrfd backends
- filters.py        inter-ocular, yaw, sharpness; the face filters with per-reason counts
- align.py          similarity transform (Umeyama) onto a loose 5-point template, anti-aliased warp
- pipeline.py       curate orchestration: overlap download/detect/write, resume, reconcile, --part
"""
