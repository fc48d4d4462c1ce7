from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.deps import account_or_404, runtime
from app.runtime import Runtime
from app.security import require_admin

from . import config

router = APIRouter(prefix="/api/accounts", tags=["rules"], dependencies=[Depends(require_admin)])


@router.get("/{account_id}/rules", response_model=config.RulesDocument)
async def get_rules(account_id: int, rt: Runtime = Depends(runtime)) -> config.RulesDocument:
    """The account's rule settings with every default filled in."""
    async with rt.reads() as s:
        await account_or_404(s, account_id)
        return (await config.load(s, account_id)).with_defaults()


@router.put("/{account_id}/rules", response_model=config.RulesDocument)
async def put_rules(account_id: int, document: dict[str, Any] = Body(...),
                    rt: Runtime = Depends(runtime)) -> Any:
    """Replaces the whole document. Overrides by pipeline (`pipelines`) and stage (`stages`,
    keyed `pipeline_id/stage_id`) hold only what differs; every value is checked against the rule."""
    try:
        doc = config.RulesDocument.model_validate(document)
    except ValidationError as exc:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": "invalid rules document", "errors": jsonable_encoder(errors)},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    async with rt.sessions() as s, s.begin():
        account = await account_or_404(s, account_id)
        await config.save(s, account_id, doc)
        account.next_sweep_at = None  # new settings: sweep at the scheduler's next tick
    return doc.with_defaults()
