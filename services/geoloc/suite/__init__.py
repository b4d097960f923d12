"""`geoloc up|down|status`: the whole suite on one machine, as local processes on loopback.

    plan.py       what to start: each component's command, environment, ports and dependencies (pure)
    processes.py  detached processes, and whether a recorded pid is still the one we started
    health.py     one health probe per component (grpc.health.v1, or Triton's own readiness)
    state.py      the run directory's state file and lock
    lifecycle.py  up (in dependency order, each waiting for its dependencies' health), down, status
    cli.py        the three subcommands

The names live here, apart from grpc and the plan, so that `geoloc --help` stays light; they come
from the registry of services (geoloc.experts), which loads without grpc.
"""

from geoloc.experts import SERVICES

# Every component, in the order the tables list them (dependencies first): Triton, the services
# the orchestrator calls, the orchestrator.
COMPONENTS = ("triton", *(s for s in SERVICES if s != "orchestrator"), "orchestrator")
