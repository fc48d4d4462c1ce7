"""A Telegram Bot API emulator for the demo: `sendMessage` with the real answer shapes.

It keeps what it was sent (chat id, text, parse mode) so the demo can print the chat. A token
that is not "<digits>:<secret>" gets Telegram's 401; an unknown chat, its 400.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

TOKEN = re.compile(r"^([0-9]{1,20}):[A-Za-z0-9_-]{20,100}$")


@dataclass
class TelegramState:
    chats: set[str] = field(default_factory=set)
    messages: list[dict[str, Any]] = field(default_factory=list)


def create_telegram_app(state: TelegramState) -> FastAPI:
    app = FastAPI(title="Telegram Bot API emulator", openapi_url=None)

    @app.post("/bot{token}/sendMessage")
    async def send_message(token: str, request: Request) -> JSONResponse:
        match = TOKEN.match(token)
        if match is None:
            return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"}, status_code=401)
        body = await request.json()
        chat = str(body.get("chat_id", ""))
        if chat not in state.chats:
            return JSONResponse(
                {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, status_code=400
            )
        message = {
            "message_id": len(state.messages) + 1,
            "from": {"id": int(match.group(1)), "is_bot": True, "first_name": "crmwatch"},
            "chat": {"id": int(chat) if chat.lstrip("-").isdigit() else chat, "type": "group"},
            "date": int(time.time()),
            "text": body.get("text", ""),
        }
        state.messages.append({**message, "parse_mode": body.get("parse_mode")})
        return JSONResponse({"ok": True, "result": message})

    return app
