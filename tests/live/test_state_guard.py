"""streams.live.state_guard.check_state, on stand-ins for the admin client and consumer (the
real broker: tests/integration/test_faults_long.py): which combinations of committed input
offsets and changelog offsets mean lost state."""
from __future__ import annotations

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from streams.live.state_guard import check_state, skip_stale_ticks

INPUTS = ("pos.authorisations", "pos.settlements")
CHANGELOGS = ["app-merchants-changelog", "app-clocks-changelog"]


class FakeKafka:
    def __init__(self, committed: dict[tuple[str, int], int], topics: dict[str, list[tuple]]):
        self.committed = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                          for (t, p), o in committed.items()}
        self.topics = topics  # name -> [(start, end)] per partition
        self.commits: list[dict] = []

    # admin
    def list_group_offsets(self, group):
        return {group: self.committed}

    def describe_topics(self, names):
        return [{"topic": n, "error_code": 0,
                 "partitions": [{"partition_index": i} for i in range(len(self.topics[n]))]}
                for n in names if n in self.topics]

    # consumer
    def beginning_offsets(self, tps):
        return {tp: self.topics[tp.topic][tp.partition][0] for tp in tps}

    def end_offsets(self, tps):
        return {tp: self.topics[tp.topic][tp.partition][1] for tp in tps}

    def partitions_for_topic(self, topic):
        return set(range(len(self.topics.get(topic, []))))


def check(committed, topics):
    k = FakeKafka(committed, topics)
    return check_state(k, k, "app", INPUTS, CHANGELOGS)


WHOLE = {"app-merchants-changelog": [(0, 10), (0, 0)], "app-clocks-changelog": [(0, 3), (0, 2)]}


def test_a_new_group_is_never_refused_even_without_changelogs():
    assert check({}, {}) == []
    assert check({("pos.authorisations", 0): 0}, {}) == []


def test_whole_changelogs_under_a_committed_group_pass():
    assert check({("pos.authorisations", 0): 50, ("pos.settlements", 1): 7}, WHOLE) == []


def test_a_deleted_changelog_topic_is_named():
    topics = {"app-clocks-changelog": WHOLE["app-clocks-changelog"]}
    problems = check({("pos.settlements", 1): 7}, topics)
    assert problems == ["changelog topic app-merchants-changelog missing"]


def test_records_deleted_from_a_changelog_partition_are_named():
    topics = dict(WHOLE, **{"app-clocks-changelog": [(0, 3), (2, 2)]})
    problems = check({("pos.settlements", 1): 7}, topics)
    assert problems == ["records deleted from changelogs (not compacted): "
                        "app-clocks-changelog[1] starts at offset 2"]


def test_a_read_partition_whose_changelogs_are_all_empty_is_named():
    topics = {"app-merchants-changelog": [(0, 10), (0, 0)],
              "app-clocks-changelog": [(0, 3), (0, 0)]}
    problems = check({("pos.authorisations", 1): 4}, topics)
    assert len(problems) == 1 and "input partitions [1] were read" in problems[0]
    # Progress on another topic's partition 1 does not count (only the inputs do).
    assert check({("app-clocks-changelog", 1): 4, ("pos.authorisations", 0): 1}, topics) == []


def test_a_new_group_starts_the_tick_topic_at_its_end_and_an_old_one_does_not():
    k = FakeKafka({}, {"ticks": [(0, 5), (2, 2), (1, 9)]})
    assert skip_stale_ticks(k, k, "app", "ticks", k.commits.append) == 13
    assert k.commits == [{TopicPartition("ticks", 0): OffsetAndMetadata(5, "", -1),
                          TopicPartition("ticks", 1): OffsetAndMetadata(2, "", -1),
                          TopicPartition("ticks", 2): OffsetAndMetadata(9, "", -1)}]
    old = FakeKafka({("pos.authorisations", 0): 3}, {"ticks": [(0, 5)]})
    assert skip_stale_ticks(old, old, "app", "ticks", old.commits.append) is None
    assert old.commits == []
