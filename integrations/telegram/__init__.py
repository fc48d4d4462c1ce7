"""Telegram Bot API pieces that need nothing of crmwatch: the emulator the demo sends digests into."""
