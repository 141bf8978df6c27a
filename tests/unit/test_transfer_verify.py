"""The verification's comparison: what counts as the same item, and what differs."""

from __future__ import annotations

from typing import Any

from ferry.api.transfer import VerifyMode
from ferry.transfer.verify import combined, compared, counted


def items(n: int) -> list[dict[str, Any]]:
    return [{"id": f"i{k:05d}", "tenant": f"t{k % 3}", "n": k} for k in range(n)]


def test_the_same_items_in_any_order_and_with_other_system_properties_match() -> None:
    source = items(5_000)  # more than one sorted run on each side
    destination = [{**i, "_rid": "x", "_etag": '"e"', "_ts": 1} for i in reversed(source)]
    result = compared(source, destination, ["/tenant"])
    assert result.matches and result.source_count == result.destination_count == 5_000


def test_missing_extra_and_changed_items_are_counted_and_named() -> None:
    source = items(50)
    destination = [i for i in source if i["id"] != "i00007"]
    destination[3] = {**destination[3], "n": -1}
    destination.append({"id": "i00001", "tenant": "elsewhere"})  # same id, another partition key: another item
    result = compared(source, destination, ["/tenant"], label="c/")
    assert (result.missing, result.extra, result.differing) == (1, 1, 1)
    assert sorted(result.first_differences) == ["c/i00001", "c/i00003", "c/i00007"]
    assert not result.matches and "1 missing, 1 extra, 1 with other content" in result.summary()


def test_counts_of_several_containers_add_up() -> None:
    both = combined([counted(10, 10), counted(5, 4)])
    assert both.mode == VerifyMode.COUNT and (both.source_count, both.destination_count) == (15, 14)
    assert not both.matches and both.summary() == "Count: expected 15 items, the destination holds 14"
    assert combined([counted(3, 3)]).matches
