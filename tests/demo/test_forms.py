import pytest

from demo_project.shootr.forms import MAX_URLS, BundleForm

pytestmark = pytest.mark.demo


def errors(text: str) -> list[str]:
    form = BundleForm({"urls": text})
    assert not form.is_valid()
    return form.errors["urls"]


def test_accepts_one_url_per_line_and_ignores_blank_lines(allow_private):
    form = BundleForm({"urls": "https://example.com/\n\n  http://127.0.0.1:8000/x  \n"})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["urls"] == ["https://example.com/", "http://127.0.0.1:8000/x"]


@pytest.mark.parametrize("text", ["", "   \n \n"])
def test_blank_input_is_refused(text):
    assert errors(text) == ["Enter at least one URL."]


def test_too_many_urls_are_refused():
    text = "\n".join(f"https://example.com/{i}" for i in range(MAX_URLS + 1))
    assert errors(text) == [f"At most {MAX_URLS} URLs per bundle; you entered {MAX_URLS + 1}."]


def test_every_bad_line_is_named(allow_private):
    found = errors("https://example.com/\njavascript:alert(1)\nfile:///etc/passwd")
    assert found == [
        "Line 2: 'javascript:' is not allowed: only http:// and https:// URLs are.",
        "Line 3: 'file:' is not allowed: only http:// and https:// URLs are.",
    ]


def test_private_hosts_are_refused_unless_allowed(forbid_private):
    assert "loopback" in errors("http://127.0.0.1:8000/")[0]
