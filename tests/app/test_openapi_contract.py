"""`/openapi.json` says what the server really sends (issue 17, contract drift): the 422 shape,
the 4xx answers every operation may give, the CRMs an account may name, the Allow header of a
405, and working hours without a zone."""

from __future__ import annotations

import re

from fastapi.routing import iter_route_contexts

from tests.conftest import create_account

METHODS = ("get", "put", "post", "delete", "patch")


async def _schema(client) -> dict:
    resp = await client.get("/openapi.json")
    assert resp.status_code == 200
    return resp.json()


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _conforms(schema: dict, node: dict, value) -> bool:
    """A small structural check: types, required keys, enums and patterns (enough for our answers)."""
    node = _resolve(schema, node)
    if "anyOf" in node:
        return any(_conforms(schema, n, value) for n in node["anyOf"])
    kind = node.get("type")
    if "enum" in node and value not in node["enum"]:
        return False
    if kind == "object":
        return (
            isinstance(value, dict)
            and all(k in value for k in node.get("required", ()))
            and all(
                _conforms(schema, node["properties"][k], v) for k, v in value.items() if k in node.get("properties", {})
            )
        )
    if kind == "array":
        return isinstance(value, list) and all(_conforms(schema, node.get("items", {}), v) for v in value)
    if kind == "string":
        return isinstance(value, str) and ("pattern" not in node or re.search(node["pattern"], value) is not None)
    if kind == "integer":
        return isinstance(value, int)
    return True


async def test_a_422_is_documented_as_it_is_sent(client):
    schema = await _schema(client)
    acc = await create_account(client)
    answers = [
        await client.patch(f"/api/accounts/{acc['id']}", json={"timezone": "Mars/Olympus"}),  # a field validator
        await client.get(f"/api/accounts/{acc['id']}/findings", params={"limit": "many"}),  # a query parameter
        await client.put(f"/api/accounts/{acc['id']}/widget", json={"audience": "not a url"}),
        await client.get("/api/accounts/2147483648"),  # the bounded path id
    ]
    for resp in answers:
        assert resp.status_code == 422, resp.text
        assert _conforms(schema, {"$ref": "#/components/schemas/HTTPValidationError"}, resp.json()), resp.json()
    # An HTTPException's 422 has the same shape: its message is the summary and the one error.
    dash = await client.post(f"/api/accounts/{acc['id']}/dashboard/links", json={"manager_id": "999999"})
    if dash.status_code == 422:
        assert _conforms(schema, {"$ref": "#/components/schemas/HTTPValidationError"}, dash.json()), dash.json()
    ops = [op for item in schema["paths"].values() for m, op in item.items() if m in METHODS]
    for op in ops:
        resp422 = op["responses"].get("422")
        if resp422:
            assert resp422["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/HTTPValidationError"
            }


async def test_every_operation_documents_the_errors_it_can_answer(client):
    schema = await _schema(client)
    missing = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            want = {"400"}
            if path.startswith("/api/"):
                want.add("401")
            if "{" in path:
                want |= {"404", "422"}
            if "requestBody" in op:
                want |= {"413", "422"}
            changes = path.startswith(("/api/findings/", "/api/outbox/")) and method == "post"
            if (changes or path.startswith("/widget/")) and "{" in path:
                want.add("409")
            lacking = want - set(op["responses"])
            if lacking:
                missing.append((method, path, sorted(lacking)))
            for code, answer in op["responses"].items():
                if code.startswith("4"):
                    assert answer.get("content"), (method, path, code)
    assert missing == []
    assert schema["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"


async def test_the_schema_refuses_what_the_server_refuses(client):
    schema = await _schema(client)
    crm = schema["components"]["schemas"]["AccountCreate"]["properties"]["crm"]
    assert crm["enum"] == ["amocrm", "bitrix24"] and "" not in crm["enum"]
    resp = await client.post(
        "/api/accounts", json={"name": "x", "crm": "", "base_url": "https://x.amocrm.ru", "access_token": "t"}
    )
    assert resp.status_code == 422


async def test_working_hours_come_back_as_the_schema_says_and_a_zone_is_refused(client):
    schema = await _schema(client)
    acc = await create_account(client)
    calendar = schema["components"]["schemas"]["CalendarIn"]["properties"]
    assert "format" not in calendar["work_start"]
    got = (await client.get(f"/api/accounts/{acc['id']}/rules")).json()["calendar"]
    for field in ("work_start", "work_end"):
        assert re.search(calendar[field]["pattern"], got[field]), got[field]
    resp = await client.patch(f"/api/accounts/{acc['id']}/rules", json={"calendar": {"work_start": "09:30"}})
    assert resp.status_code == 200 and resp.json()["calendar"]["work_start"].startswith("09:30")
    resp = await client.patch(f"/api/accounts/{acc['id']}/rules", json={"calendar": {"work_start": "09:30+03:00"}})
    assert resp.status_code == 422, resp.text


async def test_a_405_allows_every_method_of_the_path(client, app):
    acc = await create_account(client)
    by_path: dict[str, set[str]] = {}
    for route in iter_route_contexts(app.routes):
        if route.path and route.methods and "{path:path}" not in route.path:
            by_path.setdefault(route.path, set()).update(route.methods)
    checked = 0
    for path, methods in by_path.items():
        unused = next((m for m in ("PUT", "PATCH", "DELETE", "POST", "GET") if m not in methods), None)
        if unused is None:
            continue
        url = re.sub(r"{(\w+)_id}", str(acc["id"]), path).replace("{key}", acc["key"]).replace("{provider}", "mango")
        url = url.replace("{event:path}", "summary").replace("{secret}", "x").replace("{name}", "x")
        resp = await client.request(unused, url)
        if resp.status_code != 405:
            continue  # another route of a wider pattern answers this method (e.g. the card's OPTIONS)
        allowed = set(resp.headers["allow"].split(", "))
        expected = {m for m in methods}
        if "GET" in expected:
            expected.add("HEAD")
        assert expected <= allowed, (unused, path, allowed)
        checked += 1
    assert checked >= 20
    resp = await client.put(f"/api/accounts/{acc['id']}")
    assert resp.status_code == 405 and resp.headers["allow"] == "DELETE, GET, HEAD, PATCH"
