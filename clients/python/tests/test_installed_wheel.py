"""The package as users get it: the built wheel installed into a fresh virtual environment (no
dependencies, no access to this source tree), imported there, publishing to a real Herald.

The sdist and wheel come from ``$HERALD_PUBLISHER_DIST`` when set (``scripts/test`` builds them
once for ``twine check``), otherwise they are built here with ``python -m build``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
from harness import API_KEY, client, unique, wait_for_interest

PACKAGE_ROOT = Path(__file__).resolve().parents[1]

# Runs inside the fresh venv: import the installed package, publish over HTTP (standard library only).
PUBLISH = """
import sys, herald_publisher
from herald_publisher import HeraldPublisher
assert "site-packages" in herald_publisher.__file__, herald_publisher.__file__
url, key, channel = sys.argv[1:4]
with HeraldPublisher.http(url, api_key=key) as publisher:
    result = publisher.publish({"type": "wheel:installed", "version": herald_publisher.__version__}, channel=channel)
print(result.transport)
"""

CLIENT_WITHOUT_EXTRA = """
from herald_publisher import HeraldConfigError
from herald_publisher.client import HeraldClient
try:
    HeraldClient("ws://127.0.0.1:1/ws")
except HeraldConfigError as e:
    print(e)
"""


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    given = os.environ.get("HERALD_PUBLISHER_DIST")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "build", "--outdir", str(out), str(PACKAGE_ROOT)]
    subprocess.run(build, check=True, capture_output=True)
    return out


def only(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {directory}: {found}"
    return found[0]


def test_the_distributions_hold_the_package_and_nothing_of_the_examples(dist):
    wheel = only(dist, "herald_publisher-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "herald_publisher/__init__.py" in names
    assert "herald_publisher/py.typed" in names
    assert "herald_publisher/client/core.py" in names and "herald_publisher/client/types.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert not [n for n in names if "events" in n or "catalogue" in n or "campaign" in n], names
    sdist = only(dist, "herald_publisher-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert any(m.endswith("/README.md") for m in members)
    assert not [m for m in members if "catalogue" in m or "generate.py" in m], members


def test_the_wheel_installed_in_a_fresh_venv_publishes_to_herald(dist, herald, redis, tmp_path):
    wheel = only(dist, "herald_publisher-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # The package has no required dependencies, so no index is needed.
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-index", "--disable-pip-version-check", str(wheel)],
        check=True,
    )
    channel = unique("wheel")
    with client(herald, channels=[channel]) as subscriber:
        wait_for_interest(redis, "c", channel)
        # Outside the source tree, so only the installed copy can be imported.
        done = subprocess.run(
            [str(python), "-c", PUBLISH, herald.http_url, API_KEY, channel],
            cwd=tmp_path,
            env={"PATH": os.environ.get("PATH", "")},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "http"
        event = subscriber.expect(type="wheel:installed")
        assert event["version"] == "0.1.0"
    # The consumer client imports without its extra, and says which extra to install when used.
    done = subprocess.run(
        [str(python), "-c", CLIENT_WITHOUT_EXTRA],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'herald-publisher[client]'" in done.stdout
