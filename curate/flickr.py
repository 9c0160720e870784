"""The Flickr API client: credentials, `flickrapi` construction, and what each failure means.

We use the `flickrapi` package as is (`parsed-json`, `store_token=False`, no cache) and only
point its `REST_URL` at another endpoint when asked (the local sandbox, a proxy). Every failure
is sorted into one of three kinds, because the crawler reacts differently to each:

- fatal: nothing will work until a person fixes it (code 100 invalid key, missing credentials)
  -> stop at once, exit code 2;
- transient: try again later (codes 105/201, HTTP 5xx and 429, dropped connections, timeouts,
  a truncated or non-JSON body) -> jittered exponential backoff;
- anything else (a bad parameter, a 4xx): retrying would not help -> the window fails, is
  reported, and the next run tries it again.
"""
from __future__ import annotations

import json
import logging
import re

import flickrapi
import requests
from flickrapi.exceptions import FlickrError

from facesift.common.logsetup import register_secrets

DEFAULT_API_URL = flickrapi.FlickrAPI.REST_URL
KEY_ENV, SECRET_ENV, URL_ENV = "FLICKR_API_KEY", "FLICKR_API_SECRET", "FACESIFT_FLICKR_API_URL"
RETRYABLE_CODES = {105, 201}     # service unavailable / API not currently available
FATAL_CODES = {100}              # invalid API key
_HTTP_STATUS = re.compile(r"Status code (\d+) received")


class CredentialsError(Exception):
    """Missing or refused API credentials: a person has to act (exit code 2)."""


def credentials(key: str | None, secret: str | None) -> tuple[str, str]:
    """Key and secret from the config (already merged with env by the caller) or the env."""
    import os
    key = key or os.environ.get(KEY_ENV)
    secret = secret or os.environ.get(SECRET_ENV)
    missing = [name for name, v in ((KEY_ENV, key), (SECRET_ENV, secret)) if not v]
    if missing:
        raise CredentialsError(
            f"missing Flickr credentials: set {' and '.join(missing)} in the environment or "
            f"api_key/api_secret in the crawl config file (get a key at "
            f"https://www.flickr.com/services/apps/create/)")
    register_secrets([key, secret])
    return key, secret


def make_client(key: str, secret: str, api_url: str | None = None,
                timeout: float = 30.0) -> flickrapi.FlickrAPI:
    """A `flickrapi.FlickrAPI` with its own HTTP session, talking to `api_url`.

    flickrapi keeps one `requests.Session` on the class for every instance; each client gets
    its own here so a thread's connection pool is not shared. Its transport logs the body of
    every non-200 answer at ERROR level, which we classify and retry ourselves: that logger
    is quietened to avoid a page of noise per transient 503.
    """
    client = flickrapi.FlickrAPI(key, secret, format="parsed-json", store_token=False,
                                 cache=False, timeout=timeout)
    if api_url:
        client.REST_URL = api_url  # instance attribute: _flickr_call reads self.REST_URL
    client.flickr_oauth.session = requests.Session()
    client.flickr_oauth.log = logging.getLogger("facesift.curate.flickr.transport")
    logging.getLogger("facesift.curate.flickr.transport").setLevel(logging.CRITICAL)
    return client


def http_status(exc: BaseException) -> int | None:
    """The HTTP status flickrapi folded into a FlickrError message ('Status code 503 received')."""
    if isinstance(exc, FlickrError) and exc.code is None:
        m = _HTTP_STATUS.search(str(exc))
        if m:
            return int(m.group(1))
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code
    return None


def is_fatal(exc: BaseException) -> bool:
    if isinstance(exc, CredentialsError):
        return True
    return isinstance(exc, FlickrError) and exc.code in FATAL_CODES


def is_retryable(exc: BaseException) -> bool:
    """Transient failures worth a backoff and another try."""
    if isinstance(exc, FlickrError):
        if exc.code is not None:
            return exc.code in RETRYABLE_CODES
        status = http_status(exc)
        return status is not None and (status >= 500 or status == 429)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout,
                        requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ContentDecodingError)):
        return True
    # A body cut short or an HTML error page with status 200: JSON decoding fails.
    return isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError))


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a failure for logs and the windows table."""
    if isinstance(exc, FlickrError):
        status = http_status(exc)
        if status is not None:
            return f"HTTP {status}"
        return f"Flickr error {exc.code}: {str(exc).removeprefix('Error: ')}"
    return f"{type(exc).__name__}: {exc}"
