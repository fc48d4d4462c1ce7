"""`crmwatch widget build`: an archive amoCRM accepts as a private integration's widget."""

from __future__ import annotations

import json
import struct
import zipfile

import pytest

from app.cli import main
from integrations.amocrm.widget_bundle import LOGOS


def test_the_archive_holds_what_amocrm_asks_for(tmp_path, capsys):
    out = tmp_path / "widget.zip"
    assert main(["widget", "build", "--crm", "amocrm", "--out", str(out), "--url", "https://cw.example.com/"]) == 0
    assert "https://cw.example.com" in capsys.readouterr().out
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        script = zf.read("script.js").decode()
        ru, en = (json.loads(zf.read(f"i18n/{lang}.json")) for lang in ("ru", "en"))
        images = {n: zf.read(n) for n in names if n.startswith("images/")}
    assert {"manifest.json", "script.js", "i18n/ru.json", "i18n/en.json"} <= names
    assert manifest["locations"] == ["lcard-1", "advanced_settings", "widget_page"]
    assert "crmwatch_dashboard" in manifest["left_menu"]
    assert manifest["widget"]["locale"] == ["ru", "en"] and manifest["widget"]["name"] == "widget.name"
    assert set(manifest["settings"]) == {"crmwatch_url"}
    assert manifest["settings"]["crmwatch_url"]["name"] == "settings.crmwatch_url"
    # The SDK callbacks, the card UI and crmwatch's address are all inside script.js.
    for callback in ("render:", "init:", "bind_actions:", "settings:", "destroy:"):
        assert callback in script
    assert script.lstrip().startswith("/*") and "define([]" in script and "$authorizedAjax" in script
    assert "var CrmwatchCard" in script and "'https://cw.example.com'" in script
    assert "@CRMWATCH_" not in script
    # Russian first, the same messages in English, and the texts the issue asks for.
    assert ru["card"].keys() == en["card"].keys()
    assert "Всё в порядке" in ru["card"]["empty"] and "crmwatch недоступен" in ru["card"]["unavailable"]
    assert "Сессия истекла" in ru["card"]["expired"]
    assert ru["widget"]["name"] == en["widget"]["name"] == "crmwatch"
    for name, (width, height) in LOGOS.items():
        png = images[f"images/{name}"]
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
        assert struct.unpack(">II", png[16:24]) == (width, height)


def test_the_build_is_reproducible(tmp_path):
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    for out in (a, b):
        assert main(["widget", "build", "--out", str(out), "--url", "https://cw.example.com"]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_only_crms_with_a_card_widget_can_be_built(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["widget", "build", "--crm", "pipedrive", "--out", str(tmp_path / "x.zip")])
    assert exc.value.code == 2
    assert not (tmp_path / "x.zip").exists()
