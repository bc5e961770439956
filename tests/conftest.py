import os

import pytest
import torch

# Serving compiles imported models' decode step in a background thread (Settings.compiled_decode): a minute and
# more of CPU per model structure on a cold compile cache, which on CI's two cores would slow every test that
# serves an imported model. Off for the suite; tests/models/test_static_decode.py and the runtime test there
# turn it on where it is what they test.
os.environ.setdefault("LIFELONG_COMPILED_DECODE", "false")

from models import HybridLM, ModelConfig


@pytest.fixture
def tiny_model() -> HybridLM:
    torch.manual_seed(0)
    model = HybridLM(ModelConfig.preset("tiny")).eval()
    # Non-zero biases and norm scales, so a wrongly wired parameter cannot hide behind a zero init.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.endswith("a_param"):
                param.add_(torch.randn_like(param) * 0.05)
    return model


# A failed test's report ends with the tail of each log its served deployment wrote: a failure seen once in
# CI (a 500, a wrong status) can then be read there, after the deployment's temporary folder is gone.
LOG_TAIL_LINES = 60


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    from bench.deployment import Deployment

    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Deployment):
                for log in sorted(value.logs.glob("*.log")):
                    lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                    report.sections.append((f"{value.name} deployment's {log.name}, last lines", "\n".join(lines)))
    return report
