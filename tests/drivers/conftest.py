"""Fixtures every driver test shares: one set of emulators for the session (``run_fakes``, what
``herald up --fake-providers`` starts), each reset before the test that asks for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import pytest

from drivers.fakes import AllFakes, run_fakes
from drivers.fakes.apns import ApnsEmulator
from drivers.fakes.aws import AwsHandle
from drivers.fakes.base import Emulator
from drivers.fakes.fcm import FcmEmulator
from drivers.fakes.meta import MetaEmulator
from drivers.fakes.sendgrid import SendgridEmulator
from drivers.fakes.smtp import SmtpHandle
from drivers.fakes.twilio import TwilioEmulator

E = TypeVar("E", bound=Emulator)


@pytest.fixture(scope="session")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AllFakes]:
    running = run_fakes(tmp_path_factory.mktemp("fakes"))
    yield running
    running.stop()


@pytest.fixture
def env(fakes: AllFakes) -> dict[str, str]:
    """The settings that point every driver at its emulator (a copy: tests may change it), with every
    emulator reset."""
    fakes.reset()
    return dict(fakes.env)


@pytest.fixture
def aws(fakes: AllFakes) -> AwsHandle:
    fakes.aws.reset()
    return fakes.aws  # type: ignore[no-any-return]


@pytest.fixture
def smtp(fakes: AllFakes) -> SmtpHandle:
    fakes.smtp.reset()
    return fakes.smtp  # type: ignore[no-any-return]


def _reset(running: Any, kind: type[E]) -> E:
    emulator = running.emulator
    assert isinstance(emulator, kind)
    emulator.reset()
    return emulator


@pytest.fixture
def sendgrid_emu(fakes: AllFakes) -> SendgridEmulator:
    return _reset(fakes.sendgrid, SendgridEmulator)


@pytest.fixture
def twilio_emu(fakes: AllFakes) -> TwilioEmulator:
    return _reset(fakes.twilio, TwilioEmulator)


@pytest.fixture
def meta_emu(fakes: AllFakes) -> MetaEmulator:
    return _reset(fakes.meta, MetaEmulator)


@pytest.fixture
def fcm_emu(fakes: AllFakes) -> FcmEmulator:
    return _reset(fakes.fcm, FcmEmulator)


@pytest.fixture
def apns_emu(fakes: AllFakes) -> ApnsEmulator:
    return _reset(fakes.apns, ApnsEmulator)
