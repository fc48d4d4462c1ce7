"""Business calendars: working time in an account's local hours, holidays and transferred working days."""
