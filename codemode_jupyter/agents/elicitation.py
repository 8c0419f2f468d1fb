"""Approvals through the agent's client: an MCP elicitation asks whether a call may run."""

from __future__ import annotations

import asyncio
from typing import Any

from codemode_jupyter.agents.approval import ApprovalRequest, Decision


async def elicit(ctx: Any, request: ApprovalRequest, code: str, timeout: float | None) -> Decision:
    """Ask the agent's client (MCP elicitation) whether the call may run."""
    from pydantic import BaseModel, Field

    class Approval(BaseModel):
        approve: bool = Field(description="Run this call?")
        reason: str = Field(default="", description="Why not (told to the program)")

    message = f"Allow the agent's program to call {request.describe()}?"
    line = program_line(code, request.tool)
    if line is not None:
        message += f"\n(the program's line {line[0]}: {line[1]})"
    answer = await asyncio.wait_for(ctx.elicit(message, Approval), timeout)
    if answer.action == "accept":
        if answer.data.approve:
            return Decision("approve", by="client")
        reason = answer.data.reason or "rejected in the agent's client"
        return Decision("reject", reason=reason, by="client")
    return Decision("reject", reason=f"the agent's client answered {answer.action}", by="client")


def program_line(code: str, tool: str) -> tuple[int, str] | None:
    """(number, text) of the program's first line that calls `tool`, if any."""
    for number, text in enumerate(code.splitlines(), 1):
        if f"{tool}(" in text or f"{tool}_async(" in text:
            return number, text.strip()
    return None
