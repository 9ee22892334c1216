"""The console: server-rendered pages for approvers, operators, auditors and admins under /console.

Sign-in (`sign_in/`), runs, steps and the inbox (`runs/`), the auditor's pages (`audit/`), the
admin pages (`admin/`); what every page shares at the top: rendering (`pages`), forms (`forms`),
problems as pages (`errors`), times (`time_text`) and the wiring (`routes`).
"""
