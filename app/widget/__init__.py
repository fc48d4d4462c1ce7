"""Warnings inside the CRM card: the amoCRM widget's API and the Bitrix24 deal tab."""
