from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError

from app.deps import AccountId, account_or_404, runtime
from app.merge_patch import merge_patch
from app.runtime import Runtime
from app.security import require_admin

from . import config

router = APIRouter(prefix="/api/accounts", tags=["rules"], dependencies=[Depends(require_admin)])

MERGE_PATCH = "application/merge-patch+json"


class RulesAnswer(config.RulesDocument):
    """The document with every default filled in, and what the write found doubtful (not part of
    the document: a PUT of this answer leaves `warnings` out)."""

    warnings: list[str] = Field(default_factory=list)


def _invalid(exc: ValidationError) -> JSONResponse:
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    return JSONResponse(
        {"detail": "invalid rules document", "errors": jsonable_encoder(errors)},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def _write(rt: Runtime, account_id: int, change: Any) -> Any:
    """Validates the document `change` makes of the stored one, and stores it (whole) when valid."""
    async with rt.sessions() as s, s.begin():
        account = await account_or_404(s, account_id)
        stored = (await config.load(s, account_id)).model_dump(mode="json")
        document = change(stored)
        if isinstance(document, dict):
            document = {k: v for k, v in document.items() if k != "warnings"}
        try:
            doc = config.RulesDocument.model_validate(document)
        except ValidationError as exc:
            return _invalid(exc)  # the transaction is only read from: nothing is stored
        await config.save(s, account_id, doc)
        account.next_sweep_at = None  # new settings: sweep at the scheduler's next tick
        warnings = await config.unknown_places(s, account_id, doc)
    return RulesAnswer(**doc.with_defaults().model_dump(), warnings=warnings)


@router.get("/{account_id}/rules", response_model=config.RulesDocument)
async def get_rules(account_id: AccountId, rt: Runtime = Depends(runtime)) -> config.RulesDocument:
    """The account's rule settings with every default filled in."""
    async with rt.reads() as s:
        await account_or_404(s, account_id)
        return (await config.load(s, account_id)).with_defaults()


@router.put("/{account_id}/rules", response_model=RulesAnswer)
async def put_rules(account_id: AccountId, document: dict[str, Any] = Body(...), rt: Runtime = Depends(runtime)) -> Any:
    """**Replaces the whole document**: whatever it leaves out goes back to its default (working
    hours, grace periods, other rules' settings). To change a few values, use PATCH. Overrides by
    pipeline (`pipelines`) and stage (`stages`, keyed `pipeline_id/stage_id`) hold only what
    differs; every value is checked against the rule. `warnings` names pipelines and stages the
    CRM does not have (as far as the mirror knows); they are kept."""
    return await _write(rt, account_id, lambda stored: document)


@router.patch(
    "/{account_id}/rules",
    response_model=RulesAnswer,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                MERGE_PATCH: {"schema": {"type": "object"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def patch_rules(account_id: AccountId, patch: dict[str, Any] = Body(...), rt: Runtime = Depends(runtime)) -> Any:
    """Changes part of the document with a JSON Merge Patch (RFC 7396; `Content-Type:
    application/merge-patch+json`, `application/json` is accepted too): objects merge key by key,
    `null` removes a key (it goes back to its default), anything else replaces what was there.
    The result is checked as a whole; an invalid one is refused and nothing changes."""
    return await _write(rt, account_id, lambda stored: merge_patch(stored, patch))
