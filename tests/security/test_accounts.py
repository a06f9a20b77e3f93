"""Sign-in, sign-up, sign-out, sessions and redeem codes attacked over HTTP and the queue
protocol of a running studio: parallel guesses, spraying, cross-site posts, sessions
that outlive a password change, weak passwords, proxies."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from backend.config import REPO_ROOT
from backend.accounts.signin import FREE_FAILURES, NAME_CEILING, SLOW_SECONDS
from tests.e2e.stack import wait_for
from tests.studio_process import StudioServer

from .conftest import PASSWORD, Client, assert_no_leak, client, footprint, fresh_address, sign_up
from .gradio_protocol import API, Attacker

PARALLEL = 16
EVIL = "https://evil.example"


def login(c: Client, name: str, password: str, **headers: str) -> requests.Response:
    return c.http.post(c.url + "/login", data={"name": name, "password": password}, headers=headers,
                       allow_redirects=False, timeout=60)


def signed_in(c: Client) -> bool:
    return c.http.get(c.url + "/studio/account", allow_redirects=False, timeout=30).status_code == 200


def test_parallel_wrong_passwords_only_a_few_are_checked_and_the_owner_still_signs_in(
        studio: StudioServer, victim: Client) -> None:
    guesser = client(studio)
    with ThreadPoolExecutor(PARALLEL) as pool:
        codes = list(pool.map(lambda i: login(guesser, victim.name, f"guess number {i}").status_code, range(PARALLEL)))
    assert sorted(codes) == sorted([401] * FREE_FAILURES + [429] * (PARALLEL - FREE_FAILURES)), codes
    owner = client(studio)  # the owner, at home
    assert login(owner, victim.name, PASSWORD).status_code == 303


def test_spraying_many_names_from_one_address_is_refused(studio: StudioServer, victim: Client) -> None:
    sprayer = client(studio)
    limit = 50  # Settings.login_failures_per_address, the shipped default
    with ThreadPoolExecutor(PARALLEL) as pool:
        codes = list(pool.map(lambda i: login(sprayer, f"name{i}x{uuid.uuid4().hex[:4]}", "password guess").status_code,
                              range(limit)))
    assert codes.count(401) == limit
    refused = login(sprayer, victim.name, PASSWORD)
    assert refused.status_code == 429 and "your network" in refused.text
    assert login(client(studio), victim.name, PASSWORD).status_code == 303


def test_a_name_guessed_from_everywhere_is_slowed_never_locked(studio: StudioServer, victim: Client) -> None:
    with ThreadPoolExecutor(8) as pool:  # a botnet: one guess from each of many addresses
        codes = list(pool.map(lambda i: login(client(studio), victim.name, "not the password").status_code,
                              range(NAME_CEILING.allowed)))
    assert codes == [401] * NAME_CEILING.allowed
    started = time.monotonic()
    assert login(client(studio), victim.name, PASSWORD).status_code == 303  # the owner gets in
    assert time.monotonic() - started >= SLOW_SECONDS  # ... after the pause every attempt now has


@pytest.mark.parametrize("headers", [{"Origin": EVIL}, {"Origin": "null"}, {"Referer": EVIL + "/login"}],
                         ids=["origin", "null-origin", "referer"])
def test_cross_site_posts_are_refused(studio: StudioServer, victim: Client, headers: dict[str, str]) -> None:
    outsider = client(studio)
    r = login(outsider, victim.name, PASSWORD, **headers)
    assert r.status_code == 403 and "set-cookie" not in r.headers  # no login CSRF
    r = outsider.http.post(studio.url + "/signup", data={"name": f"c{uuid.uuid4().hex[:8]}", "password": PASSWORD,
                                                         "password2": PASSWORD}, headers=headers,
                           allow_redirects=False, timeout=30)
    assert r.status_code == 403
    assert victim.http.post(studio.url + "/logout", headers=headers, allow_redirects=False,
                            timeout=30).status_code == 403
    assert signed_in(victim)
    session = victim.protocol()
    r = victim.http.post(f"{studio.url}{API}/queue/join", headers=headers, timeout=30,
                         json={"data": [], "fn_index": 0, "session_hash": session.session_hash})
    assert r.status_code == 403


def test_sign_out_is_a_same_site_post(studio: StudioServer) -> None:
    user = sign_up(studio)
    page = user.http.get(studio.url + "/logout", timeout=30)
    assert page.status_code == 200 and 'method="post"' in page.text
    assert signed_in(user)  # a GET (a link, an <img> on another site) signs nobody out
    r = user.http.post(studio.url + "/logout", headers={"Origin": studio.url}, allow_redirects=False, timeout=30)
    assert r.status_code == 303
    assert not signed_in(user)


def test_sign_out_everywhere_ends_every_session(studio: StudioServer) -> None:
    user = sign_up(studio)
    other = client(studio)
    assert login(other, user.name, PASSWORD).status_code == 303
    r = user.http.post(studio.url + "/logout", data={"everywhere": "1"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303
    wait_for(lambda: not signed_in(other), 15, "the other session to end")


def change_password(user: Client, current: str, new: str) -> str:
    session = Attacker(user.url, user.http)
    button = session.component_by_elem_id("change-password")
    dep = next(d for d in session.config["dependencies"] if [button["id"], "click"] in d["targets"])
    outcome = session.call(dep, [current, new, new])
    assert_no_leak(outcome.text)
    return outcome.text


def test_sessions_end_when_the_password_changes(studio: StudioServer) -> None:
    user = sign_up(studio)
    laptop, phone = client(studio), client(studio)
    for device in (laptop, phone):
        assert login(device, user.name, PASSWORD).status_code == 303
    assert "current password is wrong" in change_password(user, "not my password", "another fine secret")
    assert signed_in(laptop)
    assert "password-changed" in change_password(user, PASSWORD, "another fine secret")
    for device in (user, laptop, phone):
        wait_for(lambda d=device: not signed_in(d), 15, "the old session to end")
        r = device.http.post(f"{studio.url}{API}/queue/join", timeout=30,
                             json={"data": [], "fn_index": 0, "session_hash": "stolen1234"})
        assert r.status_code == 401
    assert login(client(studio), user.name, PASSWORD).status_code == 401
    assert login(client(studio), user.name, "another fine secret").status_code == 303


def test_sessions_end_when_an_operator_sets_a_password(studio: StudioServer) -> None:
    user = sign_up(studio)
    assert signed_in(user)
    env = dict(os.environ, STUDIO_DATA_DIR=str(studio.data_dir))
    env.pop("STUDIO_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "backend", "user", "passwd", user.name, "--password-stdin"],
                          input="set by the operator\nset by the operator\n", text=True, capture_output=True,
                          cwd=REPO_ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 session(s) signed out" in done.stdout
    wait_for(lambda: not signed_in(user), 15, "the session to end")


@pytest.mark.parametrize(("name", "password", "reason"), [
    ("joe-{}", "joe-{}", "user name"), ("amy{}", "aaaaaaaa", "too few characters"),
    ("kim{}", "password1", "most common"), ("lee{}", "short", "at least 8")])
def test_weak_passwords_are_refused_at_sign_up(studio: StudioServer, name: str, password: str, reason: str) -> None:
    tag = uuid.uuid4().hex[:5]
    c = client(studio)
    r = c.http.post(studio.url + "/signup", data={"name": name.format(tag), "password": password.format(tag),
                                                 "password2": password.format(tag)}, allow_redirects=False, timeout=30)
    assert r.status_code == 400 and reason in r.text


def test_sign_ups_per_address_are_limited(studio: StudioServer) -> None:
    address = fresh_address()
    for _ in range(5):  # STUDIO_SIGNUPS_PER_ADDRESS of the attacked studio
        sign_up(studio, address=address)
    c = client(studio, address)
    r = c.http.post(studio.url + "/signup", data={"name": f"n{uuid.uuid4().hex[:8]}", "password": PASSWORD,
                                                 "password2": PASSWORD}, allow_redirects=False, timeout=30)
    assert r.status_code == 429 and "new accounts from your network" in r.text
    sign_up(studio)  # from elsewhere: fine


def test_parallel_wrong_codes_only_a_few_are_checked(studio: StudioServer, attacker: Client) -> None:
    before = footprint(studio, attacker.name)

    def guess(i: int) -> str:
        session = attacker.protocol()
        return session.call(session.dependency(api_name="redeem"), [f"GUES-SCOD-{i:04d}-XXXX"]).text

    with ThreadPoolExecutor(PARALLEL) as pool:
        texts = list(pool.map(guess, range(PARALLEL)))
    assert sum("does not exist" in t for t in texts) == 5  # Settings.redeem_max_failures
    assert sum("Too many wrong codes" in t for t in texts) == PARALLEL - 5
    assert footprint(studio, attacker.name) == before


def test_forwarded_headers_are_believed_from_trusted_proxies_only(studio: StudioServer) -> None:
    user = sign_up(studio)
    over_tls = login(client(studio), user.name, PASSWORD, **{"X-Forwarded-Proto": "https"})
    assert re.search(r"studio_session=[^;]+;.*Secure", over_tls.headers["set-cookie"], re.IGNORECASE)
    plain = login(client(studio), user.name, PASSWORD)
    assert "secure" not in plain.headers["set-cookie"].lower()
    # /metrics is for loopback clients: a client the proxy relays is not one.
    assert requests.get(studio.url + "/metrics", timeout=10).status_code == 200
    relayed = requests.get(studio.url + "/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10)
    assert relayed.status_code == 403


def test_malformed_events_get_a_plain_sentence(studio: StudioServer, attacker: Client) -> None:
    session = attacker.protocol()
    redeem = session.dependency(api_name="redeem")
    hostile = {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}
    for data in ([], [hostile] * 3, [["nested", ["list"]]], [1e308], [hostile]):
        outcome = session.call(redeem, data)
        assert_no_leak(outcome.text, "Expected", "index 0", "TypeError", "ValueError")
        if not outcome.success and "not uploaded in your current session" not in (outcome.error or ""):
            ref = re.search(r"reference ([0-9a-f]{8})", outcome.error or "")
            assert ref, outcome.error
            assert ref.group(1) in studio.log_path.read_text(errors="replace")  # the detail is in the log
