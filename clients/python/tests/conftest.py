"""pytest fixtures; the harness itself is in harness.py."""

from harness import herald, redis, redis_url, tmp_root  # noqa: F401  (fixtures)
