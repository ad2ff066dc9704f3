"""`jobsys up --tls-cert/--tls-key` serves the hub over HTTPS and WSS: a worker PC that
trusts the certificate (`--ca-cert`) registers and gets pushes; one that does not is refused
the connection, with a message that says so."""

from __future__ import annotations

import pathlib
import ssl
import subprocess
from typing import Any

import httpx
import pytest
import trustme

from jobsys import errors, hub_protocol
from jobsys.connect import connect_hub
from jobsys.events import ChannelState
from jobsys.models import DeviceReport
from jobsys.system import JobSystem
from tests.support.processes import free_port, kill_all, spawn_hub
from tests.support.waiting import wait_until


def _answers(url: str, ca: pathlib.Path) -> bool:
    try:
        response = httpx.post(url + hub_protocol.RPC_PATH.format(function="maintain"), json={},
                              verify=ssl.create_default_context(cafile=str(ca)), timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 401


async def test_a_pc_joins_the_hub_over_https_and_wss(db_url: str, tmp_path: pathlib.Path) -> None:
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    authority.cert_pem.write_to_path(str(ca_file))
    port = free_port()
    server = f"https://127.0.0.1:{port}"
    hub: subprocess.Popen[str] = spawn_hub(db_url, tmp_path / "hub", port,
                                           "--tls-cert", str(cert_file), "--tls-key", str(key_file))
    try:
        await wait_until(lambda: hub.poll() is not None or _answers(server, ca_file), timeout_s=60,
                         what="the hub over HTTPS")
        assert hub.poll() is None, (tmp_path / "hub" / "hub.log").read_text()
        async with await JobSystem.connect(db_url) as operator:
            token = (await operator.add_worker_account("pc-tls")).token

            untrusting = await connect_hub(server, token)
            with pytest.raises(errors.TransportError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.register_worker("pc", [DeviceReport(serial="tls-0", simulated=True)])
            await untrusting.close()

            async with await connect_hub(server, token, ca_cert=ca_file) as pc:
                session = await pc.register_worker("pc", [DeviceReport(serial="tls-1", simulated=True)])
                states: list[ChannelState] = []
                events: list[Any] = []
                subscription = await pc.subscribe_worker(session.worker_id, events.append, states.append)
                await wait_until(lambda: ChannelState.SUBSCRIBED in states, what="subscribed over WSS")
                await operator.create_job(target_url="https://example.com/tls", duration_sec=1)
                await wait_until(lambda: any(e.event == "assignment" for e in events), what="a push over WSS")
                assert len(await pc.claim_assignments(session.worker_id, start=True)) == 1
                await subscription.close()
    finally:
        kill_all([hub])
