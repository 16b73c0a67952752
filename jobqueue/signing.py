"""Message signatures: whoever can write to Redis still cannot make a worker run what they like.

A message body is signed with an HMAC whose key derives from ``SECRET_KEY``; signatures made with a
key in ``SECRET_KEY_FALLBACKS`` still verify, so keys can be rotated without losing queued jobs.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from django.conf import settings
from django.utils.crypto import constant_time_compare

SALT = "jobqueue.message"
LENGTH = 32  # hex characters: 128 bits of the SHA-256 HMAC


@lru_cache(maxsize=8)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC already keyed for ``secret`` (the key derived as Django's ``salted_hmac`` does),
    once per secret: each signature copies it instead of keying a new one."""
    return hmac.new(hashlib.sha256((SALT + secret).encode()).digest(), digestmod=hashlib.sha256)


def _sign(value: str, secret: str) -> str:
    mac = _keyed(secret).copy()  # the cached one is never updated, so threads may share it
    mac.update(value.encode())
    return mac.hexdigest()[:LENGTH]


def sign(value: str) -> str:
    return _sign(value, settings.SECRET_KEY)


def verify(value: str, signature: str) -> bool:
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return any(constant_time_compare(_sign(value, secret), signature) for secret in secrets)
