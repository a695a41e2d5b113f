"""``convlog serve`` over HTTP (httpx against a real server subprocess): who gets in,
which hosts and methods are answered, the security headers, escaping, and that every
API answers what the CLI's ``--json`` says."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from conftest import convlog_cmd, running_bus

pytest.register_assert_rewrite("served")  # before the import: it is also a plugin (below)
from served import HOSTILE, Served, run, serve  # noqa: E402

#: The logs and servers (session-wide fixtures, shared with the browser tests).
pytest_plugins = ["served"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def cli_json(*args: str) -> object:
    """``convlog ARGS`` (with ``--json`` or ``--format json`` among them) parsed."""
    result = run(*args)
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


# --------------------------------------------------------------------------- the address and the token


def test_first_line_of_stdout_is_the_address_with_a_random_token(demo_server: Served) -> None:
    """The first line is ``http://127.0.0.1:PORT/?token=…`` with a 256-bit URL-safe token."""
    assert re.fullmatch(rf"http://127\.0\.0\.1:{demo_server.port}/\?token=[A-Za-z0-9_-]{{43}}", demo_server.url)


def test_without_the_token_a_page_says_how_to_get_in(demo_server: Served) -> None:
    """No token, a wrong one in the query, the cookie or the header: 401 with
    ``WWW-Authenticate: Bearer``; pages get a plain page that says where the token is,
    the API a JSON error."""
    with demo_server.anonymous() as client:
        for path in ("/", "/sessions/demo-stream", "/search?q=haiku", "/status", "/api/health",
                     "/static/convlog.css", "/?token=wrong", "/health/", "/api/health?token=wrong"):
            response = client.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith("Bearer")
        page = client.get("/").text
        assert "?token=" in page and "Authorization: Bearer" in page and "first line" in page
        api = client.get("/api/sessions")
        assert api.status_code == 401 and "token" in api.json()["error"]
        assert client.get("/", headers={"Authorization": "Bearer nope"}).status_code == 401
        client.cookies.set(f"convlog_token_{demo_server.port}", "nope")
        assert client.get("/").status_code == 401


def test_a_token_in_the_query_becomes_a_cookie_and_leaves_the_address(demo_server: Served) -> None:
    """``?token=`` answers 303 to the same URL without it (other parameters kept),
    setting an HttpOnly, SameSite=Strict cookie that lets the browser in afterwards."""
    with demo_server.anonymous() as client:
        response = client.get(f"/?sort=id&token={demo_server.token}")
        assert response.status_code == 303
        assert response.headers["location"] == "/?sort=id"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"convlog_token_{demo_server.port}={demo_server.token};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert client.get("/?sort=id").status_code == 200  # the cookie jar sends it now
        elsewhere = client.get(f"{demo_server.base}//evil.example/?token={demo_server.token}")  # stays here
        assert elsewhere.status_code == 303 and elsewhere.headers["location"] == "/evil.example/"
        encoded = client.get(f"/sessions/a%20b%3Fc?token={demo_server.token}")
        assert encoded.headers["location"] == "/sessions/a%20b%3Fc"


def test_the_bearer_header_lets_scripts_in(demo_server: Served) -> None:
    """``Authorization: Bearer TOKEN`` is accepted on pages and API alike."""
    with demo_server.client() as client:
        assert client.get("/").status_code == 200
        assert client.get("/api/sessions").status_code == 200


# --------------------------------------------------------------------------- hosts, methods, headers


def test_a_foreign_host_header_is_refused(demo_server: Served) -> None:
    """DNS rebinding: a request naming another host gets 400, even with the token; the
    loopback names with or without the port are answered."""
    port = demo_server.port
    with demo_server.client() as client:
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}", f"localhost:{port + 1}"):
            assert client.get("/", headers={"Host": host}).status_code == 400, host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
            assert client.get("/", headers={"Host": host}).status_code == 200, host


def test_only_get_and_head_are_answered(demo_server: Served) -> None:
    """A read-only server: POST, PUT, PATCH, DELETE and OPTIONS get 405 with
    ``Allow: GET, HEAD``; HEAD is answered."""
    with demo_server.client() as client:
        for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            for path in ("/", "/api/sessions", "/sessions/demo-stream"):
                response = client.request(method, path)
                assert response.status_code == 405, (method, path)
                assert response.headers["allow"] == "GET, HEAD"
        assert client.head("/").status_code == 200


def test_every_response_carries_the_security_headers(demo_server: Served) -> None:
    """The strict CSP, nosniff and no-referrer on pages, API, static files and every
    refusal (400, 401, 404, 405)."""
    with demo_server.client() as client, demo_server.anonymous() as anonymous:
        responses = [client.get("/"), client.get("/api/sessions"), client.get("/static/vendor/htmx.min.js"),
                     client.get("/sessions/no-such-session"), client.post("/"), anonymous.get("/"),
                     client.get("/", headers={"Host": "evil.example"}), client.get("/health")]
        assert [r.status_code for r in responses] == [200, 200, 200, 404, 405, 401, 400, 503]
        for response in responses:
            assert response.headers["content-security-policy"] == CSP
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"


class _Assets(HTMLParser):
    """Collects a page's script sources, stylesheet links, inline scripts and style
    attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.inline_scripts = 0
        self.style_attributes = 0
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script":
            if named.get("src"):
                self.sources.append(str(named["src"]))
            elif named.get("type") != "application/json":  # a chart's data block is not run
                self.inline_scripts += 1
        if tag == "link" and named.get("href"):
            self.sources.append(str(named["href"]))
        if "style" in named:
            self.style_attributes += 1
        self.handlers += [name for name in named if name.startswith("on")]


def test_pages_load_only_their_own_assets_and_nothing_inline(demo_server: Served) -> None:
    """Every page's scripts and styles come from ``/static/`` of this server (no CDN);
    no inline ``<script>``, ``style=`` or ``on…=`` attribute (the CSP would block them)."""
    with demo_server.client() as client:
        for path in ("/", "/sessions/demo-stream", "/search?q=haiku", "/status", "/usage"):
            page = client.get(path)
            parser = _Assets()
            parser.feed(page.text)
            assert parser.sources and all(src.startswith("/static/") for src in parser.sources), parser.sources
            assert parser.inline_scripts == 0 and parser.style_attributes == 0 and not parser.handlers, path
            for src in parser.sources:
                assert client.get(src).status_code == 200, src


# --------------------------------------------------------------------------- untrusted text


def test_markup_in_a_message_is_shown_as_text(hostile_server: Served) -> None:
    """A recorded ``<script>`` or ``<img onerror>`` comes out escaped on the session page
    and in search snippets, never as markup."""
    with hostile_server.client() as client:
        page = client.get("/sessions/xss").text
        for text in HOSTILE:
            assert text not in page
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
        assert "&lt;img src=x onerror=&#34;window.pwned=2&#34;&gt;" in page
        tree = re.search(r'<div class="tree-scroll"><svg .*?</svg></div>', page, re.S)  # the session tree: ours
        assert tree is not None and tree.group().count("<svg") == 1 and "pwned" not in tree.group()
        assert "<svg" not in page.replace(tree.group(), "") and "<img" not in page
        hits = client.get("/search", params={"q": "pwned"}).text
        assert "<script>window" not in hits and "&lt;script&gt;" in hits
        assert "<mark>pwned</mark>" in hits


# --------------------------------------------------------------------------- the same answers as the CLI


def test_the_sessions_api_answers_what_sessions_json_says(demo_server: Served, demo_log: Path) -> None:
    """``/api/sessions`` rows are ``convlog sessions --json`` rows (plus title and
    usage), newest first, in every order."""
    with demo_server.client() as client:
        for order in ("recent", "oldest", "messages", "id"):
            cli = cli_json("sessions", "--json", "--sort", order, "--dir", str(demo_log))
            api = client.get("/api/sessions", params={"sort": order}).json()
            assert [{k: v for k, v in row.items() if k not in ("title", "usage")} for row in api["sessions"]] == cli
            assert api["total"] == len(cli) and api["pages"] == 1
        usage = {row["id"]: row["usage"] for row in client.get("/api/sessions").json()["sessions"]}
        assert any(u["requests"] and u["cost_usd"] > 0 and u["models"] for u in usage.values())


def test_a_session_answers_what_show_json_says_now_and_as_of(demo_server: Served, demo_log: Path) -> None:
    """``/api/sessions/ID`` holds ``convlog show ID --format json`` (a unique prefix
    works too), and with ``?as_of=SEQ`` what ``show --as-of SEQ`` says."""
    sessions = cli_json("sessions", "--json", "--dir", str(demo_log))
    with demo_server.client() as client:
        for row in sessions:
            sid = row["id"]
            shown = cli_json("show", sid, "--format", "json", "--dir", str(demo_log))
            api = client.get(f"/api/sessions/{sid}").json()
            assert {key: api[key] for key in shown} == shown
            middle = (row["first_seq"] + row["last_seq"]) // 2
            then = cli_json("show", sid, "--format", "json", "--as-of", str(middle), "--dir", str(demo_log))
            api_then = client.get(f"/api/sessions/{sid}", params={"as_of": middle}).json()
            assert {key: api_then[key] for key in then} == then
            assert api_then["as_of"] == str(middle)
        assert client.get("/api/sessions/demo-str").json()["session"] == "demo-stream"  # a unique prefix
        assert client.get("/api/sessions/sharegpt-").status_code == 404  # several match: ambiguous
        crystal = [row for row in sessions if client.get(f"/api/sessions/{row['id']}").json()["crystals"]]
        assert crystal, "the demo makes a crystal"
        assert client.get("/api/sessions/no-such-session").status_code == 404
        assert client.get("/api/sessions/demo-stream", params={"as_of": "not a time"}).status_code == 400


def test_search_answers_what_search_json_says(shearwater_server: Served, shearwater_log: Path) -> None:
    """``/api/search`` gives ``convlog search --json``'s hits in order; the page marks
    each match; a query FTS5 cannot parse is a 400 with its reason."""
    cli = cli_json("search", "redis", "--json", "--limit", "50", "--dir", str(shearwater_log))
    assert cli
    with shearwater_server.client() as client:
        assert client.get("/api/search", params={"q": "redis"}).json() == cli
        page = client.get("/search", params={"q": "redis"}).text
        assert page.count('<li class="hit">') == len(cli)
        assert re.search(r"<mark>redis</mark>", page, re.IGNORECASE)
        bad = client.get("/api/search", params={"q": '"unbalanced'})
        assert bad.status_code == 400 and bad.json()["error"]
        assert client.get("/api/search").status_code == 400


def test_health_is_200_exactly_when_status_exits_0(demo_server: Served, demo_log: Path, tmp_path: Path) -> None:
    """No recorder: ``convlog status`` exits 3 and ``/health`` answers 503 with the same
    JSON; a recording recorder: exit 0 and 200."""
    status = run("status", "--json", "--dir", str(demo_log))
    assert status.returncode == 3
    with demo_server.client() as client:
        health = client.get("/health")
        assert health.status_code == 503 and health.json() == orjson.loads(status.stdout)
        assert client.get("/api/health").json() == health.json()
        assert client.get("/status").status_code == 503
    with demo_server.anonymous() as anonymous:  # a load balancer: the code, nothing of the report
        health = anonymous.get("/health")
        assert health.status_code == 503 and health.json() == {"healthy": False}
    directory = tmp_path / "live"
    with running_bus(tmp_path) as bus:
        recorder = bus.recorder(directory)
        bus.publisher(recorder).close()
        server = serve(directory, tmp_path / "serve.err")
        try:
            assert run("status", "--dir", str(directory)).returncode == 0
            with server.client() as client:
                health = client.get("/health")
                assert health.status_code == 200, health.text
                assert health.json()["healthy"] is True and health.json()["running"] is True
                assert "healthy" in client.get("/status").text
                # What doctor says, on the page and as JSON: the same checks, in its order,
                # passing and failing as `convlog doctor` prints them.
                checks = client.get("/api/doctor").json()
                printed = run("doctor", "--dir", str(directory)).stdout.splitlines()
                said = {line[4:].strip().split(": ", 1)[0]: line.startswith("ok")
                        for line in printed if line.startswith(("ok  ", "FAIL"))}
                assert {c["name"]: c["ok"] for c in checks} == said, (checks, printed)
                assert [c["name"] for c in checks][:3] == ["config", "directory", "recorder"]
                assert next(c for c in checks if c["name"] == "recorder")["ok"] is True
                page = client.get("/status").text
                assert all(f'data-check="{c["name"]}"' in page for c in checks)
            with server.anonymous() as anonymous:
                health = anonymous.get("/health")
                assert health.status_code == 200 and health.json() == {"healthy": True}
        finally:
            server.stop()
            recorder.terminate()


def test_the_pages_follow_a_log_as_it_grows(tmp_path: Path) -> None:
    """A recorder writing while the server runs: each answer reads the log as it is then
    (a kept fold is used only while the log has not grown)."""
    from conftest import wait_for_records

    directory = tmp_path / "live"

    def message(session: str, number: int, text: str) -> bytes:
        return orjson.dumps({"type": "message", "session_id": session, "message_id": f"{session}-{number}",
                             "sender": "ada", "role": "user", "content": text})

    with running_bus(tmp_path) as bus:
        recorder = bus.recorder(directory)
        publisher = bus.publisher(recorder)
        server = serve(directory, tmp_path / "serve.err")
        try:
            with server.client() as client:
                assert client.get("/api/sessions").json()["total"] == 0
                publisher.send(b"grow", message("grow-1", 1, "the first kestrel"))
                wait_for_records(directory, 1)
                assert [row["id"] for row in client.get("/api/sessions").json()["sessions"]] == ["grow-1"]
                publisher.send(b"grow", message("grow-2", 1, "a second kestrel"))
                publisher.send(b"grow", message("grow-1", 2, "and a third kestrel"))
                wait_for_records(directory, 3)
                rows = client.get("/api/sessions").json()["sessions"]
                assert [(row["id"], row["messages"]) for row in rows] == [("grow-1", 2), ("grow-2", 1)]
                assert len(client.get("/api/sessions/grow-1").json()["messages"]) == 2
                assert len(client.get("/api/search", params={"q": "kestrel"}).json()) == 3
        finally:
            server.stop()
            publisher.close()
            recorder.terminate()


# --------------------------------------------------------------------------- the sessions page


def test_sessions_are_paged_filtered_and_sorted(shearwater_server: Served, shearwater_log: Path) -> None:
    """1,239 Shearwater sessions: pages of 50 newest first (the pages together are the
    CLI's list), filters by text, agent and time, and htmx gets only the table."""
    every = cli_json("sessions", "--json", "--dir", str(shearwater_log))
    with shearwater_server.client() as client:
        first = client.get("/api/sessions").json()
        assert first["total"] == len(every) and first["pages"] == -(-len(every) // 50)
        ids = []
        for page in range(1, first["pages"] + 1):
            ids += [row["id"] for row in client.get("/api/sessions", params={"page": page}).json()["sessions"]]
        assert ids == [row["id"] for row in every]
        text = client.get("/api/sessions", params={"q": "HANDSHAKE"}).json()
        assert [row["id"] for row in text["sessions"]] == [r["id"] for r in every if "handshake" in r["id"]]
        agent = client.get("/api/sessions", params={"agent": "gemini_cli"}).json()
        assert agent["total"] == sum("gemini_cli" in row["participants"] for row in every)
        assert client.get("/api/sessions", params={"since": "1d"}).json()["total"] == len(every)  # imported today
        assert client.get("/api/sessions", params={"since": "2999-01-01"}).json()["total"] == 0
        for bad in ({"page": "0"}, {"page": "x"}, {"sort": "nope"}, {"since": "whenever"}):
            assert client.get("/api/sessions", params=bad).status_code == 400, bad
        page = client.get("/", params={"page": 2})
        assert page.text.count("<tr") == 51 and "page 2 of" in page.text
        partial = client.get("/", params={"q": "handshake"}, headers={"HX-Request": "true"})
        assert partial.text.lstrip().startswith('<section id="sessions">') and "<html" not in partial.text


def test_the_model_filter_and_cost_on_the_demo(demo_server: Served) -> None:
    """The demo's request to ``demo-model``: the model filter keeps its session, whose
    cost shows in dollars on the page."""
    with demo_server.client() as client:
        data = client.get("/api/sessions", params={"model": "demo-model"}).json()
        assert data["models"] == ["demo-model"] and data["total"] >= 1
        assert all("demo-model" in row["usage"]["models"] for row in data["sessions"])
        assert client.get("/api/sessions", params={"model": "other"}).json()["total"] == 0
        assert "$0.0042" in client.get("/", params={"model": "demo-model"}).text


def test_the_openapi_document_describes_each_api(demo_server: Served) -> None:
    """``/api/schema`` is an OpenAPI 3 document with the four APIs and their answers."""
    with demo_server.client() as client:
        schema = client.get("/api/schema").json()
    assert schema["openapi"].startswith("3.")
    for path in ("/api/sessions", "/api/sessions/{session}", "/api/search", "/api/health", "/health"):
        assert schema["paths"][path]["get"]["responses"]["200"]["description"], path
    assert '"participants"' in schema["paths"]["/api/sessions"]["get"]["responses"]["200"]["description"]


# --------------------------------------------------------------------------- the command line


def one_line_refusal(*args: str, code: int | None = None) -> str:
    """Run ``convlog serve ARGS``, which must refuse: non-zero exit, nothing on stdout,
    one line ``convlog: …`` on stderr; returns that line."""
    result = subprocess.run(convlog_cmd("serve", *args), capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and (code is None or result.returncode == code), result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("convlog: "), result.stderr
    return lines[0]


def test_misuse_is_one_readable_line(demo_log: Path, tmp_path: Path) -> None:
    """A bad port, a missing directory, --no-token off loopback, a token file others may
    read, --dir with --db: a non-zero exit and one line naming the problem."""
    d = str(demo_log)
    assert "--port" in one_line_refusal("--dir", d, "--port", "http", code=2)
    assert "--port" in one_line_refusal("--dir", d, "--port", "70000", code=2)
    assert "no log directory" in one_line_refusal("--dir", str(tmp_path / "missing"), code=1)
    (tmp_path / "empty").mkdir()
    assert "no event log" in one_line_refusal("--dir", str(tmp_path / "empty"), code=1)
    assert "loopback" in one_line_refusal("--dir", d, "--no-token", "--host", "0.0.0.0", code=2)
    assert "not both" in one_line_refusal("--dir", d, "--db", "postgresql:///x", code=2)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    token_file.chmod(0o644)
    assert "chmod 600" in one_line_refusal("--dir", d, "--token-file", str(token_file), code=1)
    assert "--token-file" in one_line_refusal("--dir", d, "--token-file", str(tmp_path / "nope"), code=1)
    token_file.write_text("short; Path=/\n")
    token_file.chmod(0o600)
    assert "at least 16" in one_line_refusal("--dir", d, "--token-file", str(token_file), code=1)
    busy = serve(demo_log, tmp_path / "busy.err")
    try:
        assert "cannot listen" in one_line_refusal("--dir", d, "--port", str(busy.port), code=1)
    finally:
        busy.stop()


def test_a_token_file_and_no_token(demo_log: Path, tmp_path: Path) -> None:
    """``--token-file`` (mode 600) gives the token of its first line; ``--no-token`` on
    loopback lets anyone on this machine in, still behind the Host check."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-from-a-file\n")
    token_file.chmod(0o600)
    server = serve(demo_log, tmp_path / "a.err", "--token-file", str(token_file))
    try:
        assert server.url.endswith("?token=s3cret-token-from-a-file")
        with server.client() as client:
            assert client.get("/").status_code == 200
        with server.anonymous() as anonymous:
            assert anonymous.get("/").status_code == 401
    finally:
        server.stop()
    open_server = serve(demo_log, tmp_path / "b.err", "--no-token")
    try:
        assert "token" not in open_server.url
        with open_server.anonymous() as anonymous:
            assert anonymous.get("/").status_code == 200
            assert anonymous.get("/", headers={"Host": "evil.example"}).status_code == 400
    finally:
        assert open_server.stop() == 0


def test_help_does_not_load_the_web_stack() -> None:
    """``convlog --help`` (every command registered) imports neither Starlette nor
    uvicorn: the web UI loads only when ``serve`` runs."""
    code = ("import sys; from click.testing import CliRunner; from convlog.cli.commands import main; "
            "r = CliRunner().invoke(main, ['--help']); assert 'serve' in r.output, r.output; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'jinja2', "
            "'convlog') and (m.startswith('convlog.web') or not m.startswith('convlog'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("path", ["/api/sessions/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/static/../app.py",
                                  "/static/%2e%2e/app.py"])
def test_paths_do_not_leave_the_package(demo_server: Served, path: str) -> None:
    """Session ids and static paths cannot reach files outside what is served."""
    with demo_server.client() as client:
        response = client.get(path)
    assert response.status_code == 404
    assert "def create_app" not in response.text


def test_the_wheel_ships_the_templates_and_static_files(tmp_path: Path) -> None:
    """``pip wheel`` of the repository holds every template, the stylesheet, the page
    script and the vendored htmx with its licence: an installed convlog serves its pages."""
    import zipfile

    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path),
                             str(repo)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("convlog-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    web = repo / "src" / "convlog" / "web"
    shipped = {f"convlog/web/{path.relative_to(web)}" for pattern in ("templates/*.html", "static/**/*")
               for path in web.glob(pattern) if path.is_file()}
    assert {"convlog/web/static/vendor/htmx.min.js", "convlog/web/static/vendor/htmx.LICENSE",
            "convlog/web/templates/base.html", "convlog/web/static/convlog.css"} <= shipped
    assert shipped <= names, shipped - names

