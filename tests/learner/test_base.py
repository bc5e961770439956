import pytest

from learner.base import learning_config
from learner.online import LearningConfig


def test_agent_learning_settings_default_and_override():
    assert learning_config(None) == LearningConfig()
    assert learning_config({"learning_rate": 3e-4}).learning_rate == 3e-4


@pytest.mark.parametrize("settings, message", [
    ({"lr": 0.1}, "unknown learning settings"),
    ({"trainable": "all"}, "trainable='downstream' only"),  # stored keys would go stale: no re-encoding yet
    ({"learning_rate": -1.0}, "learning_rate >= 0"),
])
def test_bad_agent_learning_settings_are_refused_with_a_reason(settings, message):
    with pytest.raises(ValueError, match=message):
        learning_config(settings)
