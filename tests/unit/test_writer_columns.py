"""The writer's multi-row INSERT takes its columns from every row of the batch."""

from __future__ import annotations

import sqlalchemy as sa

from hookbay.store.writer import Writer


def test_rows_with_as_many_keys_but_different_ones_keep_every_column() -> None:
    """Two rows with the same number of keys but not the same keys: neither loses a column (the
    check used to compare only how many keys each row had)."""
    engine = sa.create_engine("sqlite://")
    table = sa.Table("t", sa.MetaData(), sa.Column("a", sa.Integer), sa.Column("b", sa.Integer),
                     sa.Column("c", sa.Integer))
    with engine.begin() as conn:
        table.create(conn)
        cur = conn.connection.cursor()
        Writer(engine)._insert_many(cur, table, [{"a": 1, "b": 2}, {"a": 3, "c": 4}])
        cur.close()
        assert conn.execute(sa.text("SELECT a, b, c FROM t ORDER BY a")).all() == [(1, 2, None), (3, None, 4)]
    engine.dispose()
