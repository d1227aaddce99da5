"""Every page at a phone's, a tablet's and a laptop's width, light and dark: nothing wider than the window (a wide
table scrolls inside its own box) and no serious or critical accessibility violation that axe-core finds.

axe-core is an npm devDependency (`make setup` installs it; it is never served): the test evaluates it in each page
over the DevTools protocol, which the pages' Content-Security-Policy (`script-src 'self'`) does not apply to."""

import shutil

import pytest
import requests

from config import ROOT
from tests.stack import MODEL_PATHS, Stack, start_redis

from .browser import create_user, sign_in
from .test_ui_browser import finish_job_with

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
WIDTHS = (375, 768, 1280)
LAPTOP = 1280  # from here on, a table shows every column without scrolling
FITS = "box => box.scrollWidth <= box.clientWidth"
SCHEMES = ("light", "dark")
SIGNED_OUT = {"login": "/login"}
SIGNED_IN = {
    "conversations": "/conversations",
    "new chat": "/conversations/new",
    "chat": "/conversations/{chat}",
    "delete": "/conversations/{chat}/delete",
    "jobs": "/jobs",
    "queue": "/queue",
    "job": "/jobs/{job}",
    "batches": "/batches",
    "templates": "/prompt-templates",
    "template": "/prompt-templates/tutor?version=1",
    "keys": "/keys",
    "account": "/account",
    "not found": "/conversations/nothing-here",
}
PAGES = {**SIGNED_OUT, **SIGNED_IN}
# A finished answer with what Markdown can draw, some of it wider than a phone.
ANSWER = """## A river

Water that **flows** downhill, e.g. <https://example.com/a/rather/long/address/that/does/not/break/by/itself/at/all>:

1. a source
2. a mouth

| name | length | countries | source | mouth | discharge | basin | tributaries |
|---|---|---|---|---|---|---|---|
| Danube | 2850 km | ten | Black Forest | Black Sea | 6500 m³/s | 801463 km² | Inn, Drava, Tisza, Sava |

```python
rivers = {"Danube": 2850, "Rhine": 1233, "Elbe": 1094, "Loire": 1006, "Vistula": 1047, "Tagus": 1007}
```

> Panta rhei."""


@pytest.fixture(scope="module")
def axe() -> str:
    if not AXE.exists():  # fail, never skip: `make setup` installs it with htmx
        pytest.fail(f"{AXE.relative_to(ROOT)} is missing: run 'npm install --no-audit --no-fund' (make setup does)")
    return AXE.read_text()


@pytest.fixture(scope="module")
def site(tmp_path_factory, migrated_sqlite):
    """One stack for every page: a web process, and no worker."""
    folder = tmp_path_factory.mktemp("looks")
    redis, socket = start_redis(folder)
    (folder / "instance").mkdir()
    shutil.copyfile(migrated_sqlite, folder / "instance" / "llamalith.db")
    stack = Stack({"LLAMALITH_INSTANCE": str(folder / "instance"), "REDIS_URL": f"unix://{socket}",
                   "SECRET_KEY": "looks", **MODEL_PATHS}, folder)
    try:
        create_user(stack)
        stack.start_web()
        yield stack
    finally:
        stack.stop()
        redis.terminate()
        redis.wait()


@pytest.fixture(scope="module")
def paths(site) -> dict[str, str]:
    ids = fill(site)
    return {name: path.format(**ids) for name, path in PAGES.items()}


def fill(stack: Stack) -> dict[str, str]:
    """A template with two versions; a conversation answered through it; a stopped job, a failed one, another
    user's, and a cancelled batch. The ids the paths name."""
    for text in ("You teach {{subject}}.", "You teach {{subject}} to {{audience}}. Be brief."):
        api(stack, "/api/prompt-templates", {"name": "tutor", "text": text})
    answered = stack.submit(user_input="What is a river?", session_id="looks", prompt_template="tutor",
                            variables={"subject": "geography", "audience": "children"})
    finish_job_with(stack, answered["job_id"], ANSWER)
    stopped = stack.submit(user_input="Tell me a very long story.", session_id="story")
    api(stack, f"/api/jobs/{stopped['job_id']}/cancel")
    failed = stack.submit(user_input="Something impossible, asked at length: " + "why? " * 40, session_id="failed")
    stack.query("UPDATE jobs SET status = 'error', error = 'The model could not be loaded.', "
                "error_code = 'model_error', processed_at = CURRENT_TIMESTAMP WHERE id = :id", id=failed["job_id"])
    bob = stack.user("bartholomew-from-accounting")
    theirs = requests.post(stack.url + "/api/submit", headers=bob, timeout=10,
                           json={"user_input": "Bob's question", "session_id": "bobs"}).json()
    api(stack, f"/api/jobs/{theirs['job_id']}/cancel", headers=bob)
    cancelled_batch(stack)
    [(chat,)] = stack.query("SELECT conversation_id FROM jobs WHERE id = :id", id=answered["job_id"])
    return {"chat": chat, "job": answered["job_id"]}


def cancelled_batch(stack: Stack) -> None:
    lines = ('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "%s", '
             '"messages": [{"role": "user", "content": "Hi"}]}}\n' % stack.app.settings.default_model)
    uploaded = requests.post(stack.url + "/v1/files", headers=stack.headers, timeout=30,
                             files={"file": ("rows.jsonl", lines.encode())}, data={"purpose": "batch"}).json()
    batch = api(stack, "/v1/batches", {"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                                       "completion_window": "24h", "metadata": {"project": "looks"}})
    api(stack, f"/v1/batches/{batch['id']}/cancel")


def api(stack: Stack, path: str, body: dict | None = None, headers: dict | None = None) -> dict:
    answer = requests.post(stack.url + path, json=body or {}, headers=headers or stack.headers, timeout=30)
    assert answer.ok, answer.text
    return answer.json()


class Viewer:
    """One browser context at a time, for one width, scheme and signed-in state: the parameters are ordered so
    that each is opened once. Signed-in contexts start from the one sign-in's cookies."""

    def __init__(self, chromium, url: str):
        self.chromium, self.url = chromium, url
        self.key, self.context, self.cookies = None, None, None

    def page(self, width: int, scheme: str, signed_in: bool):
        if self.key != (width, scheme, signed_in):
            self.close()
            self.key = (width, scheme, signed_in)
            self.context = self.chromium.new_context(viewport={"width": width, "height": 800}, color_scheme=scheme)
            self.context.set_default_timeout(20_000)
            self.context.new_page()
            if signed_in:
                self.context.add_cookies(self.signed_in_cookies())
        return self.context.pages[0]

    def signed_in_cookies(self) -> list:
        if self.cookies is None:
            sign_in(self.context.pages[0], self.url)
            self.cookies = self.context.cookies()
        return self.cookies

    def close(self) -> None:
        if self.context is not None:
            self.context.close()


@pytest.fixture(scope="module")
def viewer(chromium, site):
    viewer = Viewer(chromium, site.url)
    yield viewer
    viewer.close()


def violations(page, axe: str) -> list[str]:
    """axe-core's serious and critical findings in the page, one line each: the rule, its help, where, and why."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe)
    found = page.evaluate("axe.run(document, {resultTypes: ['violations']}).then(result => result.violations)")
    return [f"{rule['id']} ({rule['impact']}): {rule['help']}: {node['target']} {node['failureSummary']}"
            for rule in found if rule["impact"] in ("serious", "critical") for node in rule["nodes"]]


@pytest.mark.parametrize("width, scheme, name", [
    (width, scheme, name) for scheme in SCHEMES for width in WIDTHS for name in PAGES])
def test_a_page_fits_the_window_and_has_no_serious_accessibility_violation(viewer, site, paths, axe, width, scheme,
                                                                            name):
    page = viewer.page(width, scheme, signed_in=name in SIGNED_IN)
    page.goto(site.url + paths[name])
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
    if width >= LAPTOP:
        assert page.evaluate(f"[...document.querySelectorAll('.table-scroll')].every({FITS})"), "a table scrolls"
    found = violations(page, axe)
    assert not found, "\n".join(found)
