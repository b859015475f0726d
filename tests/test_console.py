"""The web console in a real browser: Playwright drives the system's Chromium against a real
``faceledger serve`` process, with real keys and real photos.

Screenshots of every page at 1280x800 go to $FACELEDGER_SCREENSHOTS (docs/console/ when the
documentation's pictures are made again: ``FACELEDGER_SCREENSHOTS=docs/console pytest
tests/test_console.py``; faces are blurred in them, so that no face of the test data lands in the
repository), else to the test's temporary folder.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import faceledger
from faceledger.api.app import ApiSettings
from faceledger.api.console import display
from faceledger.api.server import serve_in_thread
from faceledger.errors import InvalidParameterException
from faceledger.service.data_directory import SQLITE_FILE

from api_server import free_loopback_port
from conftest import data_path, image_bytes

# the console does not depend on the store's engine (the service tests run on both)
pytestmark = pytest.mark.backends("sqlite")

OBAMA = ("facerec_examples", "obama", "obama.jpg")
OBAMA_PROBE = ("facerec_examples", "_test_unlabeled", "obama1.jpg")
GALLERY = [("facerec_examples", "biden", "biden.jpg"), ("facerec_examples", "kit_harington", "john1.jpeg")]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Debian's chromium, started so that it reaches for nothing beyond the machine (docs/console.md)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Key:
    access_key_id: str
    secret: str


@dataclass
class Console:
    url: str
    data_dir: Path
    keys: dict[str, Key]
    screenshots: Path


def _chromium() -> str:
    found = os.environ.get("FACELEDGER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "no chromium to drive (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator:
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextmanager
def _serving(data_dir: Path) -> Iterator[str]:
    """A real ``faceledger serve`` on a free loopback port until the block ends (then SIGTERM)."""
    port = free_loopback_port()
    command = shutil.which("faceledger") or pytest.fail("the faceledger console script is not on PATH")
    server = subprocess.Popen(
        [command, "--data-dir", str(data_dir), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/console/sign-in", timeout=5) as reply:
                    assert reply.status == 200
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    server.kill()
                    pytest.fail(f"faceledger serve did not start: {server.communicate()[0]}")
                time.sleep(0.2)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Console]:
    """A data directory with collection 'missing' (review and a declared purpose required, crops
    kept) and 'archive', a key of each role, and a server on it."""
    data_dir = tmp_path_factory.mktemp("console")
    with faceledger.open(data_dir) as service:
        service.create_collection(collection_id="missing")
        service.put_collection_policy(collection_id="missing", review_required=True, purpose_required=True)
        service.index_faces(collection_id="missing", image=image_bytes(*OBAMA), external_image_id="obama")
        for photo in GALLERY:
            service.index_faces(collection_id="missing", image=image_bytes(*photo), external_image_id=photo[1])
        service.create_collection(collection_id="archive")
        service.index_faces(collection_id="archive", image=image_bytes(*GALLERY[0]), external_image_id="biden")
        keys = {}
        for name, role, collections in (
            ("searcher", "searcher", None),
            ("alice", "reviewer", None),
            ("bob", "reviewer", None),
            ("auditor", "auditor", None),
            ("admin", "admin", None),
            ("archivist", "indexer", ["archive"]),
            ("guessed", "reviewer", None),  # whose secret an attacker tries to guess
        ):
            made = service.create_access_key(role=role, collections=collections, description=name)
            keys[name] = Key(made["AccessKeyId"], made["SecretAccessKey"])
    shots = Path(os.environ.get("FACELEDGER_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with _serving(data_dir) as url:
        yield Console(url, data_dir, keys, shots)


def _signed_in(browser, console: Console, who: str, viewport: dict | None = None):
    """A browser context of its own (cookies and all), signed in as ``who``; its page."""
    context = browser.new_context(viewport=viewport or DESKTOP, accept_downloads=True)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # "Erase ... for good?": yes
    page.goto(f"{console.url}/console/sign-in")
    page.get_by_label("Access key id").fill(console.keys[who].access_key_id)
    page.get_by_label("Secret access key").fill(console.keys[who].secret)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    return page


def _shoot(page, console: Console, name: str) -> None:
    if os.environ.get("FACELEDGER_SCREENSHOTS"):  # pictures for the documentation: no face in them
        page.evaluate("document.querySelectorAll('main img').forEach(img => { img.style.filter = 'blur(9px)'; })")
    page.screenshot(path=str(console.screenshots / f"{name}.png"), full_page=False)


def _search_as_searcher(browser, console: Console, case_ref: str) -> tuple:
    page = _signed_in(browser, console, "searcher")
    page.goto(f"{console.url}/console/search")
    page.get_by_label("Collection").select_option("missing")
    page.get_by_label("Photo").set_input_files(str(data_path(*OBAMA_PROBE)))
    page.get_by_label("Purpose").fill("family reunification")
    page.get_by_label("Case reference").fill(case_ref)
    page.get_by_role("button", name="Search").click()
    page.wait_for_load_state()
    case_id = page.get_by_test_id("review-case").inner_text().strip()
    return page, case_id


def test_sign_in_refuses_a_wrong_secret_and_signs_out(browser, console: Console) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(f"{console.url}/console/")
    assert page.url.endswith("/console/sign-in")  # nothing without signing in
    _shoot(page, console, "sign-in")
    page.get_by_label("Access key id").fill(console.keys["alice"].access_key_id)
    page.get_by_label("Secret access key").fill(console.keys["alice"].secret + "x")
    with page.expect_response(lambda r: r.url.endswith("/console/sign-in") and r.request.method == "POST") as sent:
        page.get_by_role("button", name="Sign in").click()
    assert sent.value.status == 401
    assert page.get_by_role("alert").inner_text() == "That access key id and secret do not sign in here."
    assert not [c for c in context.cookies() if c["name"] == "faceledger_console"]

    page.get_by_label("Access key id").fill(console.keys["alice"].access_key_id)
    page.get_by_label("Secret access key").fill(console.keys["alice"].secret)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert page.url.endswith("/console/reviews")  # a reviewer lands on the review queue
    (session,) = [c for c in context.cookies() if c["name"] == "faceledger_console"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/console"
    assert console.keys["alice"].secret not in page.content()

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()
    assert page.url.endswith("/console/sign-in")
    # the old cookie, replayed, signs nobody in: the session ended in the store
    replay = browser.new_context()
    replay.add_cookies([{**session}])
    again = replay.new_page()
    again.goto(f"{console.url}/console/reviews")
    assert again.url.endswith("/console/sign-in")
    replay.close()
    context.close()


def test_a_search_is_verified_by_two_other_reviewers(browser, console: Console) -> None:
    searcher, case_id = _search_as_searcher(browser, console, "R-2026-17")
    _shoot(searcher, console, "search")
    assert "Review" not in searcher.get_by_role("navigation", name="Sections").inner_text()
    assert searcher.get_by_role("cell", name="obama").count() == 1
    # the searcher cannot review: the console offers no review, and the operation is refused
    response = searcher.goto(f"{console.url}/console/reviews/{case_id}")
    assert response.status == 403, searcher.content()

    alice = _signed_in(browser, console, "alice")
    queue = alice.get_by_role("link", name=f"Open case {case_id}")
    _shoot(alice, console, "review-queue")
    queue.click()
    alice.wait_for_load_state()
    images = alice.locator("img")
    assert images.count() >= 2
    for n in range(images.count()):  # the probe and the candidate, both shown (decoded, not broken)
        assert alice.evaluate("(img) => img.naturalWidth", images.nth(n).element_handle()) > 0
    assert "family reunification" in alice.content() and "R-2026-17" in alice.content()
    assert "False-match rate at this score" in alice.content()
    candidate = alice.locator("article.candidate").first
    face_id = candidate.locator("input[name=face_id]").get_attribute("value")
    status = alice.get_by_test_id(f"status-{face_id}")
    assert status.inner_text() == "UNVERIFIED"
    candidate.get_by_label("Your note").fill("Same scar above the left eyebrow; ears match.")
    _shoot(alice, console, "review-case")
    candidate.get_by_role("button", name="Confirm: same person").click()
    alice.wait_for_load_state()
    assert alice.get_by_test_id(f"status-{face_id}").inner_text() == "UNVERIFIED"  # one person is not two
    # decided by her, the case leaves her queue while it waits for a second reviewer
    alice.goto(f"{console.url}/console/reviews")
    assert alice.get_by_role("link", name=f"Open case {case_id}").count() == 0
    alice.get_by_role("link", name="Open", exact=True).click()
    alice.wait_for_load_state()
    assert alice.get_by_role("link", name=f"Open case {case_id}").count() == 1

    bob = _signed_in(browser, console, "bob")
    assert bob.get_by_role("link", name=f"Open case {case_id}").count() == 1  # bob's queue: still undecided by him
    bob.goto(f"{console.url}/console/reviews/{case_id}")
    assert "Same scar above the left eyebrow" in bob.content()  # decisions so far, with notes
    card = bob.locator("article.candidate").first
    card.get_by_label("Your note").fill("Agree: same person.")
    card.get_by_role("button", name="Confirm: same person").click()
    bob.wait_for_load_state()
    assert bob.get_by_test_id(f"status-{face_id}").inner_text() == "VERIFIED"

    # at a phone's width the case still fits: nothing runs off the side
    phone = _signed_in(browser, console, "alice", viewport=PHONE)
    phone.goto(f"{console.url}/console/reviews/{case_id}")
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    _shoot(phone, console, "review-case-phone")
    for page in (searcher, alice, bob, phone):
        page.context.close()


def test_an_auditor_sees_the_searches_and_verifies_the_ledger(browser, console: Console) -> None:
    searcher, _ = _search_as_searcher(browser, console, "AUDIT-1")
    searcher.context.close()
    auditor = _signed_in(browser, console, "auditor")
    assert auditor.url.endswith("/console/audit"), auditor.content()
    assert "AUDIT-1" in auditor.content(), auditor.content()
    row = auditor.locator("tr", has_text="AUDIT-1").first
    assert "SearchFacesByImage" in row.inner_text() and console.keys["searcher"].access_key_id in row.inner_text()
    _shoot(auditor, console, "audit")
    auditor.get_by_label("Case reference").fill("AUDIT-1")
    auditor.get_by_role("button", name="Filter").click()
    auditor.wait_for_load_state()
    rows = auditor.locator("table.ledger tbody tr")
    assert rows.count() == 1 and "family reunification" in rows.first.inner_text()
    with auditor.expect_download() as download:
        auditor.get_by_role("link", name="Export as JSON Lines").click()
    exported = Path(download.value.path()).read_text().splitlines()
    assert len(exported) == 1 and '"case_ref": "AUDIT-1"' in exported[0]  # as faceledger audit export writes it

    auditor.get_by_role("link", name="Audit").click()
    auditor.get_by_role("link", name="Verify the chain now").click()
    auditor.wait_for_load_state()
    assert auditor.get_by_role("status").inner_text().startswith("Intact")
    _shoot(auditor, console, "audit-verify")
    auditor.context.close()


def test_a_forged_form_post_is_refused(browser, console: Console) -> None:
    """A page elsewhere (another port of the same host: the same site, so the browser sends the
    session cookie along) posts a form to erase faces: refused, nothing erased."""
    admin = _signed_in(browser, console, "admin")
    forged = (
        f'<form id="f" method="post" action="{console.url}/console/collections/missing/erase">'
        '<input name="external_image_id" value="obama"></form><script>document.getElementById("f").submit()</script>'
    ).encode()

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(forged)

        def log_message(self, *args: object) -> None:
            pass

    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        with admin.expect_response(lambda r: r.url.endswith("/erase")) as posted:
            admin.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
        assert posted.value.status == 403
    finally:
        attacker.shutdown()
    # the same post from the console's own origin, but without the form's token: refused too
    refused = admin.request.post(
        f"{console.url}/console/collections/missing/erase",
        form={"external_image_id": "obama", "csrf": "guessed"},
        headers={"Origin": console.url},
    )
    assert refused.status == 403 and "CSRF" in refused.text()
    admin.goto(f"{console.url}/console/collections/missing?tab=faces")
    assert admin.get_by_role("cell", name="obama", exact=True).count() == 1  # nothing was erased
    admin.context.close()


def test_each_role_sees_only_what_it_may(browser, console: Console) -> None:
    archivist = _signed_in(browser, console, "archivist")  # an indexer of collection 'archive' only
    assert archivist.get_by_role("navigation", name="Sections").inner_text().split() == ["Collections"]
    assert [a.inner_text() for a in archivist.locator("main table a").all()] == ["archive"]
    assert archivist.goto(f"{console.url}/console/collections/missing").status == 403
    assert archivist.goto(f"{console.url}/console/audit").status == 403
    archivist.goto(f"{console.url}/console/collections/archive")
    assert archivist.get_by_role("button", name="Save policy").count() == 0  # no policy to change
    archivist.goto(f"{console.url}/console/collections/archive?tab=faces")
    _shoot(archivist, console, "collection-faces")
    archivist.get_by_label("Erase every face of an ExternalImageId").fill("biden")
    archivist.get_by_role("button", name="Erase", exact=True).click()
    archivist.wait_for_load_state()
    receipt = archivist.get_by_role("status", name="Erasure receipt")
    assert "1 face(s) erased for good" in receipt.inner_text()
    _shoot(archivist, console, "erasure-receipt")
    archivist.context.close()

    reviewer = _signed_in(browser, console, "bob")
    assert "Search" not in reviewer.get_by_role("navigation", name="Sections").inner_text()
    reviewer.goto(f"{console.url}/console/collections/missing")
    assert reviewer.get_by_role("button", name="Save policy").count() == 0
    assert reviewer.get_by_role("link", name="Faces").count() == 0  # reviewers do not list faces
    assert reviewer.goto(f"{console.url}/console/collections/missing?tab=faces").status == 403  # nor by address
    reviewer.context.close()

    admin = _signed_in(browser, console, "admin")
    admin.goto(f"{console.url}/console/collections")
    _shoot(admin, console, "collections")
    admin.goto(f"{console.url}/console/collections/missing")
    admin.get_by_label("Faces are erased this many days after indexing").fill("365")
    admin.get_by_role("button", name="Save policy").click()
    admin.wait_for_load_state()
    changed = admin.get_by_role("status", name="Policy changed").inner_text()
    assert re.search(r"RetentionDays: none\s*→\s*365", changed)
    _shoot(admin, console, "collection-policy")
    admin.goto(f"{console.url}/console/collections/missing?tab=consents")
    admin.get_by_label("ExternalImageId of the person's images").fill("obama")
    admin.get_by_label("Legal basis").fill("explicit consent, GDPR 9(2)(a)")
    admin.get_by_label("Reference to the signed document").fill("form 2026-118")
    admin.get_by_role("button", name="Record consent").click()
    admin.wait_for_load_state()
    assert admin.get_by_role("cell", name="form 2026-118").count() == 1
    _shoot(admin, console, "collection-consents")
    admin.context.close()


def test_a_search_without_the_purpose_the_policy_demands_is_refused_on_the_form(browser, console: Console) -> None:
    page = _signed_in(browser, console, "searcher")
    page.goto(f"{console.url}/console/search")
    page.get_by_label("Collection").select_option("missing")
    page.get_by_label("Photo").set_input_files(str(data_path(*OBAMA_PROBE)))
    page.get_by_label("Case reference").fill("R-9")
    with page.expect_response(lambda r: r.url.endswith("/console/search") and r.request.method == "POST") as sent:
        page.get_by_role("button", name="Search").click()
    assert sent.value.status == 403
    assert "requires a declared purpose and case reference" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Case reference").input_value() == "R-9"  # the form as it was filled in
    assert page.get_by_test_id("review-case").count() == 0
    page.context.close()


def test_guessing_a_secret_is_throttled_and_pages_carry_the_security_headers(browser, console: Console) -> None:
    client = browser.new_context().request
    sign_in = client.get(f"{console.url}/console/sign-in", headers={"X-Forwarded-Proto": "https"})
    headers = sign_in.headers
    assert (
        "frame-ancestors 'none'" in headers["content-security-policy"]
        and "script-src 'self'" in headers["content-security-policy"]
    )
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    # behind a TLS-terminating proxy on this host, the cookies are Secure
    assert "secure" in headers["set-cookie"].lower() and "samesite=strict" in headers["set-cookie"].lower()

    def form_token(page) -> str:  # each sign-in form carries a token of its own, matching its cookie
        return re.search(r'name="sign_in_token" value="([^"]+)"', page.text())[1]

    token = form_token(client.get(f"{console.url}/console/sign-in"))
    target = console.keys["guessed"]

    def attempt(secret: str) -> int:
        nonlocal token
        form = {"access_key_id": target.access_key_id, "secret": secret, "sign_in_token": token}
        answer = client.post(f"{console.url}/console/sign-in", form=form, max_redirects=0)
        token = form_token(answer)
        return answer.status

    assert [attempt(f"guess{n}") for n in range(5)] == [401] * 5
    assert attempt(target.secret) == 429  # locked for a while, even with the right secret
    # a sign-in form without its own cookie's token is refused (nobody signs a browser in to their key)
    stranger = browser.new_context().request
    form = {"access_key_id": target.access_key_id, "secret": target.secret, "sign_in_token": token}
    assert stranger.post(f"{console.url}/console/sign-in", form=form, max_redirects=0).status == 403


def test_the_console_shows_where_a_tampered_ledger_breaks(browser, console: Console) -> None:
    """Last in this module: it edits the ledger behind the server's back."""
    auditor = _signed_in(browser, console, "auditor")
    with sqlite3.connect(console.data_dir / SQLITE_FILE) as db:
        (seq,) = db.execute("SELECT MIN(seq) FROM ledger WHERE operation = 'SearchFacesByImage'").fetchone()
        db.execute("UPDATE ledger SET purpose = 'nothing to see' WHERE seq = ?", (seq,))
    auditor.goto(f"{console.url}/console/audit/verify")
    assert auditor.get_by_role("alert").inner_text().startswith("TAMPERED")
    problems = auditor.locator("ol.problems").inner_text()
    assert f"entry {seq} (SearchFacesByImage) was edited" in problems
    _shoot(auditor, console, "audit-tampered")
    auditor.context.close()


@pytest.mark.parametrize(
    "settings", [ApiSettings(console=False), ApiSettings(auth=False)], ids=["no-console", "no-auth"]
)
def test_no_console_without_it_or_without_authentication(service, settings: ApiSettings) -> None:
    with serve_in_thread(service, settings) as url:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/console/sign-in", timeout=10)
    assert refused.value.code == 404


def test_rates_are_shown_to_two_significant_figures_and_times_read_as_utc() -> None:
    assert display.one_in(1 / 2_129_446) == "1 in 2,100,000"  # an estimate claims no more digits
    assert display.one_in(1 / 14_950) == "1 in 15,000"
    assert (display.one_in(0), display.one_in(None), display.one_in(0.75)) == ("none measured", "not measured", "75%")
    assert display.parse_time("2026-12-06T08:30", "From") == 1_796_545_800.0
    assert display.parse_time(" ", "From") is None
    assert display.parse_date("2026-12-31", "Expires on") == 1_798_761_599.0  # the whole day
    with pytest.raises(InvalidParameterException):
        display.parse_time("yesterday", "From")


def test_bad_form_input_gets_a_clear_refusal(browser, console: Console) -> None:
    page = _signed_in(browser, console, "admin")
    page.goto(f"{console.url}/console/search")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    origin = {"Origin": console.url}
    # a purpose with a control character (it would reach the ledger and terminals): refused, ledgered
    page.get_by_label("Collection").select_option("missing")
    page.get_by_label("Photo").set_input_files(str(data_path(*OBAMA_PROBE)))
    page.get_by_label("Purpose").fill("reunion\u202eeno")
    page.get_by_label("Case reference").fill("R-1")
    with page.expect_response(lambda r: r.url.endswith("/console/search") and r.request.method == "POST") as sent:
        page.get_by_role("button", name="Search").click()
    assert sent.value.status == 400 and "printable" in page.get_by_role("alert").inner_text()
    # no photo at all
    answer = page.request.post(
        f"{console.url}/console/search",
        multipart={"csrf": csrf, "collection_id": "missing", "purpose": "p", "case": "c"},
        headers=origin,
    )
    assert answer.status == 400 and "Choose a photo" in answer.text()
    # a policy number that is no number; an audit time that is no time; a page token from nowhere
    answer = page.request.post(
        f"{console.url}/console/collections/archive/policy",
        form={"csrf": csrf, "max_results": "many"},
        headers=origin,
    )
    assert answer.status == 400 and "Maximum results must be a whole number" in answer.text()
    assert page.goto(f"{console.url}/console/audit?since=yesterday").status == 400
    assert page.goto(f"{console.url}/console/audit?next=forged").status == 400
    page.context.close()
    with sqlite3.connect(console.data_dir / SQLITE_FILE) as db:
        refused = db.execute(
            "SELECT error FROM ledger WHERE operation = 'SearchFacesByImage' AND outcome = 'error' ORDER BY seq DESC"
        ).fetchone()
    assert refused == ("InvalidParameterException",)
