"""crmwatch: keeps a sales team's CRM honest."""
