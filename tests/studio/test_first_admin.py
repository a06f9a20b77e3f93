"""The first start creates the admin from the operator's settings — or says which setting is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..studio_process import start_studio, stop_studio


def test_a_weak_admin_password_from_the_environment_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as raised:
        server = start_studio(tmp_path / "data", log_path=tmp_path / "studio.log",
                              env={"STUDIO_ADMIN_NAME": "admin", "STUDIO_ADMIN_PASSWORD": "admin-password"})
        stop_studio(server)  # only reached if the studio wrongly started
    message = str(raised.value)
    assert "exited with 2" in message
    assert "STUDIO_ADMIN_PASSWORD" in message and "must not contain your user name" in message
    assert "Traceback" not in message
