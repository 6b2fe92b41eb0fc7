"""What the page and API tests (test_designer.py, test_inbox_pages.py, test_manage.py, test_records.py,
test_api.py) share: a person's logged-in browser session and a bearer-token API caller."""

from __future__ import annotations

import re

PASSWORD = "s3cret-pass"


class Session:
    """One person's browser session: a test client, logged in unless ``username`` is None, that sends
    the session's CSRF token with every form."""

    def __init__(self, app, username: str | None = None) -> None:
        self.client = app.test_client()
        if username:
            answer = self.post("/login", {"username": username, "password": PASSWORD})
            assert answer.status_code == 302, answer.get_data(as_text=True)

    def token(self) -> str:
        with self.client.session_transaction() as session:
            if "csrf_token" in session:
                return session["csrf_token"]
        page = self.client.get("/login").get_data(as_text=True)
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def get(self, path: str, **kw):
        return self.client.get(path, **kw)

    def html(self, path: str) -> str:
        answer = self.client.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.get_data(as_text=True)[:500])
        return answer.get_data(as_text=True)

    def post(self, path: str, data: dict | None = None, **kw):
        return self.client.post(path, data={**(data or {}), "csrf_token": self.token()}, **kw)


class Api:
    """A logged-in API caller: bearer token from POST /auth/token; bodies are JSON."""

    def __init__(self, client, username: str) -> None:
        self.client = client
        answer = client.post("/api/v1/auth/token", json={"username": username, "password": PASSWORD})
        assert answer.status_code == 201, answer.get_json()
        self.headers = {"Authorization": f"Bearer {answer.get_json()['token']}"}

    def get(self, path: str, **kw):
        return self.client.get(f"/api/v1{path}", headers=self.headers, **kw)

    def post(self, path: str, body: dict | None = None):
        return self.client.post(f"/api/v1{path}", headers=self.headers, json=body or {})

    def patch(self, path: str, body: dict):
        return self.client.patch(f"/api/v1{path}", headers=self.headers, json=body)

    def ok(self, answer, status: int = 200) -> dict:
        assert answer.status_code == status, answer.get_json()
        return answer.get_json()
