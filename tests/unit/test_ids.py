"""Request ids: 128+ random bits, 40 characters, sorted by time and after ids of the older layout."""

from __future__ import annotations

import os
import re
import time

from hookbay.ids import new_request_id, request_id_floor, request_id_ms


def test_request_ids_carry_at_least_128_random_bits_in_the_column_width() -> None:
    ids = [new_request_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    for rid in ids[:100]:
        assert re.fullmatch(r"req_[0-9a-hjkmnp-tv-z]{36}", rid), rid
    assert all(len(rid) <= 40 for rid in ids)  # requests.id is VARCHAR(40)
    # the part after the 10 time digits: every position takes every one of the 32 digits
    rand = [rid[14:] for rid in ids]
    assert len(rand[0]) * 5 >= 128
    for pos in range(len(rand[0])):
        assert len({r[pos] for r in rand}) == 32, pos


def test_request_ids_sort_by_time_and_after_older_ids() -> None:
    now = int(time.time() * 1000)
    stamps = [now + d for d in (0, 1, 2, 999, 1000, 86_400_000, 10 * 365 * 86_400_000)]
    made = [new_request_id(ms) for ms in stamps]
    assert made == sorted(made)
    for ms in (now, now + 86_400_000 * 300, 1_900_000_000_000, 2_100_000_000_000):
        old = f"req_{ms:012x}{os.urandom(10).hex()}"  # the layout before: 12 hex ms + 80 bits
        assert old < request_id_floor(ms) <= new_request_id(ms)


def test_a_request_id_tells_the_millisecond_it_was_made() -> None:
    for ms in (0, 1, 1_764_374_400_123, 2**45 + 7):
        assert request_id_ms(new_request_id(ms)) == ms
        assert request_id_ms(request_id_floor(ms)) == ms
    assert request_id_ms("req_" + f"{1_764_374_400_123:012x}" + "ab" * 10) == 1_764_374_400_123  # the older layout
    for bad in ("", "req_", "src_" + "0" * 36, "req_" + "!" * 36, "req_" + "z" * 31, "req_" + "g" * 32):
        assert request_id_ms(bad) is None
