"""Gymnasium side of trl-lead: environments, and the bandit policies of ``trl_lead.policies`` (numpy only, no torch).

It builds on ``trl_lead``'s numpy modules (policies, settings, selection); ``trl_lead`` never imports ``envs``.

Importing ``envs`` registers the environments with Gymnasium, so ``gymnasium.make("trl_lead/...")`` works.
"""

import gymnasium

from envs.policies import POLICIES, Policy, make_policy

__all__ = ["POLICIES", "Policy", "make_policy"]

# One register() call per environment; ids are namespaced "trl_lead/".
_ENVS = {
    "trl_lead/ClusterBandit-v0": ("envs.cluster_bandit:ClusterBandit", False),
    "trl_lead/ProxyTraining-v0": ("envs.proxy_training:ProxyTraining", False),
    # Real training: bitwise reproducible on CPU, not on GPUs, and its expected rewards are unknown (NaN)
    "trl_lead/LiveTraining-v0": ("envs.live_training:LiveTraining", True),
}

for _env_id, (_entry_point, _nondeterministic) in _ENVS.items():
    if _env_id not in gymnasium.registry:
        gymnasium.register(id=_env_id, entry_point=_entry_point, nondeterministic=_nondeterministic)
