"""The account and task flow, written against the Python client generated from the spec.

Run by tests/clients/run.sh with the generated package `keel_client` on PYTHONPATH and the
server at $KEEL_URL; mail is read from the maildev API at $MAILDEV_URL.
"""

import base64
import hashlib
import hmac
import os
import re
import struct
import sys
import time
import uuid

import httpx
from keel_client import AuthenticatedClient, Client
from keel_client.api.auth import (
    auth_login,
    auth_logout,
    auth_mfa_totp_confirm,
    auth_mfa_totp_setup,
    auth_mfa_verify,
    auth_refresh,
    auth_register,
    auth_verify_email,
)
from keel_client.api.tasks import tasks_status, tasks_test_task
from keel_client.api.users import users_list, users_me
from keel_client.models import (
    LoginForm,
    MfaCodeRequest,
    MfaVerifyRequest,
    Problem,
    RecoveryCodes,
    RefreshRequest,
    RegisterRequest,
    TaskInfo,
    TestTaskRequest,
    TokenRequest,
    TokenResponse,
    TotpSetupRequest,
    TotpSetupResponse,
    User,
    UserPage,
)

BASE = os.environ["KEEL_URL"]
MAILDEV = os.environ["MAILDEV_URL"]


def wait_for_token(address: str) -> str:
    deadline = time.time() + 15
    while time.time() < deadline:
        for message in httpx.get(f"{MAILDEV}/api/email").json():
            if any(to["address"] == address for to in message["to"]):
                match = re.search(r"verify-email\?token=([A-Za-z0-9_-]+)", message["text"])
                if match:
                    return match.group(1)
        time.sleep(0.2)
    raise AssertionError(f"no verification mail for {address}")


def totp(secret: str, step: int) -> str:
    """RFC 6238 (SHA-1, 6 digits, 30 s), as an authenticator app computes it."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[19] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 1_000_000:06d}"


def main() -> None:
    tag = uuid.uuid4().hex[:12]
    email, username, password = f"py-{tag}@example.com", f"py{tag}", "PythonClient123!"
    client = Client(base_url=BASE)

    created = auth_register.sync_detailed(
        client=client, body=RegisterRequest(email=email, username=username, password=password)
    )
    assert created.status_code == 201, created.content
    assert isinstance(created.parsed, User) and created.parsed.email == email

    refused = auth_register.sync_detailed(
        client=client, body=RegisterRequest(email=email, username=username, password=password)
    )
    assert refused.status_code == 409 and isinstance(refused.parsed, Problem), refused.content
    assert refused.parsed.code == "email_already_exists"

    verified = auth_verify_email.sync_detailed(client=client, body=TokenRequest(token=wait_for_token(email)))
    assert verified.status_code == 200 and verified.parsed.verified is True, verified.content

    login = auth_login.sync_detailed(client=client, body=LoginForm(username=email, password=password))
    assert login.status_code == 200 and isinstance(login.parsed, TokenResponse), login.content
    tokens = login.parsed
    authed = AuthenticatedClient(base_url=BASE, token=tokens.access_token)

    me = users_me.sync_detailed(client=authed)
    assert me.status_code == 200 and me.parsed.username == username, me.content

    page = users_list.sync_detailed(client=authed, page=1, size=5)
    assert page.status_code == 200 and isinstance(page.parsed, UserPage), page.content
    assert page.parsed.metadata.total >= 1

    task = tasks_test_task.sync_detailed(client=authed, body=TestTaskRequest(message="from python"))
    assert task.status_code == 202, task.content
    deadline = time.time() + 15
    while True:
        status = tasks_status.sync_detailed(task.parsed.task_id, client=authed)
        assert status.status_code == 200 and isinstance(status.parsed, TaskInfo), status.content
        if status.parsed.status.value == "SUCCESS":
            assert status.parsed.result["message"] == "from python"
            break
        assert time.time() < deadline, f"task stuck in {status.parsed.status}"
        time.sleep(0.2)

    refreshed = auth_refresh.sync_detailed(client=client, body=RefreshRequest(refresh_token=tokens.refresh_token))
    assert refreshed.status_code == 200 and refreshed.parsed.refresh_token != tokens.refresh_token
    replay = auth_refresh.sync_detailed(client=client, body=RefreshRequest(refresh_token=tokens.refresh_token))
    assert replay.status_code == 401 and replay.parsed.code == "token_invalid", replay.content

    # The replay ended that session; log in again and log out properly.
    again = auth_login.sync_detailed(client=client, body=LoginForm(username=username, password=password))
    authed = AuthenticatedClient(base_url=BASE, token=again.parsed.access_token)
    out = auth_logout.sync_detailed(client=authed)
    assert out.status_code == 200, out.content
    after = users_me.sync_detailed(client=authed)
    assert after.status_code == 401 and after.parsed.code == "session_revoked", after.content

    # Two-factor sign-in: set up, confirm with a code, then sign in in two steps.
    signed_in = auth_login.sync_detailed(client=client, body=LoginForm(username=email, password=password))
    authed = AuthenticatedClient(base_url=BASE, token=signed_in.parsed.access_token)
    setup = auth_mfa_totp_setup.sync_detailed(client=authed, body=TotpSetupRequest(password=password))
    assert setup.status_code == 200 and isinstance(setup.parsed, TotpSetupResponse), setup.content
    step = int(time.time()) // 30
    confirmed = auth_mfa_totp_confirm.sync_detailed(
        client=authed, body=MfaCodeRequest(code=totp(setup.parsed.secret, step))
    )
    assert confirmed.status_code == 200 and isinstance(confirmed.parsed, RecoveryCodes), confirmed.content
    assert len(confirmed.parsed.recovery_codes) == 10
    me = users_me.sync_detailed(client=authed)
    assert me.parsed.mfa_enabled is True, me.content
    first = auth_login.sync_detailed(client=client, body=LoginForm(username=email, password=password))
    assert first.status_code == 401 and isinstance(first.parsed, Problem), first.content
    assert first.parsed.code == "mfa_required" and first.parsed.mfa_token, first.content
    # A code serves once: the next step's code (accepted for clock drift).
    second = auth_mfa_verify.sync_detailed(
        client=client,
        body=MfaVerifyRequest(mfa_token=first.parsed.mfa_token, code=totp(setup.parsed.secret, step + 1)),
    )
    assert second.status_code == 200 and isinstance(second.parsed, TokenResponse), second.content
    final = users_me.sync_detailed(client=AuthenticatedClient(base_url=BASE, token=second.parsed.access_token))
    assert final.status_code == 200 and final.parsed.email == email, final.content
    print("python client scenario: ok")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"python client scenario FAILED: {e}", file=sys.stderr)
        raise
