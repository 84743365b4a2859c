"""The polite HTTP client against loopback servers that misbehave in one precise way each."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from mlm_pipeline.download.politeness import FetchFailed, Invalid, Politeness, PoliteSession, serial_pool
from mlm_pipeline.endpoints import ConfigError, user_agent
from mlm_pipeline.world.serving import RunningServer, start_server
from mlm_pipeline.world.wiki_server import user_agent_problem

UA = user_agent("https://example.org/mlm-tests")
STATE_LOCK = threading.Lock()  # one lock for the observations, which two servers may share


class Misbehaving(BaseHTTPRequestHandler):
    """Each path is one behaviour; ``/<behaviour>/<id>`` counts attempts per id."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        return

    def _leave(self) -> None:
        """End this request's time in flight, once: the moment its answer starts to leave, as on
        the real servers. A client that sends its next request as soon as it has read an answer
        (to this server or another one sharing the count) is then never counted twice."""
        if getattr(self, "_in_flight", False):
            self._in_flight = False
            with STATE_LOCK:
                self.server.state["inflight"] -= 1  # type: ignore[attr-defined]

    def _send(self, status: int, body: bytes = b"", ctype: str = "text/plain", **headers: str) -> None:
        self._leave()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if "no_length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            if name != "no_length":
                self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        running: RunningServer = self.server.running  # type: ignore[attr-defined]
        state = self.server.state  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        running.count(path)
        attempt = running.counters[path]
        with STATE_LOCK:
            state["agents"].add(self.headers.get("User-Agent"))
            state["inflight"] += 1
            state["peak"] = max(state["peak"], state["inflight"])
            state["times"].setdefault(path, []).append(time.monotonic())
        self._in_flight = True
        try:
            self._behave(path, attempt)
        finally:
            self._leave()  # an attempt answered by a closed connection

    def _behave(self, path: str, attempt: int) -> None:
        kind = path.split("/")[1]
        if kind == "ok":
            time.sleep(0.02)
            self._send(200, b'{"ok": true}', "application/json")
        elif kind == "status":
            self._send(int(path.split("/")[2]), b"no")
        elif kind == "throttle-once":  # 429 with Retry-After first, then fine
            if attempt == 1:
                self._send(429, b"slow down", Retry_After="1")
            else:
                self._send(200, b"fine", "text/plain")
        elif kind == "loop":
            self._send(302, Location="/loop2/" + path.split("/")[2])
        elif kind == "loop2":
            self._send(302, Location="/loop/" + path.split("/")[2])
        elif kind == "chain":
            n = int(path.split("/")[2])
            if n == 0:
                self._send(200, b"end", "text/plain")
            else:
                self._send(302, Location=f"/chain/{n - 1}")
        elif kind == "big-declared":
            self._send(200, b"x" * 5000, "image/jpeg")
        elif kind == "big-undeclared":
            self._send(200, b"x" * 5000, "image/jpeg", no_length="1", Connection="close")
            self.close_connection = True
        elif kind == "truncate-once":
            if attempt == 1:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "100")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"y" * 50)
                self.close_connection = True
            else:
                self._send(200, b"y" * 100, "text/plain")
        elif kind == "html-once":
            if attempt == 1:
                self._send(200, b"<html>error</html>", "text/html")
            else:
                self._send(200, b"{}", "application/json")
        elif kind == "hang-once":
            if attempt == 1:
                time.sleep(1.0)
                self.close_connection = True
            else:
                self._send(200, b"late", "text/plain")
        elif kind == "flip":  # damaged on odd attempts
            self._send(200, b"bad" if attempt % 2 else b"good", "text/plain")
        elif kind == "bad-always":  # the same undecodable bytes at every attempt: the item's own
            self._send(200, b"bad for good", "text/plain")
        elif kind == "bad-differently":  # damaged at every attempt, never the same way
            self._send(200, b"bad %d" % attempt, "text/plain")
        elif kind == "big-once":  # an oversized answer (an original instead of a thumbnail), then fine
            self._send(200, b"x" * (5000 if attempt == 1 else 50), "image/jpeg")
        elif kind == "limit2":  # a server that allows two requests in flight and throttles the third
            state = self.server.state  # type: ignore[attr-defined]
            with STATE_LOCK:
                state["limited"] += 1
                state["limited_peak"] = max(state["limited_peak"], state["limited"])
                over = state["limited"] > 2
            try:
                if not over:
                    time.sleep(0.05)
            finally:
                with STATE_LOCK:  # free before the answer leaves (see _leave)
                    state["limited"] -= 1
            self._send(429, b"too many", Retry_After="0") if over else self._send(200, b"ok", "text/plain")
        elif kind == "width-refused":  # Commons' answer to a non-standard thumbnail width
            self._send(429, b"Use thumbnail steps listed on https://w.wiki/GHai")
        elif kind == "agent-refused":
            self._send(403, b"Please set a user-agent and respect our robot policy https://w.wiki/4wJS.")
        else:
            self._send(404, b"unknown")


def fresh_state() -> dict:
    return {"agents": set(), "inflight": 0, "peak": 0, "times": {}, "limited": 0, "limited_peak": 0}


@pytest.fixture(scope="module")
def shared_server() -> Iterator[RunningServer]:
    running = start_server("misbehaving", Misbehaving)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def server(shared_server: RunningServer) -> RunningServer:
    """The module's server with counters and observations reset for this test."""
    with shared_server.lock:
        shared_server.counters.clear()
    shared_server.server.state = fresh_state()  # type: ignore[attr-defined]
    return shared_server


def polite(**overrides: object) -> Politeness:
    settings: dict = dict(user_agent=UA, backoff_s=0.01, backoff_max_s=0.05, timeout_s=0.5, timeout_hold_s=0.05,
                          max_attempts=3)
    settings.update(overrides)
    return Politeness(**settings)


async def _get(p: Politeness, url: str, **kwargs: object) -> tuple[object, PoliteSession]:
    kwargs.setdefault("accept", ("text/", "application/json", "image/"))
    kwargs.setdefault("max_bytes", 1000)
    async with PoliteSession(p) as http:
        try:
            return await http.get(url, **kwargs), http
        except (FetchFailed, ConfigError) as failed:
            return failed, http


def get(p: Politeness, url: str, **kwargs: object) -> tuple[object, PoliteSession]:
    return asyncio.run(_get(p, url, **kwargs))


def test_user_agent_follows_wikimedia_policy(server: RunningServer) -> None:
    result, _ = get(polite(), server.url + "/ok")
    assert result.body == b'{"ok": true}'
    (agent,) = server.server.state["agents"]  # type: ignore[attr-defined]
    assert agent == UA and user_agent_problem(agent) is None


def test_concurrency_never_exceeds_the_limit(server: RunningServer) -> None:
    async def many() -> None:
        async with PoliteSession(polite(concurrency=2)) as http:
            await asyncio.gather(*(http.get(server.url + f"/ok?i={i}", accept=("application/json",), max_bytes=100)
                                   for i in range(20)))

    asyncio.run(many())
    assert server.counters["/ok"] == 20
    assert server.server.state["peak"] == 2  # type: ignore[attr-defined]


def test_retry_after_is_honoured(server: RunningServer) -> None:
    result, http = get(polite(), server.url + "/throttle-once/a")
    assert result.body == b"fine" and result.attempts == 2
    first, second = server.server.state["times"]["/throttle-once/a"]  # type: ignore[attr-defined]
    assert second - first >= 1.0  # the server asked for one second of quiet
    assert http.stats["status_429"] == 1


def test_retry_after_beyond_the_cap_fails_without_hammering(server: RunningServer) -> None:
    result, _ = get(polite(max_retry_after_s=0.5), server.url + "/throttle-once/b")
    assert isinstance(result, FetchFailed) and result.reason == "http_429"
    assert result.transient  # throttling says nothing about the item: a later run tries again
    assert server.counters["/throttle-once/b"] == 1


def test_a_final_429_still_holds_back_the_other_requests_to_the_host(server: RunningServer) -> None:
    async def two() -> FetchFailed:
        async with PoliteSession(polite(max_attempts=1)) as http:
            try:
                await http.get(server.url + "/throttle-once/c", accept=("text/",), max_bytes=100)
            except FetchFailed as failed:
                await http.get(server.url + "/ok", accept=("application/json",), max_bytes=100)
                return failed
        raise AssertionError("the first request should have failed")

    failed = asyncio.run(two())
    assert failed.reason == "http_429" and failed.attempts == 1
    times = server.server.state["times"]  # type: ignore[attr-defined]
    assert times["/ok"][0] - times["/throttle-once/c"][0] >= 1.0


def test_server_errors_are_retried_a_bounded_number_of_times(server: RunningServer) -> None:
    result, http = get(polite(max_attempts=4), server.url + "/status/503")
    assert isinstance(result, FetchFailed)
    assert (result.reason, result.attempts, result.transient) == ("http_503", 4, True)
    assert server.counters["/status/503"] == 4 and http.stats["retries"] == 3


def test_client_errors_are_final_at_once(server: RunningServer) -> None:
    result, _ = get(polite(), server.url + "/status/404")
    assert isinstance(result, FetchFailed)
    assert (result.reason, result.attempts, result.transient) == ("http_404", 1, False)
    assert server.counters["/status/404"] == 1
    assert "attempts=1" in result.record_detail


def test_access_refusals_are_final_now_but_retried_by_a_later_run(server: RunningServer) -> None:
    result, _ = get(polite(), server.url + "/status/403")
    assert isinstance(result, FetchFailed)
    assert (result.reason, result.attempts, result.transient) == ("http_403", 1, True)
    assert server.counters["/status/403"] == 1


def test_redirect_loop_is_detected(server: RunningServer) -> None:
    result, _ = get(polite(max_attempts=2), server.url + "/loop/x")
    assert isinstance(result, FetchFailed) and result.reason == "redirect_loop"
    assert server.counters["/loop/x"] == 2 and server.counters["/loop2/x"] == 2  # one round per attempt


def test_redirects_are_followed_up_to_the_limit(server: RunningServer) -> None:
    result, _ = get(polite(max_redirects=3), server.url + "/chain/3")
    assert result.body == b"end" and result.url.endswith("/chain/0")
    result, _ = get(polite(max_redirects=3), server.url + "/chain/4")
    assert isinstance(result, FetchFailed) and result.reason == "too_many_redirects" and not result.transient


@pytest.mark.parametrize("path", ["/big-declared", "/big-undeclared"])
def test_a_body_too_large_at_every_attempt_is_refused_for_good(server: RunningServer, path: str) -> None:
    result, _ = get(polite(), server.url + path, max_bytes=4096)
    assert isinstance(result, FetchFailed) and result.reason == "too_large" and result.attempts == 3
    assert not result.transient  # the same answer every time: the item's own size, not a fault
    assert server.counters[path] == 3
    twice, _ = get(polite(max_attempts=2), server.url + path, max_bytes=4096)
    assert isinstance(twice, FetchFailed) and twice.transient  # two alike could still be one fault twice


def test_one_oversized_answer_is_retried(server: RunningServer) -> None:
    result, http = get(polite(), server.url + "/big-once/a", max_bytes=4096)
    assert result.body == b"x" * 50 and result.attempts == 2 and http.stats["trouble_too_large"] == 1
    # With no attempt left, one oversized answer is no verdict on the item: a later run tries again.
    result, _ = get(polite(max_attempts=1), server.url + "/big-once/b", max_bytes=4096)
    assert isinstance(result, FetchFailed) and result.reason == "too_large" and result.transient


def test_a_caller_may_take_oversized_answers_as_final(server: RunningServer) -> None:
    result, _ = get(polite(), server.url + "/big-once/c", max_bytes=4096, final=("too_large",))
    assert isinstance(result, FetchFailed) and result.attempts == 1 and result.transient
    assert server.counters["/big-once/c"] == 1


def test_truncated_body_is_retried(server: RunningServer) -> None:
    result, http = get(polite(), server.url + "/truncate-once/t")
    assert result.body == b"y" * 100 and result.attempts == 2
    assert http.stats["trouble_truncated"] == 1


def test_wrong_content_type_is_retried(server: RunningServer) -> None:
    result, http = get(polite(), server.url + "/html-once/h", accept=("application/json",))
    assert result.body == b"{}" and result.attempts == 2 and http.stats["trouble_content_type"] == 1


def test_timeout_is_retried(server: RunningServer) -> None:
    result, http = get(polite(timeout_s=0.3), server.url + "/hang-once/s")
    assert result.body == b"late" and result.attempts == 2 and http.stats["trouble_timeout"] == 1


def test_a_callers_check_retries_damaged_bodies_and_keeps_the_last(server: RunningServer) -> None:
    def check(response: object) -> str:
        if response.body == b"bad":  # type: ignore[attr-defined]
            raise Invalid("corrupt", "damaged")
        return "parsed"

    result, _ = get(polite(), server.url + "/flip/1", check=check)
    assert result.body == b"good" and result.checked == "parsed" and result.attempts == 2
    result, _ = get(polite(max_attempts=1), server.url + "/flip/2", check=check)
    assert isinstance(result, FetchFailed) and result.reason == "corrupt" and result.last.body == b"bad"
    assert result.transient  # damaged once, and no attempt left to tell a fault from the file


def test_damage_is_final_only_when_every_attempt_brings_the_same_bytes(server: RunningServer) -> None:
    def check(response: object) -> None:
        if response.body.startswith(b"bad"):  # type: ignore[attr-defined]
            raise Invalid("corrupt", "damaged")

    same, _ = get(polite(), server.url + "/bad-always/1", check=check)
    assert isinstance(same, FetchFailed) and same.reason == "corrupt" and same.attempts == 3
    assert not same.transient and same.last.body == b"bad for good"
    differing, _ = get(polite(), server.url + "/bad-differently/1", check=check)
    assert isinstance(differing, FetchFailed) and differing.reason == "corrupt" and differing.attempts == 3
    assert differing.transient and differing.last.body == b"bad 3"


def test_a_429_lowers_the_concurrency_and_quiet_success_raises_it_never_above_the_cap(
        server: RunningServer) -> None:
    lines: list[str] = []

    async def many() -> PoliteSession:
        async with PoliteSession(polite(concurrency=3, recover_after=10, max_attempts=5), lines.append) as http:
            await asyncio.gather(*(http.get(server.url + f"/limit2/{i}", accept=("text/",), max_bytes=100)
                                   for i in range(40)))
            return http

    http = asyncio.run(many())
    host = server.url.removeprefix("http://")
    assert server.server.state["limited_peak"] <= 3  # type: ignore[attr-defined]  # never above the configured 3
    assert http.stats["status_200"] == 40
    assert http.stats[f"lowered@{host}"] >= 1 and http.stats[f"lowest@{host}"] == 2
    # Each 429 doubles the quiet successes needed before the refused limit is tried again
    # (10, 20, ...): 40 requests meet the server's refusal a few times, not on every third.
    assert http.stats["status_429"] <= 4
    assert any("concurrency lowered to 2 of 3" in line for line in lines)


def test_a_serial_pool_never_has_two_requests_in_flight(server: RunningServer) -> None:
    async def many() -> None:
        async with PoliteSession(polite(concurrency=4)) as http:
            await asyncio.gather(*(http.get(server.url + f"/ok?i={i}", accept=("application/json",), max_bytes=100,
                                            pool=serial_pool("api")) for i in range(8)))

    asyncio.run(many())
    assert server.server.state["peak"] == 1  # type: ignore[attr-defined]


def test_a_429_without_retry_after_can_mean_a_refused_configuration(server: RunningServer) -> None:
    refused, http = get(polite(), server.url + "/width-refused/a",
                        unthrottled_429=lambda url: ConfigError(f"width refused at {url}"))
    assert isinstance(refused, ConfigError) and "/width-refused/a" in str(refused)
    assert server.counters["/width-refused/a"] == 1 and http.stats["retries"] == 0  # no hammering
    throttled, http = get(polite(), server.url + "/width-refused/b")  # without the caller's say: throttling
    assert isinstance(throttled, FetchFailed) and throttled.reason == "http_429" and throttled.transient
    assert server.counters["/width-refused/b"] == 3


def test_a_refused_user_agent_stops_the_client_and_names_the_agent(server: RunningServer) -> None:
    refused, _ = get(polite(), server.url + "/agent-refused/a")
    assert isinstance(refused, ConfigError) and UA in str(refused) and "MLM_CONTACT" in str(refused)
    assert server.counters["/agent-refused/a"] == 1


def test_shared_pool_limits_requests_across_hosts(server: RunningServer) -> None:
    other = start_server("misbehaving-2", Misbehaving)
    state = server.server.state  # type: ignore[attr-defined]
    other.server.state = state  # type: ignore[attr-defined]  # one in-flight count for both hosts
    try:
        async def many() -> None:
            async with PoliteSession(polite(pool_concurrency={"media": 1})) as http:
                await asyncio.gather(*(http.get(f"{host}/ok?i={i}", accept=("application/json",), max_bytes=100,
                                                pool="media")
                                       for i in range(6) for host in (server.url, other.url)))

        asyncio.run(many())
    finally:
        other.stop()
    assert state["peak"] == 1


def test_bad_limits_are_refused_before_any_request() -> None:
    with pytest.raises(ConfigError, match="concurrency=0"):
        Politeness(user_agent=UA, concurrency=0)
    with pytest.raises(ConfigError, match="user_agent"):
        Politeness(user_agent=" ")
    with pytest.raises(ConfigError, match="pool_concurrency"):
        Politeness(user_agent=UA, pool_concurrency={"media": 0})
