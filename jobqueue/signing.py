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
def _key(secret: str) -> bytes:
    """The HMAC key for ``secret``, derived as Django's ``salted_hmac`` does, once per secret."""
    return hashlib.sha256((SALT + secret).encode()).digest()


def _sign(value: str, secret: str) -> str:
    # hmac.digest: the one-shot C path (no HMAC object); the first LENGTH hex characters.
    return hmac.digest(_key(secret), value.encode(), "sha256")[: LENGTH // 2].hex()


def sign(value: str) -> str:
    return _sign(value, settings.SECRET_KEY)


def verify(value: str, signature: str) -> bool:
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return any(constant_time_compare(_sign(value, secret), signature) for secret in secrets)
