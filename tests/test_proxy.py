"""Behind a reverse proxy (TRUST_PROXY): a real proxy process on loopback in front of a real `python wsgi.py`, so
sign-in limits count per client address and cookies are Secure when the client came over https."""

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from config import ConfigError, load_settings
from tests import relays
from tests.stack import CSRF_TOKEN, MODEL_PATHS

PASSWORD = "a long password"
CLIENT = "X-Test-Client"  # the proxy's client address, as the test says it is for each request


class Forwarder(relays.Forwarder):
    """What nginx's `proxy_pass` does with the snippet in docs/deployment.md: the request goes on to the web process
    with X-Forwarded-For (the client), X-Forwarded-Proto (https: TLS ended here) and X-Forwarded-Host."""

    def upstream_headers(self) -> dict[str, str]:
        headers = {name: value for name, value in super().upstream_headers().items() if name != CLIENT}
        headers.update({"X-Forwarded-For": self.headers[CLIENT], "X-Forwarded-Proto": "https",
                        "X-Forwarded-Host": self.headers["Host"]})
        return headers


@pytest.fixture
def proxy(stack):
    """The address of a proxy in front of the stack's web process (which the test starts), and TRUST_PROXY on."""
    stack.env["TRUST_PROXY"] = "1"
    with relays.relay(stack.url, Forwarder) as url:
        yield url


def login_form(proxy: str, client: str) -> tuple[str, str, str]:
    """The login page through the proxy: its session cookie (as Set-Cookie said it), the cookie to send back, and
    the form's CSRF token."""
    page = requests.get(proxy + "/login", headers={CLIENT: client}, timeout=10)
    set_cookie = page.headers["Set-Cookie"]
    return set_cookie, set_cookie.split(";")[0], CSRF_TOKEN.search(page.text).group(1)


def sign_in(proxy: str, client: str, name: str, password: str) -> int:
    """A sign-in through the proxy from `client`; the status it got. The cookie goes back by hand: it is Secure,
    which a browser sends over https only, and this proxy is plain http."""
    _, cookie, token = login_form(proxy, client)
    referer = proxy.replace("http:", "https:") + "/login"  # over https, the CSRF check wants the same origin
    return requests.post(proxy + "/login", headers={CLIENT: client, "Cookie": cookie, "Referer": referer},
                         data={"name": name, "password": password, "csrf_token": token}, allow_redirects=False,
                         timeout=30).status_code


def test_sign_in_limits_count_per_client_behind_the_proxy(stack, proxy):
    stack.env["LOGIN_ATTEMPTS"] = "100"  # guesses at one name: only the per-address limit applies
    stack.start_web()
    stack.user("carol", password=PASSWORD)
    attempts = stack.app.settings.login_attempts_per_address
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: sign_in(proxy, "203.0.113.7", "carol", "wrong"), range(attempts)))
    assert statuses == [200] * attempts  # the form again, saying the name or password is wrong
    assert sign_in(proxy, "203.0.113.7", "carol", PASSWORD) == 429  # that address is locked out
    assert sign_in(proxy, "198.51.100.20", "carol", PASSWORD) == 302  # another client is not


def test_cookies_are_secure_when_the_client_came_over_https(stack, proxy):
    stack.start_web()
    set_cookie, _, _ = login_form(proxy, "203.0.113.7")
    assert re.search(r";\s*Secure", set_cookie), set_cookie


def test_the_proxy_headers_taken_are_checked_at_start():
    environ = {"SECRET_KEY": "x", **MODEL_PATHS, "TRUST_PROXY": "1"}
    assert load_settings({**environ, "TRUSTED_PROXY_HEADERS": "X-Forwarded-For, X-Forwarded-Proto"}
                         ).trusted_proxy_headers == ["x-forwarded-for", "x-forwarded-proto"]
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_HEADERS.*'forwarded' is taken alone"):
        load_settings({**environ, "TRUSTED_PROXY_HEADERS": "X-Forwarded-For,Forwarded"})
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_HEADERS.*x-real-ip"):
        load_settings({**environ, "TRUSTED_PROXY_HEADERS": "X-Real-IP"})
