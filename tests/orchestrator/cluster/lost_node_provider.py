"""Ray's fake multi-node provider, plus what a cloud provider does when it loses a machine.

When EC2 reclaims a spot worker, the instance is gone: the provider stops listing it, and the
autoscaler launches a replacement if trials still wait. Ray's ``FakeMultiNodeProvider`` has no
such event: a fake node whose raylet died stays in its list forever, the autoscaler (v1, node
updaters disabled) keeps re-marking it active, counts it against ``max_workers`` and never
replaces it, so a sweep that loses both of its workers waits for ever.

``LostNodeProvider`` changes only that: a worker node whose raylet process has exited is ended
(its remaining processes stopped) and no longer listed, exactly as a terminated instance is.
Everything else (launching, node ids, resources, idle termination) is Ray's own code.

autoscaler.yaml selects it with ``provider: {type: external, module: lost_node_provider.LostNodeProvider}``;
the monitor imports it from PYTHONPATH (tests/orchestrator/cluster/, which FakeCluster puts there).
"""
from __future__ import annotations

import logging

from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

logger = logging.getLogger(__name__)
RAYLET = "raylet"   # ray._private.ray_constants.PROCESS_TYPE_RAYLET


def raylet_exited(node) -> bool:
    """Whether this fake node's raylet (a child of the monitor process) has exited."""
    procs = node.all_processes.get(RAYLET) or []
    return bool(procs) and all(p.process.poll() is not None for p in procs)


class LostNodeProvider(FakeMultiNodeProvider):
    def non_terminated_nodes(self, tag_filters):
        with self.lock:
            for node_id, entry in list(self._nodes.items()):
                node = entry.get("node")   # the head's entry has none
                if node is not None and raylet_exited(node):
                    logger.warning(f"LostNodeProvider: the raylet of {node_id} is gone: the node is terminated")
                    self._nodes.pop(node_id)
                    self._terminate_node(entry)
        return super().non_terminated_nodes(tag_filters)
