"""The SLA report: `GET /v1/reports/sla` (`reports`) and the pages a walk of it is reading
(`pages`)."""
