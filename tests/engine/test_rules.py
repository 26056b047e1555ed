"""Unit tests of the engine's rules: states, retries, idempotency, auth, ids, settings, envelopes."""

from __future__ import annotations

import random
import time
import uuid

import jwt
import pytest

from engine.auth import AuthError, PlatformPrincipal, Principal, issue_platform_token, issue_token, verify_token
from engine.broker.base import Envelope
from engine.channels import Priority
from engine.errors import (
    BadRecipientError,
    ConfigurationError,
    PermanentError,
    ProviderDownError,
    RetryableError,
    ThrottledError,
)
from engine.idempotency import KeyProblem, StoredResponse, Verdict, judge, pick_key, request_hash
from engine.ids import format_message_id, new_id, parse_message_id
from engine.relay import build_envelopes
from engine.retries import Action, RetryPolicy
from engine.settings import load_settings
from engine.states import TERMINAL, TRANSITIONS, Status, can_transition
from engine.storage.repository import OutboxRow


class TestStateMachine:
    def test_happy_path_is_allowed(self) -> None:
        assert can_transition(Status.QUEUED, Status.SENDING)
        assert can_transition(Status.SENDING, Status.SENT)
        assert can_transition(Status.SENT, Status.DELIVERED)

    @pytest.mark.parametrize("late", [Status.SENT, Status.SENDING, Status.QUEUED])
    def test_nothing_moves_backwards_from_delivered(self, late: Status) -> None:
        assert not can_transition(Status.DELIVERED, late)

    def test_terminal_states_have_no_exit_but_dlq_replay_and_a_late_hard_bounce(self) -> None:
        for status in TERMINAL - {Status.DEAD, Status.DELIVERED}:
            assert TRANSITIONS[status] == frozenset()
        assert TRANSITIONS[Status.DEAD] == frozenset({Status.QUEUED, Status.EXPIRED})
        assert TRANSITIONS[Status.DELIVERED] == frozenset({Status.BOUNCED})

    def test_every_status_has_a_row(self) -> None:
        assert set(TRANSITIONS) == set(Status)


class TestRetryPolicy:
    policy = RetryPolicy(delays_s=(10.0, 60.0, 300.0), jitter=0.2)

    @pytest.mark.parametrize(("attempt", "base"), [(1, 10.0), (2, 60.0), (3, 300.0)])
    def test_backoff_steps_with_jitter(self, attempt: int, base: float) -> None:
        rng = random.Random(7)
        delays = [self.policy.decide(RetryableError("x"), attempt, rng).delay_s for _ in range(50)]
        assert all(base * 0.8 <= d <= base * 1.2 for d in delays)
        assert len(set(delays)) > 1  # jittered, not lockstep

    def test_exhausted_retries_dead_letter(self) -> None:
        assert self.policy.decide(RetryableError("x"), 4).action is Action.DEAD_LETTER

    def test_retry_after_wins(self) -> None:
        decision = self.policy.decide(ThrottledError("slow", retry_after_s=2.5), 1)
        assert decision.action is Action.RETRY and decision.delay_s == 2.5

    def test_permanent_fails_at_once(self) -> None:
        assert self.policy.decide(PermanentError("no"), 1).action is Action.FAIL

    def test_bad_recipient_is_suppressed(self) -> None:
        decision = self.policy.decide(BadRecipientError("bounce"), 1)
        assert decision.action is Action.FAIL and decision.suppress

    def test_a_round_with_every_provider_down_uses_an_attempt(self) -> None:
        first = self.policy.decide(ProviderDownError("auth"), 1)
        assert first.action is Action.RETRY and not first.refund_attempt
        assert self.policy.decide(ProviderDownError("auth"), 4).action is Action.DEAD_LETTER


class TestIdempotency:
    def test_hash_ignores_key_trace_and_order(self) -> None:
        a = {"channel": "email", "to": {"email": "a@x.io"}, "idempotency_key": "k1", "trace_id": "t"}
        b = {"to": {"email": "a@x.io"}, "channel": "email", "idempotency_key": "k2"}
        assert request_hash(a) == request_hash(b)
        assert request_hash(a) != request_hash({**a, "channel": "sms"})

    def test_the_hash_of_a_body_is_the_one_stored_by_earlier_versions(self) -> None:
        # Keys stored before an upgrade must still replay: the canonical JSON's bytes never change.
        body = {
            "to": {"email": "zoë@example.com"},
            "variables": {"n": 1.5, "big": 10**20, "tiny": 1e-05, "list": [3, "é", None, True]},
            "channel": "email",
            "idempotency_key": "k",
            "trace_id": None,
        }
        assert request_hash(body) == "73eb907da7df7f6f83e789b6519c6dc052698e00b726ad38563262ccd4cd47f6"

    def test_key_from_header_or_body(self) -> None:
        assert pick_key("h", None) == ("h", None)
        assert pick_key(None, "b") == ("b", None)
        assert pick_key("h", "b") == (None, KeyProblem.MISMATCH)
        assert pick_key(None, None) == (None, KeyProblem.MISSING)
        assert pick_key("x" * 256, None) == (None, KeyProblem.TOO_LONG)

    def test_judge(self) -> None:
        stored = StoredResponse("h1", 202, {"message_id": "msg_1"})
        assert judge(None, "h1") is Verdict.NEW
        assert judge(stored, "h1") is Verdict.REPLAY
        assert judge(stored, "h2") is Verdict.CONFLICT


SECRET = "a-test-secret-of-at-least-32-bytes-long"


class TestAuth:
    def test_roundtrip(self) -> None:
        token = issue_token(SECRET, "t_001", scopes=("send", "read"))
        principal = verify_token(SECRET, f"Bearer {token}")
        assert principal.tenant == "t_001" and principal.can("send") and not principal.can("admin")

    @pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer not.a.jwt"])
    def test_rejects_malformed(self, header: str | None) -> None:
        with pytest.raises(AuthError):
            verify_token(SECRET, header)

    def test_platform_token_names_no_tenant(self) -> None:
        principal = verify_token(SECRET, "Bearer " + issue_platform_token(SECRET))
        assert isinstance(principal, PlatformPrincipal) and principal.can("platform") and not principal.can("admin")
        tenant = verify_token(SECRET, "Bearer " + issue_token(SECRET, "t_001", scopes=("admin",)))
        assert isinstance(tenant, Principal) and tenant.can("send") and not tenant.can("platform")

    def test_no_tenant_token_carries_the_platform_scope(self) -> None:
        with pytest.raises(ValueError, match="platform"):
            issue_token(SECRET, "t_001", scopes=("admin", "platform"))
        now = int(time.time())
        forged = {"tenant": "t_001", "scope": "admin platform", "aud": "herald", "exp": now + 60}
        with pytest.raises(AuthError, match="names no tenant"):
            verify_token(SECRET, "Bearer " + jwt.encode(forged, SECRET, algorithm="HS256"))

    def test_rejects_other_secret_and_expired(self) -> None:
        with pytest.raises(AuthError):
            verify_token("another-secret-of-enough-length-0123", "Bearer " + issue_token(SECRET, "t", scopes=("send",)))
        with pytest.raises(AuthError):
            verify_token(SECRET, "Bearer " + issue_token(SECRET, "t", scopes=("send",), ttl_s=-10))


def test_message_ids_roundtrip_and_reject_garbage() -> None:
    mid = new_id()
    assert mid.version == 7
    assert parse_message_id(format_message_id(mid)) == mid
    for bad in ["", "msg_", "msg_zz", "abc", format_message_id(mid)[:-1], "msg_" + "g" * 32]:
        assert parse_message_id(bad) is None


def test_settings_name_the_bad_variable() -> None:
    with pytest.raises(ConfigurationError, match="HERALD_HTTP_PORT"):
        load_settings({"HERALD_HTTP_PORT": "eighty"})
    with pytest.raises(ConfigurationError, match="HERALD_SENDERS"):
        load_settings({"HERALD_SENDERS": "0"})
    s = load_settings({"HERALD_RETRY_DELAYS": "1, 2,3", "HERALD_EMAIL_PROVIDERS": "ses,sendgrid"})
    assert s.retry_delays_s == (1.0, 2.0, 3.0) and s.email_providers == ("ses", "sendgrid")


def test_envelopes_group_by_queue_and_cap_ids() -> None:
    tenant = uuid.uuid4()
    rows = [OutboxRow(i, tenant, uuid.uuid4(), "notifications.low", 2) for i in range(250)]
    rows.append(OutboxRow(999, tenant, uuid.uuid4(), "notifications.high", 0))
    out = build_envelopes(rows, max_ids=100)
    assert [len(e.message_ids) for e in out["notifications.low"]] == [100, 100, 50]
    assert out["notifications.high"][0].priority is Priority.HIGH
    assert all(e.priority is Priority.LOW for e in out["notifications.low"])


def test_envelope_wire_roundtrip() -> None:
    env = Envelope(Priority.HIGH, (uuid.uuid4(), uuid.uuid4()), tenant="t")
    back = Envelope.from_bytes(env.to_bytes(), tenant="t")
    assert back == env
    with pytest.raises(ValueError):
        Envelope.from_bytes(b'{"v": 99, "priority": "high", "ids": []}')
