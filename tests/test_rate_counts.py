"""app/limits.py's counts on the real Redis: a key's hits taken a few at a time by each web process (leases) never
let more through than the limit, across processes and threads; small limits are still counted one by one; a lease
ends with its window."""

import threading
import time

import pytest
from limits import RateLimitItemPerSecond
from redis import Redis

from app.limits import KEY_PREFIX, LEASE_MAX, Limited, RateCounts


@pytest.fixture
def processes(redis_url) -> list[RateCounts]:
    """Two web processes' counts on one Redis."""
    return [RateCounts(Redis.from_url(redis_url)) for _ in range(2)]


def served(counts: RateCounts, item, identity=("api-key", "1")) -> bool:
    try:
        counts.take(item, identity, ahead=True)
    except Limited:
        return False
    return True


def test_two_processes_taking_hits_ahead_never_pass_the_limit(processes):
    limit = RateLimitItemPerSecond(640, 60)  # leases of 10, shrinking as the window fills
    outcomes = [served(processes[n % 3 % 2], limit) for n in range(1000)]  # two requests to one, one to the other
    assert limit.amount - LEASE_MAX <= sum(outcomes) <= limit.amount
    assert not any(outcomes[sum(outcomes) + LEASE_MAX:])  # once refused, refused: the window is full


def test_threads_of_two_processes_never_pass_the_limit(processes):
    limit = RateLimitItemPerSecond(1000, 60)
    results: list[bool] = []

    def hammer(counts: RateCounts) -> None:
        mine = [served(counts, limit) for _ in range(200)]
        results.extend(mine)

    threads = [threading.Thread(target=hammer, args=(processes[n % 2],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert limit.amount - 2 * LEASE_MAX <= sum(results) <= limit.amount


def test_a_small_limit_is_counted_one_by_one(processes):
    limit = RateLimitItemPerSecond(60, 60)
    assert [served(processes[n % 2], limit) for n in range(62)] == [True] * 60 + [False] * 2
    with pytest.raises(Limited) as refused:
        processes[0].take(limit, ("api-key", "1"), ahead=True)
    assert 55 <= refused.value.retry_after <= 60


def test_a_lease_ends_with_its_window(processes, redis_url):
    limit = RateLimitItemPerSecond(64 * LEASE_MAX, 1)  # leases of LEASE_MAX
    key = KEY_PREFIX + limit.key_for("api-key", "1")
    assert served(processes[0], limit)
    assert int(Redis.from_url(redis_url).get(key)) == LEASE_MAX
    time.sleep(1.2)  # the window ended with most of the lease unused: its hits are not carried into the next
    assert served(processes[0], limit)
    assert int(Redis.from_url(redis_url).get(key)) == LEASE_MAX
