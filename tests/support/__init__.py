"""What tests share, one module a responsibility: Postgres (postgres), waiting with a
deadline (waiting), subprocesses and ports (processes), in-process workers and batch
runners (runners), NiceGUI's simulated user (pages), headless Chromium (browser), network
faults on demand (connections) and the repository's paths (paths). Fixtures stay in the
conftest files; these are plain code, imported as `from tests.support.waiting import
wait_until`."""
