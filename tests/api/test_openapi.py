"""The OpenAPI document is valid and complete, and ``/api/docs`` loads in Chromium with
no request leaving 127.0.0.1 (Swagger UI's files come with a package, not a CDN)."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests
from openapi_spec_validator import validate

from .conftest import Studio


def test_the_document_validates(embedded: Studio) -> None:
    r = requests.get(embedded.url + "/api/openapi.json", timeout=10)
    assert r.status_code == 200
    spec = r.json()
    validate(spec)
    paths = spec["paths"]
    for path in ("/v1/workflows", "/v1/workflows/{name}", "/v1/quote", "/v1/assets", "/v1/assets/{asset_id}",
                 "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/cancel",
                 "/v1/jobs/{job_id}/webhook", "/v1/balance", "/v1/ledger", "/v1/admin/users", "/v1/admin/codes",
                 "/v1/admin/nodes"):
        assert path in paths, path
    assert spec["servers"] == [{"url": "/api"}]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    submit = paths["/v1/jobs"]["post"]
    assert {"201", "200", "402", "409", "429"} <= set(submit["responses"])
    assert any(p["name"] == "idempotency-key" for p in submit["parameters"])


def test_docs_load_offline(embedded: Studio, browser: object) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    hosts: list[str] = []
    page.on("request", lambda request: hosts.append(urlsplit(request.url).hostname or request.url))
    try:
        page.goto(embedded.url + "/api/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
        assert "AIGC Studio API" in page.inner_text(".swagger-ui .info .title")
        page.wait_for_selector("#operations-jobs-create_job_v1_jobs_post", timeout=30_000)
    finally:
        page.close()
    assert hosts and set(hosts) == {"127.0.0.1"}, sorted(set(hosts))

