"""Each place where the worker reaches past faust's public API (streams.live.faust_compat) has a
test here that pins the faust behaviour it works around: when a faust upgrade changes it, the
test fails and says which workaround to drop or rework."""
from __future__ import annotations

import faust
import pytest
from faust.types import TP

from streams.live.faust_compat import consumer_state, in_partition, repair_acks


class _Message:
    def __init__(self, partition: int) -> None:
        self.partition = partition


class _Event:
    """Just what faust's stores read of the current event (and weak-referable, as events are)."""

    def __init__(self, partition: int) -> None:
        self.message = _Message(partition)


def _app(tmp_path, store: str) -> faust.App:
    return faust.App("compat-test", broker="kafka://127.0.0.1:1", store=store,
                     datadir=str(tmp_path), key_serializer="raw", value_serializer="raw",
                     web_enabled=False)


def test_faust_refuses_table_writes_outside_stream_iteration(tmp_path):
    # faust-streaming/faust#497: why the worker writes Table.data and sends the changelog
    # itself (Table.send_changelog with the partition) instead of table[key] = value.
    table = _app(tmp_path, "memory://").Table("t", key_type=bytes, value_type=bytes)
    with pytest.raises(TypeError, match="outside of stream iteration"):
        table[b"k"] = b"v"


def test_the_rocksdb_store_files_a_write_under_the_current_events_partition(tmp_path):
    # Why in_partition is needed: the RocksDB store reads faust's current event on every write.
    table = _app(tmp_path, "rocksdb://").Table("t", key_type=bytes, value_type=bytes,
                                               partitions=6)
    with pytest.raises(AssertionError):
        table.data[b"k"] = b"v"  # no current event
    with in_partition(_Event(3)):
        table.data[b"k"] = b"v"
        assert table.data[b"k"] == b"v"


def test_an_offset_acked_twice_stalls_faust_commits_until_repaired(tmp_path):
    # robinhood/faust#625: a repeated offset in Consumer._acked stops _new_offset at the repeat.
    consumer = _app(tmp_path, "memory://").consumer
    tp = TP("t", 0)
    consumer._committed_offset[tp] = 5
    consumer._acked[tp] = [5, 6, 6, 7, 8]
    consumer._acked_index[tp] = {5, 6, 7, 8}
    stalled = consumer._new_offset(tp)
    assert stalled is not None and stalled < 9  # the bug: not the end of the acked run
    consumer._acked[tp] = [5, 6, 6, 7, 8]
    assert repair_acks(consumer) == ["t[0]"]
    assert consumer._acked[tp] == [5, 6, 7, 8]
    assert consumer._new_offset(tp) == 9
    consumer._acked[tp] = [9, 10]
    assert any("acked t[0]: committed 5" in line for line in consumer_state(consumer))
