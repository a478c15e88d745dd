"""focal/serving/client.py: replicas, Retry-After, client-side rate limits and token cost (pure math by hand, then the
real openai client against fake servers on loopback)."""

import asyncio
import email.utils
import socket
import time
import types

import pytest

from fake_openai import FakeOpenAI
from focal.serving.client import (MAX_RETRY_AFTER_S, Breaker, Bucket, EndpointDown, Limiter, Pool, Replica, estimate_tokens,
                       retry_after_s, with_retries)
from focal.config import Judge as JudgeConfig
from focal.judging.judge import Judge, JudgeStats
from focal.judging.prompts import Request
from focal.rubrics.sets import Criterion, Item
from focal.serving.endpoints import Endpoint, pool_identity

BINARY = Criterion("relevant", "The response answers the question.", 3.0, "essential")
ITEM = Item("p1", "What is 2+2?", (BINARY,))


def cfg(**kw):
    base = dict(model="judge", concurrency=4, timeout_s=2.0, max_retries=3, backoff_s=0.01, max_backoff_s=0.05,
                parse_retries=0, mode="per_criterion")
    base.update(kw)
    return JudgeConfig(**base)


def reqs(n, fault=""):
    return [Request(ITEM, BINARY, f"GOOD {i} {fault}", f"r{i}") for i in range(n)]


def pool_endpoint(*urls, model="judge"):
    return Endpoint(",".join(urls), model, "test-pool", "judge.base_url")


def dead_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # nothing listens once the socket closes


class Clock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


# ---- pure: Retry-After, token buckets, cost, replica choice --------------------------------

def test_retry_after_parsing():
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after": "1.5", "retry-after-ms": "100"}) == 0.1  # ms first, as openai does
    now = 1_700_000_000
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_s({"retry-after": date}, now=now) == 30.0
    assert retry_after_s({"retry-after": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    assert retry_after_s({"retry-after": "-3"}) == 0.0
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None and retry_after_s(None) is None


def test_bucket_by_hand():
    b = Bucket(60, now=0.0)  # 60 per minute: holds 60, refills 1 per second
    assert [b.reserve(1, 0.0) for _ in range(60)] == [0.0] * 60  # a minute's worth at once
    assert b.reserve(1, 0.0) == 1.0  # level -1: wait 1 s
    assert b.reserve(1, 0.5) == 1.5  # refilled 0.5 -> -0.5, minus 1 -> -1.5
    b.refund(1.5, 0.5)  # a correction brings it back to 0
    assert b.reserve(0, 0.5) == 0.0
    assert b.reserve(1, 100.0) == 0.0 and b.level == 59.0  # refill is capped at the capacity


def test_limiter_by_hand():
    clock = Clock()
    lim = Limiter(rpm=0, tpm=6000, clock=clock)  # 6000 tokens per minute: 100 per second
    assert lim.reserve(5000) == 0.0
    assert lim.reserve(2000) == 10.0  # 1000 in debt at 100/s
    lim.correct(estimated=2000, actual=1500)  # the server counted 500 fewer: debt 500
    assert lim.reserve(0) == 5.0
    clock.t = 5.0  # 500 refilled
    assert lim.reserve(100) == 1.0
    both = Limiter(rpm=2, tpm=6000, clock=Clock())  # 2 per minute: one every 30 s
    assert both.reserve(10) == 0.0 and both.reserve(10) == 0.0 and both.reserve(10) == 30.0
    off = Limiter(0, 0)
    assert off.reserve(10 ** 9) == 0.0
    assert estimate_tokens("x" * 401, 120) == 101 + 120  # chars / 4, rounded up, plus max_tokens


def test_cost_from_tokens_by_hand():
    s = JudgeStats(prompt_tokens=30, completion_tokens=15, price_prompt_per_mtok=2.0, price_completion_per_mtok=8.0)
    m = s.metrics()
    assert m["judge/cost_usd"] == pytest.approx((30 * 2.0 + 15 * 8.0) / 1e6)  # 0.00018
    assert m["judge/tokens"] == 45
    assert JudgeStats(prompt_tokens=10 ** 6).metrics()["judge/cost_usd"] == 0.0  # local: free


def test_pick_least_outstanding_then_fewest_sent_skipping_cooling_and_tripped():
    clock = Clock(100.0)
    a, b, c = (Replica(u, None, Breaker(u, "judge.base_url")) for u in ("http://a/v1", "http://b/v1", "http://c/v1"))
    pool = Pool([a, b, c], "judge.base_url", clock=clock)
    a.outstanding, b.outstanding, c.outstanding = 2, 1, 1
    b.sent, c.sent = 5, 3
    assert pool.pick() is c  # fewest in flight, then fewest sent
    assert pool.pick(avoid=c) is b  # a retry goes elsewhere
    pool.cool(c, 10.0)
    assert pool.pick() is b and pool.wait_s() == 0.0
    pool.cool(a, 2.0), pool.cool(b, 4.0)
    assert pool.wait_s() == 2.0  # every live replica is cooling: wait for the first
    pool.cool(a, 10 ** 6)
    assert a.cool_until == 100.0 + MAX_RETRY_AFTER_S
    a.breaker.trip("refused the API key (401)")
    b.breaker.trip("refused the connection (4 attempts in a row)")
    assert pool.pick() is c
    c.breaker.trip("forbids access (403)")
    assert pool.wait_s() == 0.0  # nothing live to wait for: the pick says so
    with pytest.raises(EndpointDown, match=r"every judge.base_url replica is down: judge.base_url http://a/v1 refused "
                                           r"the API key.*http://b/v1 refused the connection.*http://c/v1 forbids"):
        pool.pick()


def test_with_retries_waits_for_the_limiter_outside_the_call_and_corrects_with_usage():
    clock, slept = Clock(), []

    async def fake_sleep(s):
        slept.append(s)
        clock.t += s

    usage = types.SimpleNamespace(prompt_tokens=40, completion_tokens=10)

    async def call(client):
        return types.SimpleNamespace(usage=usage)

    lim = Limiter(rpm=60, tpm=600, clock=clock)  # 1 request and 10 tokens per second
    pool = Pool([Replica("http://x/v1", None, None)], "judge.base_url", clock=clock)
    stats = JudgeStats()
    policy = cfg()

    async def main():
        for _ in range(3):
            await with_retries(call, policy, stats, pool=pool, limiter=lim, tokens=250, sleep=fake_sleep)

    asyncio.run(main())
    # 600 -> 350 (charged 250) -> 550 (corrected to 50 used) -> 300 -> 500 -> 250 -> 450: no wait yet
    assert slept == [] and lim.tokens.level == 450 and stats.prompt_tokens == 120
    lim.tokens.level = -30.0  # in debt: the next call waits 3 s for it plus 25 s for its own 250
    asyncio.run(with_retries(call, policy, stats, pool=pool, limiter=lim, tokens=250, sleep=fake_sleep))
    assert slept == [28.0] and stats.rate_wait_s == 28.0


# ---- against fake servers --------------------------------------------------------------------

def test_requests_are_spread_across_replicas():
    with FakeOpenAI(delay_s=0.05) as a, FakeOpenAI(delay_s=0.05) as b:
        judge = Judge(cfg(concurrency=4), pool_endpoint(a.base_url, b.base_url))
        out = judge.run(reqs(24))
    assert all(j.score == 1.0 for j in out)
    assert a.calls + b.calls == 24 and min(a.calls, b.calls) >= 8  # least outstanding: about half each
    assert judge.sent == {a.base_url: a.calls, b.base_url: b.calls}


def test_a_sequential_client_also_alternates_replicas():
    with FakeOpenAI() as a, FakeOpenAI() as b:
        Judge(cfg(concurrency=1), pool_endpoint(a.base_url, b.base_url)).run(reqs(6))
    assert (a.calls, b.calls) == (3, 3)  # ties go to the replica sent fewer


def test_a_dead_replica_is_skipped_while_the_other_serves():
    dead = dead_url()
    with FakeOpenAI() as live:
        judge = Judge(cfg(concurrency=4), pool_endpoint(dead, live.base_url))
        out = judge.run(reqs(20))
    assert all(j.score == 1.0 and j.reason == "" for j in out)  # nothing lost to the dead one
    assert live.calls == 20
    assert judge.sent[dead] <= cfg().max_retries + 1 + 4  # it tripped after max_retries + 1 refusals (+ in flight)


def test_the_run_stops_only_when_every_replica_is_down():
    one, two = dead_url(), dead_url()
    judge = Judge(cfg(), pool_endpoint(one, two))
    t0 = time.perf_counter()
    with pytest.raises(EndpointDown, match=f"every judge.base_url replica is down: judge.base_url {one} refused "
                                           f"the connection.*{two} refused the connection"):
        judge.run(reqs(20))
    assert time.perf_counter() - t0 < 5


def test_a_replica_answering_401_is_dropped_and_the_other_serves():
    with FakeOpenAI(always="401") as bad, FakeOpenAI() as good:
        judge = Judge(cfg(concurrency=2), pool_endpoint(bad.base_url, good.base_url))
        out = judge.run(reqs(10))
    assert all(j.score == 1.0 for j in out) and good.calls == 10 and bad.calls <= 2


def test_replicas_must_report_the_same_model():
    with FakeOpenAI() as a, FakeOpenAI() as b, FakeOpenAI(root="/srv/other-weights") as c:
        assert pool_identity([a.base_url, b.base_url], "judge", "", "judge.base_url") == \
            "remote-pool:judge|judge|/srv/fake-weights"  # no URL in it: adding a replica keeps the cache
        with pytest.raises(ValueError, match=f"judge.base_url: the replicas do not serve the same model as 'judge' "
                                             f"\\({a.base_url} serves 'judge\\|judge\\|/srv/fake-weights'; "
                                             f"{c.base_url} serves 'judge\\|judge\\|/srv/other-weights'\\)"):
            pool_identity([a.base_url, c.base_url], "judge", "", "judge.base_url")


def test_judge_identity_reads_every_replica_of_the_comma_separated_param():
    from focal.config import params_from_dict
    from focal.serving.endpoints import judge_identity

    with FakeOpenAI() as a, FakeOpenAI(models=("other",)) as b:
        params = params_from_dict({"judge": {"base_url": f"{a.base_url},{b.base_url}", "model": "judge"}})
        with pytest.raises(ValueError, match=f"judge.base_url {b.base_url} serves no model named 'judge'"):
            judge_identity(params.judge, params.paths.base_model)


@pytest.mark.parametrize("bad", ["gpu-box:8000/v1", "http://a/v1,,http://b/v1", "http://a/v1, http://a/v1"])
def test_bad_replica_lists_are_refused_by_the_config(bad):
    with pytest.raises(ValueError, match="judge.base_url must be empty, or one or more distinct http"):
        JudgeConfig(base_url=bad)
    assert JudgeConfig(base_url="http://a/v1, https://b/v1").base_url


@pytest.mark.parametrize("headers, wait", [({"retry_after_ms": "400"}, 0.4), ({"retry_after": "0.6"}, 0.6)])
def test_retry_after_is_honoured(headers, wait):
    with FakeOpenAI(**headers) as server:
        t0 = time.perf_counter()
        (j,) = Judge(cfg(backoff_s=0.0, max_backoff_s=0.0), pool_endpoint(server.base_url)).run(reqs(1, "[[fault:429:1]]"))
        elapsed = time.perf_counter() - t0
    assert j.score == 1.0 and server.calls == 2
    assert elapsed >= wait  # the jittered backoff alone would be 0 here


def test_a_503_retry_after_cools_only_that_replica():
    with FakeOpenAI(always="503", retry_after="30") as busy, FakeOpenAI() as free:
        t0 = time.perf_counter()
        out = Judge(cfg(concurrency=2), pool_endpoint(busy.base_url, free.base_url)).run(reqs(10))
        elapsed = time.perf_counter() - t0
    assert all(j.score == 1.0 for j in out) and busy.calls <= 2  # the calls in flight when it said "wait 30 s"
    assert elapsed < 10


def test_tokens_and_cost_come_from_the_usage_the_server_reports():
    with FakeOpenAI(usage=(1000, 20)) as server:
        judge = Judge(cfg(price_prompt_per_mtok=0.5, price_completion_per_mtok=2.0), pool_endpoint(server.base_url))
        judge.run(reqs(4))
    m = judge.stats.metrics()
    assert (m["judge/prompt_tokens"], m["judge/completion_tokens"], m["judge/tokens"]) == (4000, 80, 4080)
    assert m["judge/cost_usd"] == pytest.approx((4000 * 0.5 + 80 * 2.0) / 1e6)  # 0.00216


@pytest.mark.parametrize("least, shown", [(3, True), (5, False), (0, False)])
def test_progress_bar_when_a_step_has_enough_pending_calls(capsys, least, shown):
    with FakeOpenAI() as server:
        asyncio.run(Judge(cfg(progress_min_calls=least), pool_endpoint(server.base_url)).arun(reqs(4)))
    assert ("judge: " in capsys.readouterr().err) == shown
