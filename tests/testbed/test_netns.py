"""Replicas in their own network namespaces (needs root and ``ip``; skipped elsewhere): the links
between them are real veth cables, and the testbed's partitions and one-way cuts act on them.
(``bft testbed chaos --netns`` runs a whole chaos run this way.)"""

from __future__ import annotations

import pytest

from bft.testbed import netns

WHY = netns.unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")


def test_partitions_and_one_way_cuts_act_on_real_links() -> None:
    with netns.NetnsTopology(3) as topology:
        assert topology.can_connect(0, 1) and topology.can_connect(2, 0)
        topology.partition([[0], [1, 2]])
        assert not topology.can_connect(0, 1) and not topology.can_connect(2, 0)
        assert topology.can_connect(1, 2)
        topology.heal()
        assert topology.can_connect(0, 1) and topology.can_connect(2, 0)
        topology.cut_one_way(0, 1)
        assert not topology.can_connect(0, 1) and topology.can_connect(0, 2)
        topology.heal()
        assert topology.can_connect(0, 1)
    assert all(not netns.namespace_exists(ns) for ns in topology.created_names)
