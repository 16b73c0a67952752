import pytest
from django.core.exceptions import ImproperlyConfigured

from demo_project.shootr.urlsafety import (
    PrivateAccess,
    URLRefused,
    check_endpoint,
    check_text,
    check_url,
)

pytestmark = pytest.mark.demo


def resolver(*addresses: str):
    return lambda host, port: list(addresses)


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "file:///etc/passwd", "ftp://example.com/", "data:text/html,hi",
    "example.com", "http://", "https:///path", "http://exa mple.com/", "http://example.com:99999/",
])
def test_refuses_what_is_not_a_web_url(url):
    with pytest.raises(URLRefused):
        check_text(url, allow_private=True)


@pytest.mark.parametrize(("url", "kind"), [
    ("http://127.0.0.1/", "loopback"),
    ("http://localhost:8000/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://10.1.2.3/", "private"),
    ("http://192.168.0.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://0.0.0.0/", "is an unspecified address"),
])
def test_form_refuses_private_address_literals(url, kind):
    with pytest.raises(URLRefused, match=kind):
        check_text(url, allow_private=False)


def test_form_leaves_names_to_the_task():
    assert check_text("https://example.com/a?b=c", allow_private=False)


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("10.0.0.7", "private"), ("172.16.5.4", "private"),
    ("169.254.169.254", "cloud metadata"), ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"), ("fd00:ec2::254", "cloud metadata"), ("100.64.0.1", "non-public"),
    ("::ffff:10.0.0.1", "private"),
])
def test_task_refuses_names_that_resolve_to_private_addresses(address, kind):
    with pytest.raises(URLRefused, match=kind):
        check_url("http://intranet.example/", allow_private=False, resolve=resolver(address))


def test_one_private_address_among_public_ones_is_enough_to_refuse():
    with pytest.raises(URLRefused, match="private"):
        check_url("https://mixed.example/", allow_private=False,
                  resolve=resolver("93.184.215.14", "10.0.0.1"))


def test_public_addresses_pass():
    url = "https://example.com/"
    assert check_url(url, allow_private=False, resolve=resolver("93.184.215.14")) == url


def test_unresolvable_host_is_refused_with_the_reason():
    def fail(host, port):
        raise OSError("Name or service not known")

    with pytest.raises(URLRefused, match="cannot resolve"):
        check_url("https://nowhere.invalid/", allow_private=False, resolve=fail)


def test_allow_private_skips_resolution():
    def fail(host, port):
        raise AssertionError("must not resolve")

    assert check_url("http://127.0.0.1:8000/", allow_private=True, resolve=fail)


@pytest.mark.parametrize(("value", "shown"), [
    (True, "all private hosts"), ("yes", "all private hosts"), (False, "no private hosts"),
    ("", "no private hosts"), ("0", "no private hosts"), (None, "no private hosts"),
    ("127.0.0.1:8000, [::1]:8000", "127.0.0.1:8000, [::1]:8000"),
    (["10.0.0.5", "::1"], "10.0.0.5, [::1]"),
])
def test_private_access_setting(value, shown):
    assert str(PrivateAccess.parse(value)) == shown


@pytest.mark.parametrize("value", ["127.0.0.1:http", "intranet:80", ["10.0.0.0/8"], 3])
def test_a_bad_private_access_setting_is_named(value):
    with pytest.raises(ImproperlyConfigured, match="SHOOTR_ALLOW_PRIVATE_HOSTS"):
        PrivateAccess.parse(value)


def test_an_allowed_endpoint_opens_that_address_and_port_only():
    access = PrivateAccess.parse("127.0.0.1:8000")
    assert check_text("http://127.0.0.1:8000/", allow_private=access)
    assert check_endpoint("127.0.0.1", 8000, allow_private=access) == ["127.0.0.1"]
    for host, port in (("127.0.0.1", 8001), ("127.0.0.2", 8000), ("0.0.0.0", 8000)):
        with pytest.raises(URLRefused):
            check_endpoint(host, port, allow_private=access, resolve=resolver(host))
    with pytest.raises(URLRefused, match="loopback"):
        check_text("http://127.0.0.1:8001/", allow_private=access)


def test_every_address_of_a_name_is_checked_at_the_proxy():
    with pytest.raises(URLRefused, match="private"):
        check_endpoint("mixed.example", 443, allow_private=False,
                       resolve=resolver("93.184.215.14", "10.0.0.1"))
    assert check_endpoint("example.com", 443, allow_private=False,
                          resolve=resolver("93.184.215.14")) == ["93.184.215.14"]


@pytest.mark.parametrize("address", ["0.1.2.3", "::", "fc00::1", "::ffff:192.168.1.1",
                                     "64:ff9b::a00:1", "2002:a00:1::1"])
def test_unspecified_and_ipv6_private_ranges_are_refused(address):
    with pytest.raises(URLRefused):
        check_endpoint("x.example", 80, allow_private=False, resolve=resolver(address))
