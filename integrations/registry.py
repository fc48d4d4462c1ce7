"""The only place that names vendors: app/ looks adapters up here by the account's `crm`."""

from __future__ import annotations

from collections.abc import Callable

from integrations.amocrm.adapter import AmoCrmAdapter
from integrations.base import CrmAdapter
from integrations.bitrix24.adapter import Bitrix24Adapter

CRM_ADAPTERS: dict[str, CrmAdapter] = {adapter.name: adapter for adapter in (AmoCrmAdapter(), Bitrix24Adapter())}


def crm_adapter(name: str) -> CrmAdapter:
    return CRM_ADAPTERS[name]


def widget_builder(name: str) -> Callable[..., list[str]]:
    """The builder of a CRM's in-card widget archive: build(out, crmwatch_url=, card_core_js=)."""
    if name == "amocrm":
        from integrations.amocrm.widget_bundle import build

        return build
    raise KeyError(f"no card widget to build for {name!r}")


# PBXs: app/ finds them by the provider name in the hook URL and the telephony settings.
from integrations.telephony.base import TelephonyAdapter  # noqa: E402
from integrations.telephony.generic import GenericAdapter  # noqa: E402
from integrations.telephony.mango import MangoAdapter  # noqa: E402
from integrations.telephony.megafon import MegafonAdapter  # noqa: E402
from integrations.telephony.sipuni import SipuniAdapter  # noqa: E402
from integrations.telephony.zadarma import ZadarmaAdapter  # noqa: E402

TELEPHONY_ADAPTERS: dict[str, TelephonyAdapter] = {
    adapter.name: adapter
    for adapter in (MangoAdapter(), ZadarmaAdapter(), MegafonAdapter(), SipuniAdapter(), GenericAdapter())
}
# The inbox `source` of a PBX callback: "telephony.mango".
TELEPHONY_SOURCE = "telephony."


def telephony_adapter(name: str) -> TelephonyAdapter:
    return TELEPHONY_ADAPTERS[name]
