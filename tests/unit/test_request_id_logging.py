"""Log records made while a request runs carry its request id."""

from __future__ import annotations

import logging

import orjson
import pytest

from clm_infra.logconfig import JsonFormatter
from clm_ingest.observability import REQUEST_ID, OncePerSecond, install_request_id_logging


def test_a_log_line_made_during_a_request_names_it(caplog: pytest.LogCaptureFixture) -> None:
    install_request_id_logging()
    log = logging.getLogger("clm_ingest.test")
    token = REQUEST_ID.set("req-7")
    try:
        with caplog.at_level(logging.INFO, logger="clm_ingest.test"):
            log.info("inside")
    finally:
        REQUEST_ID.reset(token)
    with caplog.at_level(logging.INFO, logger="clm_ingest.test"):
        log.info("outside")
    inside, outside = caplog.records
    assert orjson.loads(JsonFormatter().format(inside))["request_id"] == "req-7"
    assert "request_id" not in orjson.loads(JsonFormatter().format(outside))


def test_429s_are_logged_once_a_second_with_how_many_more_there_were() -> None:
    now = [100.2]
    throttle = OncePerSecond(clock=lambda: now[0])
    assert throttle.first_this_second()
    assert [throttle.first_this_second() for _ in range(5)] == [False] * 5
    now[0] = 101.0
    assert throttle.first_this_second()
    assert throttle.take_suppressed() == 5
    assert throttle.take_suppressed() == 0
