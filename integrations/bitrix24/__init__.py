"""Bitrix24: REST client (batch, leaky-bucket limits), event parser, app install, emulator."""
