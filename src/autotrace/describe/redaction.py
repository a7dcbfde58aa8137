"""Value-aware redaction: secrets found by what a rendered value *contains*.

Names tell one kind of secret (``password=``, ``{'Authorization': ...}``; see
``values.Renderer.is_secret``); this module finds the others, in the text of every
rendered value (a string argument, a container's or object's rendering, ``repr()``
text under ``repr_objects``, an exception's message and traceback):

- ``DETECTORS``: well-known secret formats (a JWT, ``Bearer ...``, cloud and SaaS
  tokens, a PEM private key) and credentials in URLs, each a named row that users
  may switch off (``redact_disable``);
- ``name=value`` / ``name: value`` pairs whose name is secret by the ``redact`` name
  rules (``named_pairs``), and URL query parameters that OpenTelemetry's semantic
  conventions list as sensitive (``url_query``: ``AWSAccessKeyId``, ``Signature``,
  ``sig``, ``X-Goog-Signature``, ...), their values replaced by ``REDACTED``;
- the user's own value regexes (``redact_values``).

Why a table of our own and not a library: the maintained secret scanners
(detect-secrets, the truffleHog/gitleaks rule sets) are built to scan files once, with
hundreds of rules, entropy tests and per-line plugins. Measured here (detect-secrets
1.5.0, ``scan_line``, default plugins) a 50-character value took 0.7-1.3 ms, and it
flagged ordinary values (``https://api.example.com/v1/items?page=2``, ``order 12345
shipped``) as high-entropy secrets. Here one value of at most ``max_value_length``
characters is scanned for each attribute of every kept call, so the budget is about a
microsecond, and false alarms cost readability. Nor is there one combined regex:
CPython's ``re`` scans an alternation position by position (the rows as one alternation
took ~90 µs over 300 characters of prose on the shared test machine, the same rows one
by one, each starting with a literal, ~3 µs), while a pattern that starts with a literal
is found at C speed. So each row is one precompiled regex, tried only when a coarse key
(``-``, ``_``, ``@``, ``A``, ...) and then one of its literal ``triggers`` occurs in the
text (``in`` is a C substring search); pairs are looked for only where a literal that
every secret name needs occurs (``required_literals``); and texts found clean are
remembered by hash. Every row has a test with a real-looking secret and look-alikes that
must stay readable (``tests/test_redaction.py``); ``benchmarks/rendering.py`` measures
the cost per value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: What replaces a secret (the semantic conventions' ``REDACTED`` in URLs).
MARKER = "[REDACTED]"
URL_MARKER = "REDACTED"
#: Characters scanned past the kept length, so that a token that starts in the kept part
#: is seen whole before the value is cut (every row matches within 64 characters).
SCAN_MARGIN = 64

_TOKEN_END = "(?![A-Za-z0-9])"
#: Texts this long or longer have their hash remembered once found clean (at most this many).
_CACHED_FROM = 16
_CLEAN_MAX = 4096
#: No row matches fewer characters (``a://b@`` is 6; a token 13 or more).
SHORTEST_SECRET = 6


@dataclass(frozen=True)
class Detector:
    """One built-in secret format. ``pattern``'s group 1 is kept (a prefix that says what
    the secret was, ``ghp_``), and group 2 if it has one (PEM's END line), the rest of the
    match becomes ``[REDACTED]``: a text scanned twice comes out the same."""

    name: str
    what: str  # README wording
    triggers: tuple[str, ...]  # the regex runs only if one of these occurs in the text
    pattern: str
    example: str  # a secret it must catch (tests)


DETECTORS: tuple[Detector, ...] = (
    Detector("private_key", "PEM private keys (`-----BEGIN ... PRIVATE KEY-----`, also cut "
             "short): the key body between the BEGIN and END lines", ("PRIVATE KEY",),
             r"(-----BEGIN[A-Z0-9 ]{0,20}PRIVATE KEY(?: BLOCK)?-----)(?s:.*?(-----END[A-Z0-9 ]"
             r"{0,20}PRIVATE KEY(?: BLOCK)?-----)|.*)",
             "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4Z\n"
             "-----END RSA PRIVATE KEY-----"),
    Detector("jwt", "JSON Web Tokens (`eyJ....eyJ....sig`), whole", ("eyJ",),
             r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){1,4}",
             "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    Detector("auth_scheme", "`Bearer ...` and `Basic ...` credentials (also lower-case; the "
             "word stays; the credential must look random: 8 characters or more with a "
             "digit, mixed case or `=` padding)", ("earer", "asic"),
             r"((?<![A-Za-z0-9_])[Bb](?:earer|asic)[ \t]+)"
             r"(?=[A-Za-z0-9._~+/-]*[0-9]|[A-Za-z0-9._~+/-]*[a-z][A-Za-z0-9._~+/-]*[A-Z]"
             r"|[A-Za-z0-9._~+/-]*[A-Z][A-Za-z0-9._~+/-]*[a-z]|[A-Za-z0-9._~+/-]{8,}=)"
             r"[A-Za-z0-9._~+/-]{8,}=*",
             "Bearer abc123def456ghi789"),
    Detector("aws_access_key_id", "AWS access key ids (`AKIA...`, `ASIA...`, `ABIA...`, "
             "`ACCA...`): the 16 characters after the prefix", ("IA", "ACCA"),
             r"(A(?:KIA|SIA|BIA|CCA))(?<![A-Za-z0-9]A[A-Z]{3})[A-Z0-9]{16}" + _TOKEN_END,
             "AKIAIOSFODNN7EXAMPLE"),
    Detector("github_token", "GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, "
             "`github_pat_`)", ("gh", "github"),
             r"(g(?<![A-Za-z0-9]g)(?:h[pousr]_|ithub_pat_))[A-Za-z0-9_]{20,}",
             "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    Detector("gitlab_token", "GitLab personal access tokens (`glpat-`)", ("glpat-",),
             r"(glpat-)(?<![A-Za-z0-9]glpat-)[A-Za-z0-9_-]{20,}", "glpat-xXxXxXxXxXxXxXxXxXxX"),
    Detector("slack_token", "Slack tokens (`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`, "
             "`xapp-`)", ("xox", "xapp-"),
             r"(x(?<![A-Za-z0-9]x)(?:ox[abposr]|app)-)[A-Za-z0-9-]{10,}",
             "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    Detector("slack_webhook", "Slack webhook URLs (`hooks.slack.com/services/...`): the "
             "path after it", ("hooks.slack.com/",),
             r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_-]{10,}",
             "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
    Detector("stripe_key", "Stripe secret and restricted keys (`sk_live_`, `rk_live_`, "
             "`sk_test_`, `rk_test_`)", ("k_live_", "k_test_"),
             r"(k_(?:live|test)_)(?<=[sr]k_live_|[sr]k_test_)"
             r"(?<![A-Za-z0-9][sr]k_live_)(?<![A-Za-z0-9][sr]k_test_)[A-Za-z0-9]{16,}",
             "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    Detector("stripe_webhook_secret", "Stripe webhook signing secrets (`whsec_`)",
             ("whsec_",), r"(whsec_)(?<![A-Za-z0-9]whsec_)[A-Za-z0-9]{20,}",
             "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    Detector("google_api_key", "Google API keys (`AIza...`)", ("AIza",),
             r"(AIza)(?<![A-Za-z0-9]AIza)[A-Za-z0-9_-]{35}" + _TOKEN_END,
             "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"),
    Detector("npm_token", "npm access tokens (`npm_`)", ("npm_",),
             r"(npm_)(?<![A-Za-z0-9]npm_)[A-Za-z0-9]{36}" + _TOKEN_END,
             "npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"),
    Detector("pypi_token", "PyPI upload tokens (`pypi-AgE...`)", ("pypi-",),
             r"(pypi-)(?<![A-Za-z0-9]pypi-)AgE[A-Za-z0-9_-]{40,}",
             "pypi-AgEIcHlwaS5vcmcCJGE4ZjY5ZTQ3LTk3ZDEtNDQ3Zi1hYjQ4LWI1ODhjZjY0ZDFiNQ"),
    Detector("llm_api_key", "OpenAI and Anthropic API keys (`sk-...`, `sk-proj-...`, "
             "`sk-ant-...`; 32 characters or more)", ("sk-",),
             r"(sk-)(?<![A-Za-z0-9_-]sk-)[A-Za-z0-9_-]{32,}",
             "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78"),
    Detector("url_userinfo", "credentials in URLs and DSNs (`scheme://user:password@host` "
             "becomes `scheme://REDACTED:REDACTED@host`, as the semantic conventions say "
             "for `url.full`; a bare `user@` too, as OpenTelemetry's own `redact_url`)",
             ("@",),
             r"://(?<=[A-Za-z0-9]://)[^\s/?#]+@",
             "postgresql://admin:s3cretPW@db.internal:5432/prod"),
    Detector("url_query", "values of URL query parameters the semantic conventions call "
             "sensitive (`AWSAccessKeyId`, `Signature`, `sig`, `X-Goog-Signature`) and the "
             "other signing ones (`X-Amz-Signature`, `X-Amz-Credential`, "
             "`X-Amz-Security-Token`, `X-Goog-Credential`): `REDACTED`", ("=",), "",
             "https://bucket.s3.amazonaws.com/k?AWSAccessKeyId=AKIDX&Signature=abc%2Bdef"),
    Detector("named_pairs", "`name=value`, `name: value`, `'name': 'value'` inside text, "
             "when the name is secret by the `redact` rules (`password=hunter2`, "
             "`\"api_key\": \"...\"`, `Authorization: Bearer ...`); `REDACTED` in a URL "
             "query", ("=", ":"), "", "user=bob password=hunter2"),
)

DETECTOR_NAMES: tuple[str, ...] = tuple(d.name for d in DETECTORS)

#: The coarse gate: every match of a row contains one of its keys here, so a text without
#: any of them skips the rows' triggers altogether (most values hold none of them).
NEEDS: dict[str, tuple[str, ...]] = {
    "private_key": ("-",), "jwt": ("eyJ",), "auth_scheme": ("earer", "asic"),
    "aws_access_key_id": ("A",), "github_token": ("_",), "gitlab_token": ("-",),
    "slack_token": ("-",), "slack_webhook": ("hooks.slack",), "stripe_key": ("_",),
    "stripe_webhook_secret": ("_",), "google_api_key": ("A",), "npm_token": ("_",),
    "pypi_token": ("-",), "llm_api_key": ("-",), "url_userinfo": ("@",),
}

#: Query parameters whose value is a credential whatever ``redact`` says: the semantic
#: conventions' list (url.full, url.query) and the other presigned-URL signatures.
QUERY_KEYS = frozenset(key.lower() for key in (
    "AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature",
    "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "X-Goog-Credential",
))

#: Every key of ``QUERY_KEYS`` contains one of these (lower case).
_QUERY_LITERALS = ("sig", "awsaccesskeyid", "credential", "token")
assert all(any(lit in key for lit in _QUERY_LITERALS) for key in QUERY_KEYS)

# The pair scan: from a separator, the name is read backwards (on the reversed text:
# optional blanks, an optional closing quote, then the name), the value forwards.
_NAME_BEFORE = re.compile(r"[ \t]*['\"]?([\w.-]{1,64})")
_NAME_CHARS = re.compile(r"[\w.-]{0,64}")  # on the reversed text: the name's start
#: After a literal: the rest of the name (atomic: no backtracking into it), the separator.
_REST_OF_NAME = re.compile(r"(?=([\w.-]{0,64}))\1['\"]?[ \t]*[=:]")
_VALUE_AFTER = re.compile(
    r"""[ \t]*((?:(?i:bearer|basic|digest|token)[ \t]+)?(?:"""
    r"""b?'(?:[^'\\\n]|\\.)*'?|b?"(?:[^"\\\n]|\\.)*"?"""  # quoted, also cut short
    r"""|\([^()]*\)?|\[[^\[\]]*\]?|\{[^{}]*\}?|<[^<>]*>?"""  # one level of brackets
    r"""|[^\s&,;'"<>()\[\]{}]+))""")
_SHOWN_VALUES = frozenset({"None", "True", "False"})  # as for secret-named parameters
_QUERY_STARTS = frozenset("?&")


def compile_value_patterns(patterns: Sequence[str]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


class Scrubber:
    """Replaces secrets inside a text, under one configuration. Never raises on text."""

    def __init__(self, is_secret_name: Callable[[str], bool] | None,
                 value_patterns: Sequence[re.Pattern[str]] = (),
                 disabled: Sequence[str] = (),
                 name_patterns: Sequence[str] | None = None) -> None:
        """``is_secret_name``: the ``redact`` name rule; ``name_patterns``: its regexes,
        read for the pair scan's gate (None: no gate, every separator is looked at)."""
        off = set(DETECTOR_NAMES) if "all" in disabled else set(disabled)
        #: coarse key -> the rows it gates: (triggers, regex, replacement)
        self._groups: dict[str, list[tuple[tuple[str, ...], re.Pattern[str], str]]] = {}
        for detector in DETECTORS:
            if detector.name in off or not detector.pattern:
                continue
            compiled = re.compile(detector.pattern)
            if detector.name == "url_userinfo":
                replacement = "://" + URL_MARKER + ":" + URL_MARKER + "@"
            else:
                # group 1: a prefix that stays; group 2: a suffix that stays (PEM's END)
                replacement = ((r"\g<1>" if compiled.groups else "") + MARKER
                               + (r"\g<2>" if compiled.groups > 1 else ""))
            for need in NEEDS[detector.name]:
                self._groups.setdefault(need, []).append(
                    (detector.triggers, compiled, replacement))
        self._values = tuple(value_patterns)
        self._secret_name = None if "named_pairs" in off else is_secret_name
        self._query = "url_query" not in off
        self._pairs = self._query or self._secret_name is not None
        names: tuple[str, ...] | None = ()  # no secret names: only the query keys' literals
        if self._secret_name is not None:
            names = None if name_patterns is None else required_literals(name_patterns)
        if names is not None and self._query:
            names = _minimal((*names, *_QUERY_LITERALS))
        self._names = names
        self._needs = tuple(self._groups)
        self._clean: set[int] = set()
        self.active = bool(self._groups or self._values or self._pairs)

    def scrub(self, text: str) -> str:
        """``text`` with every secret found replaced.

        Values recur (the same URL, headers, names), so the hashes of texts found clean
        are remembered: such a text costs one hash and one set lookup the next time. Only
        hashes, and only of clean texts, are kept: no secret is held. A secret text
        colliding with a clean one's 64-bit keyed hash is not a practical concern."""
        if len(text) < _CACHED_FROM:
            if (len(text) < SHORTEST_SECRET and "=" not in text and ":" not in text
                    and not self._values):
                return text  # 'alice', '42': nothing to find (``Renderer`` checks first)
            return self._scan(text)
        key = hash(text)
        if key in self._clean:
            return text
        out = self._scan(text)
        if out is text:
            if len(self._clean) >= _CLEAN_MAX:
                self._clean.clear()
            self._clean.add(key)
        return out

    def _scan(self, text: str) -> str:
        if len(text) >= SHORTEST_SECRET:
            for need in self._needs:  # ``in``: a C substring search
                if need in text:
                    for triggers, pattern, replacement in self._groups[need]:
                        for trigger in triggers:
                            if trigger in text:
                                text = pattern.sub(replacement, text)
                                break
        for pattern in self._values:
            text = pattern.sub(_replace_user_match, text)
        if self._pairs and ("=" in text or ":" in text):
            candidates = (self._separators(text) if self._names is None
                          else self._named(text))
            if candidates:
                text = self._replace_pairs(text, candidates)
        return text

    def _named(self, text: str) -> list[tuple[int, int, str]]:
        """Pairs found from the places where a secret-looking name's literal occurs (rare
        in ordinary text): ``(separator position, name position, name)``."""
        lower = text.lower()
        found: dict[int, tuple[int, int, str]] = {}
        reverse: str | None = None
        for literal in self._names or ():
            if literal not in lower:  # ``in`` costs a third of a ``find`` call
                continue
            at = lower.find(literal)
            while at >= 0:
                after = _REST_OF_NAME.match(text, at + len(literal))
                if after is not None:
                    if reverse is None:
                        reverse = text[::-1]
                    before = _NAME_CHARS.match(reverse, len(text) - at)
                    begin = at - (before.end() - before.start()) if before else at
                    sep = after.end() - 1
                    found[sep] = (sep, begin, text[begin:after.end(1)])
                at = lower.find(literal, at + 1)
        return sorted(found.values())

    def _separators(self, text: str) -> list[tuple[int, int, str]]:
        """Every ``=``/``:`` with the name before it (no gate: a name regex of the user's
        has no literal every match needs)."""
        reverse = text[::-1]
        size = len(text)
        found: list[tuple[int, int, str]] = []
        for at in _positions(text):
            named = _NAME_BEFORE.match(reverse, size - at)
            if named is not None:
                found.append((at, size - named.end(), named.group(1)[::-1]))
        return found

    def _replace_pairs(self, text: str, candidates: list[tuple[int, int, str]]) -> str:
        pieces: list[str] = []
        done = 0  # text[:done] is in pieces
        for at, start, raw_name in candidates:
            if at < done:
                continue  # inside a value already replaced
            if text[at] == ":" and (text.startswith("//", at + 1) or text.startswith(":", at + 1)
                                    or (at and text[at - 1] == ":")):
                continue  # scheme://, a::b
            name = raw_name.lstrip(".-")  # --password=...
            if not name or not (name[0].isalpha() or name[0] == "_"):
                continue
            equals = text[at] == "="
            in_query = equals and start > 0 and text[start - 1] in _QUERY_STARTS
            secret_query = self._query and equals and name.lower() in QUERY_KEYS
            if not secret_query and (self._secret_name is None
                                     or not self._secret_name(name)):
                continue
            value = _VALUE_AFTER.match(text, at + 1)
            if value is None:
                continue
            shown = value.group(1)
            if shown in _SHOWN_VALUES or shown.startswith(("[REDACTED]", "'[REDACTED]'")):
                continue
            marker = URL_MARKER if in_query else MARKER
            if shown[:1] in ("'", '"') or shown[:2] in ("b'", 'b"'):
                quote = shown[1] if shown[0] == "b" else shown[0]
                marker = quote + marker + quote
            pieces.append(text[done:value.start(1)])
            pieces.append(marker)
            done = value.end(1)
        if not pieces:
            return text
        pieces.append(text[done:])
        return "".join(pieces)


def required_literals(patterns: Sequence[str]) -> tuple[str, ...] | None:
    """Lower-case strings one of which every text matching any of ``patterns`` (as
    case-insensitive ``re.search``) contains, or None when one pattern has none.

    The pair scan's gate: a text in which no secret-looking name occurs cannot hold a
    secret-named pair, and a few substring tests on ``text.lower()`` cost less than
    looking at each ``=``/``:``. Read from the regex parser's tree (``password`` ->
    ``password``; ``(?:pass|pwd)`` -> ``pass``, ``pwd``; ``api[-_]?key`` -> ``api``)."""
    try:
        try:
            from re import _parser as parser  # type: ignore[attr-defined]
        except ImportError:  # 3.10
            import sre_parse as parser
        found: list[str] = []
        for pattern in patterns:
            options = _literal_options(list(parser.parse(pattern).data))
            if options is None:
                return None
            found += options
    except Exception:  # a parser this code does not know: no gate, still correct
        return None
    return _minimal(found)


def _minimal(literals: Sequence[str]) -> tuple[str, ...]:
    """Without those containing another ("password" needs no test when "pass" has one)."""
    return tuple(sorted({f for f in literals if not any(o != f and o in f for o in literals)}))


def _literal_options(items: list[tuple[object, object]]) -> list[str] | None:
    """The best set of required strings of one parsed sequence (see above)."""
    best: list[str] | None = None
    current = [""]

    def close() -> None:
        nonlocal best, current
        if min(map(len, current)) >= 2 and (best is None or
                                            min(map(len, current)) > min(map(len, best))):
            best = [c.lower() for c in current]
        current = [""]

    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            current = [c + chr(arg) for c in current]  # type: ignore[arg-type]
        elif name in ("ASSERT", "ASSERT_NOT", "AT"):
            continue  # zero-width: the literals around it stay adjacent
        elif name == "BRANCH" or name == "SUBPATTERN":
            branches = arg[1] if name == "BRANCH" else [arg[-1]]  # type: ignore[index]
            exact = [_exact(list(branch)) for branch in branches]
            if all(e is not None for e in exact) and len(current) * len(exact) <= 16:
                current = [c + e for c in current for e in exact if e is not None]
                continue
            close()
            inner = [_literal_options(list(branch)) for branch in branches]
            if all(i is not None for i in inner):
                merged = [x for i in inner if i is not None for x in i]
                if best is None or min(map(len, merged)) > min(map(len, best)):
                    best = merged
        else:
            close()
    close()
    return best


def _exact(items: list[tuple[object, object]]) -> str | None:
    """The one string a parsed sequence of literals matches, or None."""
    out = ""
    for op, arg in items:
        if str(op) != "LITERAL":
            return None
        out += chr(arg)  # type: ignore[arg-type]
    return out


def _positions(text: str) -> list[int]:
    """Where ``=`` and ``:`` are, in order (``str.find`` jumps: C speed on long text)."""
    found: list[int] = []
    for sep in "=:":
        at = text.find(sep)
        while at >= 0:
            found.append(at)
            at = text.find(sep, at + 1)
    found.sort()
    return found


def _replace_user_match(match: re.Match[str]) -> str:
    """A user's value pattern: its first group if it has one, else the whole match."""
    if match.re.groups and match.group(1) is not None:
        whole = match.group(0)
        start = match.start(1) - match.start(0)
        end = match.end(1) - match.start(0)
        return whole[:start] + MARKER + whole[end:]
    return MARKER
