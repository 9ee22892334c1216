"""Console pages for auditors: events, custody and verification (`pages`), the SLA report
(`sla`) and its chart (`sla_chart`)."""
