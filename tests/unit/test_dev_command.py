"""`ferry-dev`, the development command: it logs as `ferry` does, so the SDKs' request logs (with SAS query
strings) stay out of the demo's output."""

from __future__ import annotations

import logging
from pathlib import Path

from ferry_dev.cli import main

ROOT = Path(__file__).resolve().parents[2]


SDK_LOGGERS = ("azure", "urllib3", "kubernetes")


def test_the_dev_command_keeps_the_sdk_request_logs_quiet_and_checks_the_crds() -> None:
    for sdk in SDK_LOGGERS:
        logging.getLogger(sdk).setLevel(logging.NOTSET)  # as a fresh process has them, whatever ran before
    assert main(["crds", "--check", "--out", str(ROOT / "crds")]) == 0
    for sdk in (*SDK_LOGGERS, "azure.core.pipeline.policies.http_logging_policy"):
        assert logging.getLogger(sdk).getEffectiveLevel() >= logging.WARNING, sdk
