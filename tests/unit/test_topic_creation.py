"""What a CreateTopics answer means to ``ensure_topics``: created, made meanwhile, refused."""

from __future__ import annotations

import pytest
from aiokafka.errors import InvalidConfigurationError, TopicAlreadyExistsError

from clm_infra.kafka import _created


def test_the_created_topics_are_listed_and_one_made_meanwhile_is_not_an_error() -> None:
    answer = [
        ("t.events", 0, None),
        ("t.lifecycle", TopicAlreadyExistsError.errno, "Topic 't.lifecycle' already exists."),
        ("t.dlq", 0, None),
    ]
    assert _created(answer) == ["t.events", "t.dlq"]


def test_a_refused_topic_raises_naming_it() -> None:
    answer = [
        ("t.events", 0, None),
        ("t.dlq", InvalidConfigurationError.errno, "Invalid value -2 for retention.ms"),
    ]
    with pytest.raises(InvalidConfigurationError, match=r"t\.dlq: Invalid value -2"):
        _created(answer)
