"""Fixtures every driver test shares: one set of emulators for the session (``run_fakes``, what
``herald up --fake-providers`` starts), each reset before the test that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drivers.fakes import AllFakes, run_fakes
from drivers.fakes.apns import ApnsEmulator
from drivers.fakes.aws import AwsHandle
from drivers.fakes.fcm import FcmEmulator
from drivers.fakes.meta import MetaEmulator
from drivers.fakes.sendgrid import SendgridEmulator
from drivers.fakes.smtp import SmtpHandle
from drivers.fakes.twilio import TwilioEmulator


@pytest.fixture(scope="session")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AllFakes]:
    running = run_fakes(tmp_path_factory.mktemp("fakes"))
    yield running
    running.stop()


@pytest.fixture
def fake_env(fakes: AllFakes) -> dict[str, str]:
    """The settings that point every driver at its emulator (a copy: tests may change it)."""
    return dict(fakes.env)


@pytest.fixture
def aws(fakes: AllFakes) -> AwsHandle:
    fakes.aws.reset()
    return fakes.aws  # type: ignore[no-any-return]


@pytest.fixture
def smtp(fakes: AllFakes) -> SmtpHandle:
    fakes.smtp.reset()
    return fakes.smtp  # type: ignore[no-any-return]


@pytest.fixture
def sendgrid_emu(fakes: AllFakes) -> SendgridEmulator:
    emulator = fakes.sendgrid.emulator
    assert isinstance(emulator, SendgridEmulator)
    emulator.reset()
    return emulator


@pytest.fixture
def twilio_emu(fakes: AllFakes) -> TwilioEmulator:
    emulator = fakes.twilio.emulator
    assert isinstance(emulator, TwilioEmulator)
    emulator.reset()
    return emulator


@pytest.fixture
def meta_emu(fakes: AllFakes) -> MetaEmulator:
    emulator = fakes.meta.emulator
    assert isinstance(emulator, MetaEmulator)
    emulator.reset()
    return emulator


@pytest.fixture
def fcm_emu(fakes: AllFakes) -> FcmEmulator:
    emulator = fakes.fcm.emulator
    assert isinstance(emulator, FcmEmulator)
    emulator.reset()
    return emulator


@pytest.fixture
def apns_emu(fakes: AllFakes) -> ApnsEmulator:
    emulator = fakes.apns.emulator
    assert isinstance(emulator, ApnsEmulator)
    emulator.reset()
    return emulator
