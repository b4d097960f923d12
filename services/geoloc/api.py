"""The API's short names for its Expert enum, as command lines, CSV columns, reports and logs spell them.

One mapping for the orchestrator that answers with these enums and for the clients and the
evaluation that read them; it sits just above the generated stubs, below every other package.
"""

from __future__ import annotations

from geoloc.v1 import orchestrator_pb2

EXPERT_ENUMS = {
    "gallery": orchestrator_pb2.EXPERT_GALLERY,
    "flow": orchestrator_pb2.EXPERT_SAMPLER_FLOW,
    "sh": orchestrator_pb2.EXPERT_SAMPLER_SH_DIFFUSION,
    "tokens": orchestrator_pb2.EXPERT_TOKENS,
    "text": orchestrator_pb2.EXPERT_TEXT,
}
EXPERT_NAMES = {value: name for name, value in EXPERT_ENUMS.items()}
EXPERTS = tuple(EXPERT_ENUMS)  # in the API's order
