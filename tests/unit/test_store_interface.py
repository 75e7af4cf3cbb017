"""``StoreInterface`` lists every operation of ``Store``, and only those: a new store method must be
declared (in its group, with a docstring) before the layers above can call it through the interface.
mypy checks the signatures (``_implements`` in ``store/interface.py``); this checks the names."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from hookbay.store import Store, StoreInterface
from hookbay.store.interface import GROUPS

# Public instance attributes of Store that are its own business: the CLI, which opens the store,
# disposes the engines itself; the others are read only inside store/.
IMPLEMENTATION_ONLY = {"keyring", "sensitive_headers", "read_engine", "write_engine", "text_indexer"}


def _declared(group: type) -> dict[str, object]:
    """The members a group itself declares (not Protocol's machinery)."""
    return {n: v for n, v in vars(group).items() if not n.startswith("_")}


def _store_class_members() -> set[str]:
    return {n for n, v in inspect.getmembers(Store)
            if not n.startswith("_") and (inspect.isfunction(v) or isinstance(v, property))}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path}/hookbay.db")
    yield s
    for engine in (s.read_engine, s.write_engine, s.text_indexer.engine):
        engine.dispose()


def test_groups_make_up_the_interface() -> None:
    assert set(StoreInterface.__mro__) >= set(GROUPS)
    names = [n for g in GROUPS for n in _declared(g)]
    assert len(names) == len(set(names)), "an operation is declared in two groups"
    assert set(names) == {n for n in dir(StoreInterface) if not n.startswith("_")}


def test_every_public_method_of_store_is_declared() -> None:
    declared = {n for g in GROUPS for n in _declared(g)}
    missing = _store_class_members() - declared
    assert not missing, f"Store methods missing from StoreInterface: {sorted(missing)}"
    # the mixin's methods are the store's too
    assert {"claim_deliveries", "insert_deliveries", "retry_deliveries"} <= declared


def test_every_declared_operation_exists_on_store(store: Store) -> None:
    for group in GROUPS:
        for name, member in _declared(group).items():
            assert hasattr(store, name), f"{group.__name__}.{name} is not on Store"
            impl = getattr(Store, name, None)
            if inspect.isfunction(member):
                assert inspect.isfunction(impl), f"{group.__name__}.{name}: Store has no such method"
                assert inspect.iscoroutinefunction(member) == inspect.iscoroutinefunction(impl), name


def test_public_attributes_are_declared_or_known_internal(store: Store) -> None:
    declared = {n for g in GROUPS for n in _declared(g)}
    attrs = {n for n in vars(store) if not n.startswith("_")}
    assert not IMPLEMENTATION_ONLY & declared
    assert attrs - IMPLEMENTATION_ONLY <= declared, sorted(attrs - IMPLEMENTATION_ONLY - declared)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
def test_each_group_is_documented(group: type) -> None:
    assert (group.__doc__ or "").strip(), f"{group.__name__} has no docstring"
    members = _declared(group)
    assert members, f"{group.__name__} declares nothing"
    for name, member in members.items():
        fn = member.fget if isinstance(member, property) else member
        assert (getattr(fn, "__doc__", None) or "").strip(), f"{group.__name__}.{name} has no docstring"
