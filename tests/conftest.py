"""Test settings (one torch thread, hermetic Prefect and DVC: no network, temp homes) and the shared fixtures;
shared functions and data are in helpers.py."""

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DVC_STUDIO_OFFLINE", "1")
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="focal-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect server for the whole test run (about 20 s to start here)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def git_identity(tmp_path, monkeypatch):
    """A git identity for the test (commits, `dvc exp save` and GTO's tags need one), in a file of its own."""
    cfg = tmp_path / "gitconfig"
    cfg.write_text("[user]\n\tname = focal-test\n\temail = test@localhost\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
