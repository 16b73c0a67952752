"""Message signatures: whoever can write to Redis still cannot make a worker run what they like.

A message body is signed with an HMAC whose key derives from ``SECRET_KEY``; signatures made with a
key in ``SECRET_KEY_FALLBACKS`` still verify, so keys can be rotated without losing queued jobs.
"""

from __future__ import annotations

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

SALT = "jobqueue.message"
LENGTH = 32  # hex characters: 128 bits of the SHA-256 HMAC


def sign(value: str) -> str:
    return salted_hmac(SALT, value, algorithm="sha256").hexdigest()[:LENGTH]


def verify(value: str, signature: str) -> bool:
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return any(
        constant_time_compare(
            salted_hmac(SALT, value, secret=secret, algorithm="sha256").hexdigest()[:LENGTH],
            signature,
        )
        for secret in secrets
    )
