"""pytest set-up: the example's `campaign_events` module and the test harness of clients/python
(a real Herald and redis-server) on the import path."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[2] / "clients" / "python" / "tests")]

from harness import herald, redis, redis_url, tmp_root  # noqa: E402, F401  (fixtures)
