"""What the model is offered in a turn, and ``tool_choice`` enforced by Spindle itself.

Several backends ignore ``tool_choice``, so the engine narrows the offered tools to the
chosen one, checks the answer, and retries with a reminder when the model did not comply.
Forcing applies to the run's first model turn only, as on OpenAI (otherwise a forced call
would repeat forever).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spindle.tools.base import BuiltinTool, RunContext


@dataclass
class Offer:
    specs: list[dict[str, Any]]  # chat-completions tool specs
    choice: Any  # tool_choice sent upstream (None = leave it out)
    required_names: set[str] = field(default_factory=set)  # a call to one of these is required
    builtin_by_name: dict[str, BuiltinTool] = field(default_factory=dict)
    function_names: set[str] = field(default_factory=set)

    @property
    def forced(self) -> bool:
        return bool(self.required_names)


def function_spec(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool["function"]
    spec: dict[str, Any] = {"name": fn["name"], "parameters": fn.get("parameters") or {"type": "object", "properties": {}}}
    if fn.get("description"):
        spec["description"] = fn["description"]
    if fn.get("strict") is not None:
        spec["strict"] = fn["strict"]
    return {"type": "function", "function": spec}


def build_offer(ctx: RunContext, builtins: dict[str, BuiltinTool], tool_choice: Any, first_turn: bool) -> Offer:
    specs: list[dict[str, Any]] = []
    by_name: dict[str, BuiltinTool] = {}
    owner: dict[str, str] = {}  # function name -> tool type
    functions: set[str] = set()
    for tool in ctx.tools:
        kind = tool.get("type")
        if kind == "function":
            spec = function_spec(tool)
            specs.append(spec)
            functions.add(spec["function"]["name"])
            owner[spec["function"]["name"]] = "function"
        elif kind in builtins:
            for spec in builtins[kind].functions(ctx):
                specs.append(spec)
                by_name[spec["function"]["name"]] = builtins[kind]
                owner[spec["function"]["name"]] = kind
    offer = Offer(specs=specs, choice=None, builtin_by_name=by_name, function_names=functions)
    if not specs or tool_choice == "none":
        offer.specs, offer.choice = [], None
        return offer
    if not first_turn or tool_choice in (None, "auto"):
        offer.choice = "auto"
        return offer
    if tool_choice == "required":
        offer.choice = "required"
        offer.required_names = set(owner)
        return offer
    if isinstance(tool_choice, dict):
        kind = tool_choice.get("type")
        if kind == "function":
            wanted = {(tool_choice.get("function") or {}).get("name")}
        else:
            wanted = {name for name, t in owner.items() if t == kind}
        offer.specs = [s for s in specs if s["function"]["name"] in wanted]
        offer.required_names = {s["function"]["name"] for s in offer.specs}
        if len(offer.specs) == 1:
            offer.choice = {"type": "function", "function": {"name": offer.specs[0]["function"]["name"]}}
        else:
            offer.choice = "required"
    return offer


REMINDER = ("You must answer this turn by calling one of the provided tools ({names}); do not reply with text.")
