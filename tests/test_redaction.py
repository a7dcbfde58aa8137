"""Value-aware redaction (issue 23): secrets found by what a rendered value contains.

Every built-in detector has a real-looking secret it must catch and look-alikes it must
leave alone, and switching it off by name must give its secret back (so each row is shown
to do the work itself). A corpus of ordinary text must come out unchanged. Then the
issue's own reproduction, traced for real on both backends and through the command.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autotrace
from autotrace.config import DEFAULT_REDACT, make_config
from autotrace.describe.function import Formatter
from autotrace.describe.redaction import (
    DETECTOR_NAMES,
    DETECTORS,
    NEEDS,
    required_literals,
)
from autotrace.describe.values import Renderer

from .clihelp import AUTOTRACE, run, tree_lines, write
from .conftest import Traced


def renderer(**options: Any) -> Renderer:
    return Formatter(make_config(["x"], environ={}, **options)).renderer


DEFAULT = renderer()

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4i"
       "fQ.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4ZsecretBODY\nLINE2secretBODY\n"
       "-----END RSA PRIVATE KEY-----")

#: detector -> (texts with a secret, what each must become), look-alikes kept as they are.
CASES: dict[str, tuple[list[tuple[str, str]], list[str]]] = {
    "private_key": (
        [(PEM, "-----BEGIN RSA PRIVATE KEY-----[REDACTED]-----END RSA PRIVATE KEY-----"),
         ("key: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC",  # cut short
          "key: -----BEGIN PRIVATE KEY-----[REDACTED]"),
         ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE\n-----END OPENSSH "
          "PRIVATE KEY----- done", "-----BEGIN OPENSSH PRIVATE KEY-----[REDACTED]-----END "
          "OPENSSH PRIVATE KEY----- done")],
        ["-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
         "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
         "-----END PUBLIC KEY-----", "the private key lives in the vault"]),
    "jwt": (
        [(JWT, "[REDACTED]"), (f"cookie jar={JWT};", "cookie jar=[REDACTED];")],
        ["eyJ is how base64 JSON starts", "keyJoin.eyJ", "monkeyJump.x.y"]),
    "auth_scheme": (
        [("Bearer abc123def456ghi789", "Bearer [REDACTED]"),
         ("sent bearer 9f8e7d6c5b4a then", "sent bearer [REDACTED] then"),
         ("Basic dXNlcjpwYXNzd29yZA==", "Basic [REDACTED]"),
         ("Basic dXNlcjpwYXNz", "Basic [REDACTED]")],
        ["Bearer tokens are opaque", "Basic authentication is weak", "basic usage",
         "the bearer of bad news", "Basic HTTP auth"]),
    "aws_access_key_id": (
        [("AKIAIOSFODNN7EXAMPLE", "AKIA[REDACTED]"),
         ("id=ASIAY34FZKBOKMUTVV7A,", "id=ASIA[REDACTED],")],
        ["AKIA", "ASIAN MARKETS", "XAKIAIOSFODNN7EXAMPLE1", "AKIAIOSFODNN7EXAMPLEX"]),
    "github_token": (
        [("refused ghp_16C7e42F292c6912E7710c838347Ae178B4a",
          "refused ghp_[REDACTED]"),
         ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
          "github_pat_[REDACTED]"),
         ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_[REDACTED]")],
        ["ghp_short", "the ghost_town_of_nowhere_in_particular", "weigh_in_results_2024"]),
    "gitlab_token": (
        [("glpat-xXxXxXxXxXxXxXxXxXxX", "glpat-[REDACTED]")],
        ["glpat-short", "a glpat prefix"]),
    "slack_token": (
        [("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-[REDACTED]"),
         ("xapp-1-A0123456789-0123456789012-abcdef", "xapp-[REDACTED]")],
        ["xoxo, hugs", "xoxb-1", "boxoxb-123456789012-x"]),
    "slack_webhook": (
        [("https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
          "https://hooks.slack.com/services/[REDACTED]")],
        ["https://api.slack.com/messaging/webhooks", "hooks.slack.com/services/"]),
    "stripe_key": (
        [("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_[REDACTED]"),
         ("key=rk_test_51H8zQ2eZvKYlo2C0abcdEFGH", "key=rk_test_[REDACTED]")],
        ["sk_live_", "task_live_0123456789abcdefXYZ", "risk_test_suite_enabled"]),
    "stripe_webhook_secret": (
        [("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_[REDACTED]")],
        ["whsec_", "whsec_short"]),
    "google_api_key": (
        [("AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "AIza[REDACTED]")],
        ["AIza", "AIzaSyTooShort"]),
    "npm_token": (
        [("npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "npm_[REDACTED]")],
        ["npm_config_cache", "npm_package_version"]),
    "pypi_token": (
        [("pypi-AgEIcHlwaS5vcmcCJGE4ZjY5ZTQ3LTk3ZDEtNDQ3Zi1hYjQ4LWI1ODhjZjY0ZDFiNQ",
          "pypi-[REDACTED]")],
        ["pypi-mirror", "pypi-AgE"]),
    "llm_api_key": (
        [("sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78", "sk-[REDACTED]"),
         ("OPENAI sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
          "OPENAI sk-[REDACTED]")],
        ["sk-learn", "task-queue-0123456789abcdefghijklmnopqrstuv", "disk-0123"]),
    "url_userinfo": (
        [("postgresql://admin:s3cretPW@db.internal:5432/prod",
          "postgresql://REDACTED:REDACTED@db.internal:5432/prod"),
         ("redis://:pw@cache:6379/0", "redis://REDACTED:REDACTED@cache:6379/0"),
         ("mysql://u:p@ss@db/x", "mysql://REDACTED:REDACTED@db/x"),
         ("see https://bob:hunter2@example.com/a for more",
          "see https://REDACTED:REDACTED@example.com/a for more")],
        ["https://example.com/a?b=c@d", "mailto:bob@example.com", "bob@example.com",
         "git@github.com:org/repo.git", "https://example.com/users/@bob"]),
    "url_query": (
        [("https://b.s3.amazonaws.com/k?AWSAccessKeyId=AKIDX&Expires=1&Signature=abc%2Bd",
          "https://b.s3.amazonaws.com/k?AWSAccessKeyId=REDACTED&Expires=1&Signature=REDACTED"),
         ("https://acct.blob.core.windows.net/c/b?sv=2020&sig=zzz%3D&se=1",
          "https://acct.blob.core.windows.net/c/b?sv=2020&sig=REDACTED&se=1"),
         ("https://storage.googleapis.com/b/o?X-Goog-Signature=0123abcd#frag",
          "https://storage.googleapis.com/b/o?X-Goog-Signature=REDACTED"),
         ("?X-Amz-Credential=AKIDX%2F2024&X-Amz-Signature=fe5f",
          "?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED")],
        ["https://example.com/search?q=signature&sig_figs=3", "Signature: valid",
         "designation=engineer"]),
    "named_pairs": (
        [("user=bob password=hunter2", "user=bob password=[REDACTED]"),
         ("--password=hunter2 --user=bob", "--password=[REDACTED] --user=bob"),
         ('{"api_key": "abc123", "page": 2}', '{"api_key": "[REDACTED]", "page": 2}'),
         ("Authorization: Bearer opaque", "Authorization: [REDACTED]"),
         ("Creds(user='bob', api_secret='s3cr\\'et', x=1)",
          "Creds(user='bob', api_secret='[REDACTED]', x=1)"),
         ("DRIVER={ODBC};SERVER=db;UID=sa;PWD=Secr3t;", "DRIVER={ODBC};SERVER=db;UID=sa;"
          "PWD=[REDACTED];"),
         ("https://api.example.com/v1?token=tok123&page=2",
          "https://api.example.com/v1?token=REDACTED&page=2"),
         ("session_id: 8f14e45f, ok", "session_id: [REDACTED], ok"),
         ("creds=('bob', 'hunter2')", "creds=[REDACTED]"),
         ("token=None password=False", "token=None password=False")],
        ["token bucket", "password reset page", "the session ended", "author=Jane",
         "authority: example.com", "credit=100"]),
}

#: Ordinary values that must come out exactly as they went in.
LOOK_ALIKES = [
    "https://example.com/search?q=token+bucket&page=2",
    "https://docs.python.org/3/library/re.html#re.sub",
    "http://localhost:8080/health",
    "token bucket refills at 10/s", "password reset page", "Please reset your password.",
    "the session ended", "a secret garden", "Bearer tokens are opaque",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",  # sha256
    "d41d8cd98f00b204e9800998ecf8427e",  # md5
    "9fceb02d0ae598e95dc970b74767f19372d61af8",  # a git sha
    "550e8400-e29b-41d4-a716-446655440000", "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
    "user@example.com", "git@github.com:org/repo.git", "fe80::1", r"C:\Users\me",
    "12:30:45", "2024-01-02T03:04:05Z", "a=1, b=2", "ratio=3:4", "Point(x=1, y=2)",
    "author=Jane", "authority: example.com", "Signature: valid", "sid_meier", "the side door",
    "sk-learn", "npm_config_cache", "xoxo", "AKIA", "ASIAN MARKETS", "eyJ", "ghost_town",
    "GET /api/v1/users?page=2&limit=50 HTTP/1.1", "key=value", "order 12345 shipped",
]


@pytest.mark.parametrize("name", DETECTOR_NAMES)
def test_each_detector_catches_its_secret_and_only_it(name: str) -> None:
    secrets, look_alikes = CASES[name]
    alone = renderer(redact_disable=[n for n in DETECTOR_NAMES if n != name])
    off = renderer(redact_disable=[name])
    for text, expected in secrets:
        assert DEFAULT.attribute(text) == expected, text
        assert alone.attribute(text) == expected, f"{name} alone: {text}"
        if name != "named_pairs" or "None" not in text:
            assert off.attribute(text) != expected, f"{name} off still redacts {text}"
    for text in look_alikes:
        assert DEFAULT.attribute(text) == text, f"{name}: look-alike changed: {text}"


def test_every_detector_has_cases_and_a_docs_row() -> None:
    assert set(CASES) == set(DETECTOR_NAMES)
    page = (Path(__file__).resolve().parent.parent / "docs" / "spans.md").read_text()
    for detector in DETECTORS:
        assert f"| `{detector.name}` | {detector.what} |" in page, detector.name
        assert DEFAULT.attribute(detector.example) != detector.example, detector.name
        if detector.pattern:  # the gates let every secret through to its regex
            for text, _ in CASES[detector.name][0]:
                assert any(need in text for need in NEEDS[detector.name]), text
                assert any(trigger in text for trigger in detector.triggers), text


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_ordinary_text_stays_readable(text: str) -> None:
    assert DEFAULT.attribute(text) == text
    assert DEFAULT.text([text]) == repr([text])


def test_a_secret_cut_by_max_value_length_is_still_redacted() -> None:
    body = "16C7e42F292c6912E7710c838347Ae178B4a"
    for pad in range(230, 256):
        shown = DEFAULT.attribute("x" * pad + " ghp_" + body)
        assert len(shown) <= 256
        assert not any(body[:i] in shown for i in range(4, len(body))), (pad, shown)
        listed = DEFAULT.text(["x" * pad, "ghp_" + body])
        assert "16C7e42F" not in listed and len(listed) <= 256
    long_pem = "-----BEGIN PRIVATE KEY-----\n" + "MIIsecretBODY" * 200
    assert DEFAULT.attribute(long_pem) == "-----BEGIN PRIVATE KEY-----[REDACTED]"
    assert "MII" not in DEFAULT.attribute("y" * 240 + long_pem)


@dataclasses.dataclass
class Database:
    name: str
    dsn: str


Row = collections.namedtuple("Row", "id note")


def test_containers_fields_and_bytes_are_scanned() -> None:
    assert DEFAULT.text(["ok", "postgresql://u:pw@h/db"]) == \
        "['ok', 'postgresql://REDACTED:REDACTED@h/db']"
    assert DEFAULT.text({"header": "Bearer abc123def456"}) == "{'header': 'Bearer [REDACTED]'}"
    assert DEFAULT.text(Database("main", "mysql://root:pw@db/main")) == \
        "Database(name='main', dsn='mysql://REDACTED:REDACTED@db/main')"
    assert DEFAULT.text(Row(1, "token=abc123 ok")) == "Row(id=1, note='token=[REDACTED] ok')"
    assert DEFAULT.text((b"token=abc123",)) == "(b'token=[REDACTED]',)"
    assert DEFAULT.text({"url": "https://x.io/?sig=abc"}) == "{'url': 'https://x.io/?sig=REDACTED'}"
    # a secret-named key hides whatever it holds, containers included
    assert DEFAULT.text({"creds": ("bob", "hunter2")}) == "{'creds': '[REDACTED]'}"


class Settings:
    """Its own repr prints its fields, as attrs and pydantic models do."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __repr__(self) -> str:
        return (f"Settings(region='eu', api_secret={self.secret!r}, "
                f"dsn='postgresql://app:{self.secret}@db/app', retries=3)")


def test_repr_text_under_repr_objects_is_scanned() -> None:
    shown = renderer(repr_objects=True).text(Settings("s3cr3t-value"))
    assert shown == ("Settings(region='eu', api_secret='[REDACTED]', "
                     "dsn='postgresql://REDACTED:REDACTED@db/app', retries=3)")


def test_attrs_fields_under_repr_objects() -> None:
    attrs = pytest.importorskip("attrs")  # not a dependency: tested where it is installed

    @attrs.define
    class Login:
        user: str
        password: str

    assert renderer(repr_objects=True).text(Login("bob", "hunter2")).endswith(
        "Login(user='bob', password='[REDACTED]')")


def test_pydantic_fields_under_repr_objects() -> None:
    pydantic = pytest.importorskip("pydantic")  # not a dependency: tested where installed

    class Service(pydantic.BaseModel):  # type: ignore[misc,name-defined]
        name: str
        dsn: str
        api_token: str

    shown = renderer(repr_objects=True).text(
        Service(name="billing", dsn="postgresql://app:pw123@db/billing", api_token="t0k3n"))
    assert shown == ("Service(name='billing', dsn='postgresql://REDACTED:REDACTED@db/billing', "
                     "api_token='[REDACTED]')")
    # without repr_objects no user repr runs: the object shows as its class
    assert "pw123" not in DEFAULT.text(Service(name="b", dsn="x://a:pw123@h", api_token="t"))


def test_user_value_patterns_and_names() -> None:
    own = renderer(redact_values=[r"acct-\d{8}", r"iban:([A-Z]{2}\d+)"])
    assert own.attribute("pay acct-12345678 now") == "pay [REDACTED] now"
    assert own.attribute("iban:DE89370400440532013000.") == "iban:[REDACTED]."
    assert own.attribute("acct-1234") == "acct-1234"
    # names from ``redact`` also name pairs in text, anchored or not, literal or not
    anchored = renderer(redact=["^user$"])
    assert anchored.attribute("user=bob&username=x") == "user=REDACTED&username=x".replace(
        "user=REDACTED", "user=[REDACTED]")
    no_literal = renderer(redact=[r"[a-z]{3}\d"])
    assert no_literal.attribute("abc1=xyz, ab=1") == "abc1=[REDACTED], ab=1"
    # no names at all: pairs by name are off, the formats still work
    none = renderer(redact=[])
    assert none.attribute("password=hunter2") == "password=hunter2"
    assert none.attribute("x ghp_16C7e42F292c6912E7710c838347Ae178B4a") == "x ghp_[REDACTED]"


def test_switching_every_detector_off_keeps_the_name_rules() -> None:
    off = renderer(redact_disable=["all"])
    assert off.scrub is None
    dsn = "postgresql://admin:s3cretPW@db/prod"
    assert off.attribute(dsn) == dsn
    assert off.text({"password": "x", "dsn": dsn}) == \
        f"{{'password': '[REDACTED]', 'dsn': '{dsn}'}}"


def test_texts_found_clean_are_remembered_and_secrets_never() -> None:
    fresh = renderer()
    scrubber = fresh.scrub.__self__  # type: ignore[union-attr]
    dsn = "postgresql://admin:s3cretPW@db.internal:5432/prod"
    plain = "https://api.example.com/v1/items?page=2&limit=50"
    for _ in range(3):
        assert fresh.attribute(dsn) == "postgresql://REDACTED:REDACTED@db.internal:5432/prod"
        assert fresh.attribute(plain) == plain
    assert scrubber._clean == {hash(plain)}  # a hash, of the clean text only
    for i in range(5000):  # bounded: emptied when full
        fresh.attribute(f"order {i:08d} shipped")
    assert 0 < len(scrubber._clean) <= 4096


def test_value_regexes_from_a_variable_keep_their_commas() -> None:
    config = make_config(["x"], environ={
        "OTEL_PYTHON_AUTOTRACE_REDACT_VALUES": r"acct-[0-9]{4,8}, x-(a|b),[,;]z",
        "OTEL_PYTHON_AUTOTRACE_REDACT_DISABLE": "jwt, url_query"})
    assert config.redact_values == ("acct-[0-9]{4,8}", "x-(a|b)", "[,;]z")
    assert config.redact_disable == ("jwt", "url_query")


#: Sentry's default denylist (sentry_sdk.scrubber.DEFAULT_DENYLIST) but x_forwarded_for
#: (personal data, not a secret) and symfony (a framework's cookie name).
SENTRY_NAMES = [
    "password", "passwd", "secret", "api_key", "apikey", "auth", "credentials", "mysql_pwd",
    "privatekey", "private_key", "token", "session", "csrftoken", "sessionid", "x_csrftoken",
    "set_cookie", "cookie", "authorization", "x_api_key", "aiohttp_session", "connect.sid",
    "csrf_token", "csrf", "_csrf", "_csrf_token", "PHPSESSID", "_session", "user_session",
    "_xsrf", "XSRF-TOKEN",
]


def test_the_default_names_cover_sentrys_denylist_and_spare_look_alikes() -> None:
    assert [name for name in SENTRY_NAMES if not DEFAULT.is_secret(name)] == []
    more = ["passphrase", "db_pass", "PWD", "creds", "user_cred", "access_key", "sid"]
    assert [name for name in more if not DEFAULT.is_secret(name)] == []
    spared = ["author", "author_id", "authority", "credit", "pass_through", "side", "bypass",
              "sidebar", "username", "passenger"]
    assert [name for name in spared if DEFAULT.is_secret(name)] == []


def test_the_pair_gate_reads_the_literals_every_match_needs() -> None:
    assert required_literals(DEFAULT_REDACT) == (
        "access", "api", "auth", "cookie", "cred", "jwt", "pass", "private", "pwd", "secret",
        "sess", "sid", "srf", "token")
    assert required_literals(["^user$", "(?:pin|otp)_code"]) == ("otp_code", "pin_code", "user")
    assert required_literals([r"\d+"]) is None  # no gate: every separator is looked at


# -- the issue's reproduction, traced for real ----------------------------------------------

SECMOD = '''
def connect(dsn):
    return "connected"

def call_api(url, headers=None):
    return {"status": 200, "next": url}

def login_user(username, creds):
    return username

def refuse(tok):
    raise ValueError(f"refused {tok}")

def configure(settings):
    return "ok"

def issue(subject):
    return "Bearer " + JWT

JWT = "{jwt}"

class Settings:
    def __init__(self, secret):
        self.secret = secret

    def __repr__(self):
        return f"Settings(api_secret={self.secret!r}, region='eu')"
'''.replace("{jwt}", JWT)

SECRET_PARTS = ("s3cretPW", "pa55word", "tok123", "zzz", "hunter2",
                "16C7e42F292c6912E7710c838347Ae178B4a", "dozjgNryP4J3jVmN", "SETTINGS-SECRET")


def _everything(spans: list[Any]) -> str:
    """Every attribute, event attribute and status text of the spans, as one string."""
    parts: list[Any] = []
    for span in spans:
        parts += [dict(span.attributes or {}), span.status.description]
        parts += [dict(event.attributes or {}) for event in span.events]
    return json.dumps(parts, default=str)


def test_the_issue_reproduction_leaks_nothing(traced: Traced) -> None:
    mod = traced.load("secmod", SECMOD, repr_objects=True)
    assert mod.connect(dsn="postgresql://admin:s3cretPW@db.internal:5432/prod") == "connected"
    mod.call_api(url="https://user:pa55word@api.example.com/v1?token=tok123&sig=zzz")
    assert mod.login_user(username="bob", creds=("bob", "hunter2")) == "bob"
    with pytest.raises(ValueError, match="ghp_16C7e42F"):  # the program still sees it all
        mod.refuse("ghp_16C7e42F292c6912E7710c838347Ae178B4a")
    assert mod.configure(mod.Settings("SETTINGS-SECRET")) == "ok"
    assert mod.issue("x").startswith("Bearer eyJ")
    exported = _everything(traced.spans())
    assert [part for part in SECRET_PARTS if part in exported] == []
    assert traced.args("connect") == {
        "dsn": "postgresql://REDACTED:REDACTED@db.internal:5432/prod"}
    assert traced.args("call_api")["url"] == (
        "https://REDACTED:REDACTED@api.example.com/v1?token=REDACTED&sig=REDACTED")
    assert "REDACTED:REDACTED@api.example.com" in str(
        traced.attrs("call_api")["code.function.return.value"])
    assert traced.args("login_user") == {"username": "bob", "creds": "[REDACTED]"}
    failed = traced.span("refuse")
    event = failed.events[0]
    assert event.attributes is not None
    assert event.attributes["exception.message"] == "refused ghp_[REDACTED]"
    assert "refused ghp_[REDACTED]" in str(event.attributes["exception.stacktrace"])
    assert failed.status.description == "ValueError: refused ghp_[REDACTED]"
    assert traced.args("configure") == {
        "settings": "Settings(api_secret='[REDACTED]', region='eu')"}
    assert traced.attrs("issue")["code.function.return.value"] == "Bearer [REDACTED]"


def test_the_command_redacts_values_and_a_flag_switches_a_detector_off(
        tmp_path: Path, backend: str) -> None:
    write(tmp_path, "secapp.py", '''
        def connect(dsn):
            return "connected"

        def login_user(username, creds):
            return username

        connect("postgresql://admin:s3cretPW@db.internal:5432/prod")
        login_user("bob", ("bob", "hunter2"))
    ''')
    out = run([*AUTOTRACE, "-p", "secapp", "--backend", backend, sys.executable,
               "secapp.py"], tmp_path)
    assert out.returncode == 0, out.stderr
    lines = tree_lines(out.stderr)
    assert any("connect(dsn='postgresql://REDACTED:REDACTED@db." in line
               for line in lines), out.stderr
    assert any("login_user(username='bob', creds=[REDACTED])" in line for line in lines)
    assert "s3cretPW" not in out.stderr and "hunter2" not in out.stderr
    off = run([*AUTOTRACE, "-p", "secapp", "--backend", backend, "--redact-disable",
               "url_userinfo", sys.executable, "secapp.py"], tmp_path)
    assert off.returncode == 0, off.stderr
    assert "s3cretPW" in off.stderr and "hunter2" not in off.stderr


def test_install_rejects_a_value_regex_that_matches_nothing_visible() -> None:
    with pytest.raises(ValueError, match="matches the empty string"):
        autotrace.install(["x"], redact_values=["(acct)?"])
    importlib.invalidate_caches()


# -- properties: a secret is caught whatever surrounds it; scanning twice changes nothing ----

_NOISE = st.lists(st.sampled_from(
    [*"abcAKIAeyJ_-=:@/?&'\" .\n[]{}()", "password", "token", "Bearer ", "ghp_", "://",
     "None", "x=1", "-----BEGIN"]), max_size=30).map("".join)
_FORMAT_SECRETS = [(text, expected) for name, (secrets, _) in CASES.items()
                   if name not in ("named_pairs", "url_query") for text, expected in secrets]


def _hidden_parts(text: str, expected: str) -> list[str]:
    """Runs of 6+ characters of ``text`` that ``expected`` no longer shows."""
    words = re.findall(r"[A-Za-z0-9]{6,}", text)
    return [word for word in words if word not in expected]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(_NOISE, st.sampled_from(_FORMAT_SECRETS), _NOISE,
       st.sampled_from([" ", "\n", ", ", "'", '"', "(", "="]))
def test_a_secret_is_caught_whatever_surrounds_it(before: str, secret: tuple[str, str],
                                                   after: str, separator: str) -> None:
    text, expected = secret
    shown = DEFAULT.scrub(before + separator + text + separator + after)  # type: ignore[misc]
    assert [part for part in _hidden_parts(text, expected) if part in shown] == []
    assert DEFAULT.scrub(shown) == shown  # type: ignore[misc]
