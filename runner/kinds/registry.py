"""Every kind runner knows, by family: plain dicts of name -> implementation.

The flow schema's lists of kinds must equal these keys (a test compares them both
ways). `runner.lang` builds and checks flows through these, `runner.runtime` runs them.
"""

from __future__ import annotations

from runner.kinds.base import ConfidenceMethod, StepKind, ToolKind
from runner.kinds.confidence.methods import METHODS
from runner.kinds.policies.detectors import DETECTORS
from runner.kinds.policies.kinds import POLICY_KINDS
from runner.kinds.steps import agent, approval, llm, policies, switch, tool
from runner.kinds.tools import http, mcp, python, smtp

STEP_KINDS: dict[str, StepKind] = {
    kind.name: kind
    for kind in (llm.KIND, agent.KIND, tool.KIND, switch.KIND, policies.KIND, approval.KIND)
}
TOOL_KINDS: dict[str, ToolKind] = {k.name: k for k in (python.KIND, http.KIND, smtp.KIND, mcp.KIND)}
CONFIDENCE_METHODS: dict[str, ConfidenceMethod] = METHODS

__all__ = ["CONFIDENCE_METHODS", "DETECTORS", "POLICY_KINDS", "STEP_KINDS", "TOOL_KINDS"]
