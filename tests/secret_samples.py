"""Realistic (made-up) secrets of each built-in redaction rule, and near misses.

Built at import from a seeded generator, so no literal key sits in the repository for
scanners to flag, and the tests are the same on every run.
"""

from __future__ import annotations

import base64
import random
import string

_rng = random.Random(20261206)
ALNUM = string.ascii_letters + string.digits
UPPER_B32 = string.ascii_uppercase + "234567"
HEX = "0123456789abcdef"


def _s(alphabet: str, n: int) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_jwt = (_b64url(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64url(b'{"sub":"1234567890","name":"A B","iat":1516239022}')
        + "." + _s(ALNUM + "_-", 43))
_pem = ("-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(_s(ALNUM + "+/", 64) for _ in range(4))
        + "\n-----END RSA PRIVATE KEY-----")

#: rule id -> a secret the rule must find (the whole string is the secret).
SAMPLES: dict[str, str] = {
    "private-key": _pem,
    "anthropic-admin-api-key": "sk-ant-admin01-" + _s(ALNUM + "_-", 93) + "AA",
    "anthropic-api-key": "sk-ant-api03-" + _s(ALNUM + "_-", 93) + "AA",
    "openai-api-key": "sk-proj-" + _s(ALNUM + "_-", 74) + "T3BlbkFJ" + _s(ALNUM + "_-", 74),
    "aws-access-token": "AKIA" + _s(UPPER_B32, 16),
    "github-app-token": "ghs_" + _s(ALNUM, 36),
    "github-fine-grained-pat": "github_pat_" + _s(ALNUM + "_", 82),
    "github-oauth": "gho_" + _s(ALNUM, 36),
    "github-pat": "ghp_" + _s(ALNUM, 36),
    "github-refresh-token": "ghr_" + _s(ALNUM, 36),
    "gitlab-pat-routable": "glpat-" + _s(ALNUM, 36) + ".01" + _s(HEX, 7),
    "gitlab-pat": "glpat-" + _s(ALNUM, 20),
    "gitlab-ptt": "glptt-" + _s(HEX, 40),
    "gitlab-rrt": "GR1348941" + _s(ALNUM, 20),
    "gitlab-runner-authentication-token-routable": "glrt-t1_" + _s(ALNUM, 30) + ".01" + _s(HEX, 7),
    "gitlab-runner-authentication-token": "glrt-" + _s(ALNUM, 20),
    "gitlab-deploy-token": "gldt-" + _s(ALNUM, 20),
    "slack-app-token": "xapp-1-A" + _s(UPPER_B32, 10) + "-" + _s("0123456789", 13) + "-" + _s(HEX, 64),
    "slack-bot-token": "xoxb-" + _s("0123456789", 12) + "-" + _s("0123456789", 13) + "-" + _s(ALNUM, 24),
    "slack-config-access-token": "xoxe.xoxp-1-" + _s(ALNUM, 164),
    "slack-config-refresh-token": "xoxe-1-" + _s(ALNUM, 146),
    "slack-legacy-bot-token": "xoxb-" + _s("0123456789", 9) + "-" + _s(ALNUM, 24),
    "slack-legacy-token": "xoxs-" + "-".join(_s("0123456789", 10) for _ in range(3)) + "-" + _s(HEX, 64),
    "slack-legacy-workspace-token": "xoxa-2-" + _s(ALNUM, 40),
    "slack-user-token": "xoxp-" + "-".join(_s("0123456789", 12) for _ in range(3)) + "-" + _s(HEX, 32),
    "slack-webhook-url": "https://hooks.slack.com/services/T" + _s(UPPER_B32, 8) + "/B" + _s(UPPER_B32, 8) + "/"
    + _s(ALNUM, 24) + _s(ALNUM, 8),
    "gcp-api-key": "AIza" + _s(ALNUM + "_-", 35),
    "jwt": _jwt,
    "authorization-bearer": _s(ALNUM, 40),
}

#: rule id -> how the sample appears in a message (``{}`` is the secret).
CONTEXT: dict[str, str] = {
    "authorization-bearer": "curl -H 'Authorization: Bearer {}' https://api.example.com",
}

#: strings that look close to a secret but are none (no rule may change them).
NEAR_MISSES: tuple[str, ...] = (
    "sk-ant-api03-" + "a" * 92 + "AA",          # one character short
    "sk-proj-" + "a" * 74 + "T3BlbkFX" + "b" * 74,  # wrong marker
    "AKIAIOSFODNN7EXAMPLE",                      # AWS's documentation key (gitleaks' allowlist)
    "AKIA" + "a" * 16,                           # lowercase: not an access key id
    "ghp_" + "a" * 35,                           # one short
    "github_pat_" + "a" * 60,
    "glpat-short",
    "xoxb-123-456",
    "AIza" + "a" * 20,
    "eyJhbGciOi.eyJzdWIi.sig",                   # too short to be a JWT
    "-----BEGIN PUBLIC KEY-----\n" + "A" * 80 + "\n-----END PUBLIC KEY-----",
    "Authorization: Basic dXNlcjpwYXNz",
    "the bearer of bad news",
    "Asia and Akia went to the sky",
    "The keys are on the table; ask them.",
)


def message_text(rule: str) -> str:
    """The sample of ``rule`` inside a sentence."""
    return CONTEXT.get(rule, "here it is: {} (do not share)").format(SAMPLES[rule])
