"""The home page's form: a list of URLs, refused as a whole when any line is not acceptable."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from demo_project.shootr.urlsafety import URLRefused, check_text, private_access

MAX_URLS = 20


class BundleForm(forms.Form):
    urls = forms.CharField(
        label="Web pages, one URL per line",
        widget=forms.Textarea(attrs={
            "rows": 6,
            "placeholder": "https://www.djangoproject.com/\nhttps://docs.python.org/3/",
            "spellcheck": "false",
            "autocomplete": "off",
        }),
        max_length=MAX_URLS * 2100,
        error_messages={"required": "Enter at least one URL."},
    )

    def clean_urls(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["urls"].splitlines()]
        count = sum(1 for line in lines if line)
        if count == 0:
            raise ValidationError("Enter at least one URL.", code="required")
        if count > MAX_URLS:
            raise ValidationError(
                f"At most {MAX_URLS} URLs per bundle; you entered {count}.", code="too_many"
            )
        allow_private = private_access()
        urls: list[str] = []
        errors: list[ValidationError] = []
        for number, line in enumerate(lines, start=1):
            if not line:
                continue
            try:
                urls.append(check_text(line, allow_private=allow_private))
            except URLRefused as exc:
                errors.append(ValidationError(f"Line {number}: {exc}", code="refused"))
        if errors:
            raise ValidationError(errors)
        return urls
