"""English wording (see __init__.py)."""

# -- rules: titles, and the message of a finding ------------------------------------------------

RULE_TITLES = {
    "overdue_task": "Overdue task",
    "deal_without_task": "Deal without a task",
    "stuck_stage": "Deal stuck in a stage",
    "task_rescheduled_without_contact": "Task moved without contact",
    "empty_comment": "Empty comment",
    "call_not_logged": "Call not logged",
    "missed_call_not_returned": "Missed call not returned",
    "unknown_number": "Call from an unknown number",
    "lead_not_contacted": "New lead not contacted",
    "plan_behind_pace": "Behind the plan",
}

RULE_MESSAGES = {
    "overdue_task": "Task “{text}” is overdue by {late}",
    "deal_without_task": "The deal has had no open task for {span}",
    "stuck_stage": "The deal has been in stage “{stage}” for {span}",
    "task_rescheduled_without_contact": "Task “{text}” was moved from {old} to {new} with no call or note",
    "empty_comment": "Empty comment “{text}”: write what the contact was about",
    "call_not_logged": "Write down the call with {number} at {when} ({talk}): the card has no note or task since",
    "missed_call_not_returned": "Missed call from {number} at {when}: nobody has called back for {waited}",
    "unknown_number": "A call from {number} ({when}) that the CRM does not know: create the contact and deal, "
    "it is a lead",
    "lead_not_contacted": "New deal of {when}: nobody has contacted the client for {waited}",
    "plan_behind_pace": "{name} is {percent} % behind the month's plan: {milestone} {fact} of the {expected} "
    "expected by now (the month's plan: {target})",
}

UNTITLED_TASK = "untitled"

# -- what crmwatch writes into the CRM for a finding, by (outbox kind, purpose) -------------------

A_PROBLEM = "a problem"  # when the finding itself is gone
CRM_TEXTS = {
    ("create_task", "open"): "{message}. Fix it and complete this task.",
    ("create_task", "escalate"): "Escalation ({who}): {message}",
    ("add_note", "open"): "crmwatch: {message} (since {since})",
    ("add_note", "repeat"): "crmwatch reminder: {message}",
    ("add_note", "resolve"): "crmwatch: resolved: {message}",
    ("close_task", "resolve"): "Resolved: {message}",
}

# -- digests: one task instead of many (a new connection's backlog, or too many at once) -------

DIGEST_BACKLOG = (
    "crmwatch is connected and has checked your deals: {total} problems. It set no task for each one: "
    "work through them from the list."
)
DIGEST_BACKLOG_TEAM = (
    "crmwatch is connected and has checked the team's deals: {total} problems. Each manager got one "
    "summary task instead of a task per problem."
)
DIGEST_FLOOD = (
    "crmwatch: one check found {actions} tasks and notes for you ({total} problems). So as not to bury "
    "you in them, they are gathered in this one task."
)
DIGEST_RULE_LINE = "• {title}: {count}"
DIGEST_ESCALATIONS = "Escalations among them: {count}."
DIGEST_BY_MANAGER = "By manager: {managers}."
DIGEST_WHERE = "Each problem shows in its deal's card (the crmwatch widget) and on the crmwatch dashboard."

# -- the page a task's or note's link opens (app/findings/page.py) ---------------------------------

PAGE_LINK = "Details: {url}"
PAGE = {
    "lang": "en",
    "title": "crmwatch: a problem",
    "digest_title": "crmwatch: a summary of problems",
    "status": {
        "pending": "pending",
        "open": "open",
        "acknowledged": "acknowledged",
        "snoozed": "snoozed",
        "resolved": "resolved",
    },
    "since": "Since {since}",
    "manager": "in charge: {name}",
    "open_deal": "Open the deal “{deal}” in the CRM",
    "gone": "This problem is no longer there.",
    "empty": "Nothing left here: all resolved or acknowledged.",
    "refused": "This link does not fit: perhaps it was not copied whole.",
    "read_only": "A read-only page. A problem is acknowledged or snoozed in the deal's card (the crmwatch widget).",
}

# -- the call log: a note on the deal for a call the CRM would not file by number -----------------

CALL_INCOMING = "Incoming call"
CALL_OUTGOING = "Outgoing call"
CALL_TALK = "talk {duration}"
CALL_NOT_ANSWERED = "not answered"

# -- the Bitrix24 deal tab -------------------------------------------------------------------------

DEAL_TAB = {
    "lang": "en",
    "heading": "crmwatch: issues on this deal",
    "loading": "Loading…",
    "empty": "All is in order: nothing to fix on this deal.",
    "acknowledge": "Acknowledge",
    "snooze": "Snooze",
    "snooze_1h": "1 hour",
    "snooze_tomorrow": "until tomorrow",
    "snooze_1w": "1 week",
    "since": "since",
    "unavailable": "crmwatch is unavailable. Retrying in a few seconds.",
    "expired": "The session has expired: reopen the tab.",
    "denied": "Access to crmwatch was refused.",
    "failed": "Could not save that, please try again.",
    "user": "Signed in as",
    "done_ack": "Acknowledged.",
    "done_snooze": "Snoozed {until}.",
    "undo": "Undo",
    "snoozed_line": "{count} snoozed {until}",
    "unsnooze": "Bring back",
    "severity_critical": "Critical",
    "severity_warning": "Warning",
    "severity_info": "Info",
}

DEAL_TAB_REFUSALS = {
    "bad_request": ("Incomplete request", "Bitrix24 opens this tab from a deal card."),
    "not_installed": ("The app is not installed", "This Bitrix24 portal is not connected to crmwatch."),
    "forged": (
        "Sign-in not confirmed",
        "Bitrix24 did not confirm this sign-in. Open the deal in Bitrix24 and this tab again.",
    ),
    "portal_down": ("Bitrix24 did not answer", "The sign-in could not be checked with the portal. Reload."),
}

# -- the head of sales' dashboard (app/dashboard/pages.py) and its export (app/reports/export.py) ---

DASHBOARD = {
    "lang": "en",
    "title": "crmwatch: sales team",
    "team": "Team",
    "period": "Period",
    "today": "Today",
    "yesterday": "Yesterday",
    "this_week": "This week",
    "last_week": "Last week",
    "this_month": "This month",
    "last_month": "Last month",
    "custom": "Custom",
    "apply": "Show",
    "manager": "Manager",
    "calls": "Calls",
    "talk": "Talk time",
    "successful": "Successful",
    "incoming": "In",
    "outgoing": "Out",
    "missed": "Missed",
    "cards": "Cards",
    "calls_vs_cards": "Calls not written",
    "overdue": "Overdue tasks",
    "without_task": "Deals w/o task",
    "ratio": "Tasks per deal",
    "moved": "Moved w/o contact",
    "findings": "Findings",
    "total": "Total",
    "charts": "Over time",
    "chart_calls": "Calls and successful calls per day",
    "chart_findings": "Findings opened and resolved per day",
    "chart_rules": "Open findings by rule",
    "opened": "Opened",
    "resolved": "Resolved",
    "expired_findings": "Expired unfixed",
    "successful_short": "successful",
    "funnel": "Funnel",
    "pipeline": "Pipeline",
    "stage": "Stage",
    "open_deals": "Open deals",
    "amount": "Amount",
    "avg_days": "Avg working days",
    "stage_conversion": "Moved on",
    "won": "Won",
    "lost": "Lost",
    "conversion": "Conversion",
    "avg_deal": "Avg deal size",
    "funnel_days": "Deal cycle, working days",
    "bottleneck": "Bottleneck",
    "new_clients": "New clients",
    "returning_clients": "Returning clients",
    "export": "Download",
    "deals": "Deals",
    "deal": "Deal",
    "open_in_crm": "Open in the CRM",
    "close": "Close",
    "since": "since",
    "loading": "Loading…",
    "updated": "Updated",
    "error": "Could not load the data.",
    "expired": "The session has expired: open the dashboard again.",
    "no_data": "No data for the period.",
    "flag_calls": "more calls than cards changed",
    "sec": "s",
    "min": "min",
    "h": "h",
    "self_view": "You see your own figures only.",
    "team_view": "The whole team.",
    "lag_warning": (
        "The data is {minutes} min behind the CRM — changes are still being applied, "
        "so figures and findings may be incomplete."
    ),
    # Plan and pace, ABC/XYZ (issue 16)
    "plan": "Plan and pace",
    "milestone_col": "Measure",
    "month": "Month",
    "target": "Month's target",
    "per_week": "Per week",
    "fact": "Done",
    "expected": "Expected by now",
    "pace": "Pace",
    "behind": "Behind by",
    "on_pace": "On pace",
    "m_revenue": "Revenue",
    "m_won_deals": "Won deals",
    "m_proposal_sent": "Proposals sent",
    "m_meeting_held": "Meetings held",
    "m_first_contact": "First contacts",
    "working_days": "Working days gone: {done} of {total}",
    "no_plan": "No plan for this month.",
    "conv_team": "targets at the team's conversion: too little own history",
    "abc": "ABC/XYZ of clients",
    "months_3": "3 months",
    "months_6": "6 months",
    "months_12": "12 months",
    "by_contact": "By contact",
    "by_company": "By company",
    "whole_team": "Whole team",
    "clients": "Clients",
    "movement": "Moved to another group",
    "client": "Client",
    "was": "Was",
    "now": "Now",
    "revenue": "Revenue",
    "new_lost": "New clients: {new}, lost: {lost}",
    "no_movement": "Nobody changed group.",
    "abc_hint": "A: the clients making 80 % of revenue, B: the next 15 %, C: the last 5 %; "
    "X: steady monthly purchases, Y: fluctuating, Z: irregular or one-off.",
    "payments": "Expected payments",
    "pay_overdue": "Overdue",
    "pay_today": "Today",
    "pay_tomorrow": "Tomorrow",
    "pay_week": "Next 7 days",
    "pay_received": "Received today",
    "pay_expected_on": "Expected on",
    "pay_days_overdue": "Days overdue",
    "pay_reason": "Why",
    "pay_won": "deal won",
    "pay_paid": "marked paid",
    "pay_none": "No expected payments.",
    "pay_setup": "No payment date field yet: an administrator sets it with PUT /api/accounts/{id}/payments/settings.",
    "pay_hint": "Amount: the payment amount field, else the deal's budget. "
    "Overdue: the date passed and the deal is not won.",
}

DASHBOARD_REFUSALS = {
    "unknown": ("Invalid link", "There is no such dashboard link. Ask your head of sales for a new one."),
    "expired": ("The link has expired", "This dashboard link no longer works. Ask for a new one."),
    "revoked": ("The link was revoked", "Access through this link was closed. Ask for a new one."),
    "bad_request": ("Incomplete request", "Bitrix24 opens this page from the app's menu."),
    "not_installed": ("The app is not installed", "This Bitrix24 portal is not connected to crmwatch."),
    "forged": ("Sign-in not confirmed", "Bitrix24 did not confirm this sign-in. Open the app again."),
    "portal_down": ("Bitrix24 did not answer", "The sign-in could not be checked with the portal. Reload."),
}

# The export's column headings, by the report's field names, and its sheets.
REPORT_COLUMNS = {
    "name": "Manager",
    "manager_id": "CRM id",
    "calls": "Calls",
    "talk_seconds": "Talk, s",
    "successful_calls": "Successful (≥ 40 s)",
    "incoming": "Incoming",
    "outgoing": "Outgoing",
    "missed": "Missed",
    "cards_changed": "Cards changed",
    "calls_not_written": "Calls not written down",
    "overdue_tasks": "Overdue tasks",
    "deals_without_task": "Deals without a task",
    "tasks_per_deal": "Tasks per deal",
    "tasks_moved_without_contact": "Tasks moved without contact",
    "first_contact_median_minutes": "First contact with a lead, median, working min",
    "open_findings_total": "Open findings",
    "day": "Day",
}
REPORT_TOTAL = "Total"
REPORT_SHEETS = {"managers": "Managers", "per_day": "Per day"}

# The morning digest (app/digest): the preview page, Telegram, the CRM task.
DIGEST = {
    "title": "Morning digest — “{account}”, {day}",
    "quoted": "“{name}”",
    "fact": "Fact for {day}",
    "manager": "Manager",
    "calls": "Calls",
    "successful_calls": "Successful (≥ 40 s)",
    "cards_changed": "Cards changed",
    "won": "Won",
    "lost": "Lost",
    "findings_opened": "Findings opened",
    "findings_resolved": "Findings resolved",
    "today": "Today's plan",
    "tasks_due": "Tasks due today",
    "meetings": "Meetings",
    "payments": "Expected payments",
    "pace": "Pace against the plan for {month}",
    "pace_line": "{name}: {milestone} {fact} of {target} (expected {expected})",
    "behind": "behind by {percent} %",
    "on_track": "on track",
    "no_plan": "No plan for the month.",
    "critical": "The oldest critical findings",
    "no_critical": "No open critical findings.",
    "since": "since {at}",
    "nothing": "No data.",
    "resent": "♻️ Sent again: the previous attempt may have arrived — if so, this digest is a copy of it.",
    "total": "Total",
    "milestones": {
        "revenue": "revenue",
        "won_deals": "won deals",
        "first_contact": "first contacts",
        "meeting_held": "meetings",
        "proposal_sent": "proposals",
    },
}

# What the plan_behind_pace rule names a figure of the plan.
PACE_FIGURES = {
    "revenue": "revenue",
    "won_deals": "deals won",
    "first_contact": "first contacts",
    "meeting_held": "meetings",
    "proposal_sent": "proposals",
}
