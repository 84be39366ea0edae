"""The bandit policies, for the Gymnasium side: they live in :mod:`trl_lead.policies` (numpy only), as part of LEAD."""

from trl_lead.policies import *  # noqa: F403  (the whole public API, as listed in its __all__)
from trl_lead.policies import __all__  # noqa: F401
