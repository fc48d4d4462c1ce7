"""Synchronous "who is calling?" answers for PBXs that ask (MegaFon's `contact` command)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, false, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.mirror.models import Contact, ContactPhone

from .models import TelephonyConfig


async def who_is(s: AsyncSession, account_id: int, number: str, provider: str = "megafon") -> dict[str, Any]:
    """The client's name and their responsible manager as the PBX knows them (its login), from
    the mirror. Empty when the number is unknown: the PBX then routes the call as usual."""
    row = (
        await s.execute(
            select(Contact.name, Contact.responsible_user_id)
            .join(
                ContactPhone, and_(ContactPhone.account_id == Contact.account_id, ContactPhone.contact_id == Contact.id)
            )
            .where(Contact.account_id == account_id, ContactPhone.phone == number, Contact.is_deleted == false())
            .order_by(Contact.source_updated_at.desc(), Contact.id)
            .limit(1)
        )
    ).first()
    if row is None:
        return {}
    extensions = (
        await s.scalar(
            select(TelephonyConfig.extensions).where(
                TelephonyConfig.account_id == account_id, TelephonyConfig.provider == provider
            )
        )
        or {}
    )
    logins = {str(user): ext for ext, user in extensions.items()}
    answer: dict[str, Any] = {"contact_name": row.name or ""}
    if row.responsible_user_id and row.responsible_user_id in logins:
        answer["responsible"] = logins[row.responsible_user_id]
    return answer
